from benchmarks.common import write_section


def test_write_section_replaces_only_its_block(tmp_path):
    md = tmp_path / "R.md"
    md.write_text("# Results\n\nintro\n")
    write_section("a", "first", md)
    write_section("b", "other", md)
    write_section("a", "second\nline", md)
    text = md.read_text()
    assert text.count("<!-- a:begin -->") == 1 and "second\nline" in text and "first" not in text
    assert "other" in text and text.startswith("# Results\n\nintro")
