"""The detector file format: versions are checked on load, contents are declared, older files are refused with
a message that says to refit."""

import json

import pytest

from detector import spec as spec_file
from detector.runtime import Detector, DetectorError
from gan_inversion.defaults import DEFAULT_DETECTOR


def _embedded() -> dict:
    return json.loads(DEFAULT_DETECTOR.read_text())


def test_an_older_version_is_refused_with_a_refit_message(tmp_path):
    spec = _embedded()
    spec["format_version"] = 1
    path = tmp_path / "old.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(DetectorError, match="format version 1.*reads version 2.*refit it"):
        Detector.load(path)


def test_a_newer_or_unknown_version_and_other_files_are_refused(tmp_path):
    for version in (3, "2", None):
        spec = _embedded()
        spec["format_version"] = version
        with pytest.raises(DetectorError, match="version"):
            spec_file.validate(spec)
    with pytest.raises(DetectorError, match="not a resynth detector file"):
        spec_file.validate({"format": "something-else"})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DetectorError, match="not a readable detector file"):
        spec_file.read_spec(tmp_path / "bad.json")


def test_contents_must_be_declared():
    spec = _embedded()
    assert spec["contents"] == ["evidence", "artifacts", "cascade", "latent_map", "operating"]
    undeclared = dict(spec, contents=["evidence", "artifacts"])
    with pytest.raises(DetectorError, match="declares contents"):
        spec_file.validate(undeclared)
    missing = {k: v for k, v in spec.items() if k != "data_plan"}
    with pytest.raises(DetectorError, match="lacks data_plan"):
        spec_file.validate(missing)
    with pytest.raises(DetectorError, match="unknown detector kind"):
        spec_file.validate(dict(spec, kind="ensemble"))


def test_write_declares_contents_and_round_trips(tmp_path):
    spec = _embedded()
    del spec["latent_map"]
    out = spec_file.write_spec(tmp_path / "d.json", spec)
    assert out["contents"] == ["evidence", "artifacts", "cascade", "operating"]
    assert spec_file.read_spec(tmp_path / "d.json") == out
