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


def test_compare_scores_a_detector_on_the_suite_rows(tiny_detector, tmp_path):
    """benchmarks/compare.py: the suite's rows for a detector file, unseen generators only where the suite
    measures them, the same numbers through the feature cache or without it, and a column per detector."""
    import torch

    from benchmarks.compare import compare, render
    from gan_inversion.metrics import generate

    _, det = tiny_detector
    g = torch.Generator().manual_seed(5)
    reals = torch.rand(12, 1, 16, 16, generator=g) * 2 - 1
    fakes = {"stylegan2 psi=1.0": generate(det.G, 12, seed=9), "dcgan": torch.rand(12, 1, 16, 16, generator=g) * 2 - 1}
    conditions = {"clean": None, "jpeg95": ("jpeg", 95)}
    res = compare([det], reals, fakes, conditions=conditions, cache_dir=tmp_path / "cache")
    a = res["detectors"][det.model_id]
    assert sorted(a["rows"]) == ["clean | dcgan", "clean | stylegan2 psi=1.0", "jpeg95 | stylegan2 psi=1.0"]
    assert sorted(a["fpr"]) == ["clean", "jpeg95"] and all(0 <= v <= 1 for v in a["fpr"].values())
    for r in a["rows"].values():
        assert 0 <= r["auc"] <= 1 and 0 <= r["caught"] <= 1 and r["artifact_auc"] is not None
    assert compare([det], reals, fakes, conditions=conditions)["detectors"][det.model_id] == a
    assert any((tmp_path / "cache").iterdir())
    table = render(res)
    assert "| jpeg95 | stylegan2 psi=1.0 |" in table and "| jpeg95 | dcgan |" not in table
    assert table.count(det.model_id) == 2                  # its column and its false-positive line


def test_probe_rows_fit_one_probe_per_variant_and_report_only_its_generators():
    """benchmarks/probe_fakes.py: a probe that saw bright fakes ranks bright test fakes above dark photos; a
    leave-one-out row reports only its left-out generator; too few photos to fit against is refused."""
    import pytest
    import torch

    from benchmarks.probe_fakes import probe_rows
    from gan_inversion.perceptual import build_perceptual

    g = torch.Generator().manual_seed(0)
    dark = lambda n: (torch.rand(n, 1, 16, 16, generator=g) * 0.4 - 1).mul(127.5).round().div(127.5)  # noqa: E731
    bright = lambda n: (torch.rand(n, 1, 16, 16, generator=g) * 0.4 + 0.5).mul(127.5).round().div(127.5)  # noqa: E731
    fit = {"own": bright(30), "other": bright(30)}
    variants = {"own only": (["own"], ["own", "other"]), "+ other": (["own", "other"], ["other"])}
    backbone = build_perceptual("mobilenet_v2-random", input_size=32)
    rows = probe_rows(fit, dark(60), dark(20), {"own": bright(20), "other": bright(20)}, variants,
                      backbone=backbone, progress=False)
    assert [r["fitted_with"] for r in rows] == ["own only", "+ other"]
    conds = ("clean", "resize0.5", "blur1")
    assert sorted(rows[0]["auc"]) == sorted(f"{c} {n}" for c in conds for n in ("own", "other"))
    assert sorted(rows[1]["auc"]) == ["blur1 other", "clean other", "resize0.5 other"]
    assert rows[0]["auc"]["clean own"] > 0.9
    with pytest.raises(ValueError, match="60 fakes but only 40 photos"):
        probe_rows(fit, dark(40), dark(5), {"other": bright(5)}, {"+ other": (["own", "other"], ["other"])},
                   backbone=backbone, progress=False)
