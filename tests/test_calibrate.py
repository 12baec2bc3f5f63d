"""`resynth calibrate`: the operating point from the user's own reference photos, in a new detector file."""

import json

import numpy as np
import pytest
from PIL import Image

from detector.cli import main
from detector.components.operating import DOUBTS
from detector.fitting.calibrate import CalibrationError, calibrate, min_reference_photos
from detector.runtime import Detector


def _photos(folder, n, seed=0):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_calibrate_cli_writes_a_working_detector_elsewhere(tiny_detector, tmp_path, capsys):
    folder, det = tiny_detector
    ref = _photos(tmp_path / "mine", 100)
    out = tmp_path / "elsewhere" / "calibrated.json"
    assert main(["calibrate", "--real", str(ref), "--fpr", "0.05", "--out", str(out), "--cache", "",
                 "--detector", str(folder / "det.json"), "--device", "cpu"]) == 0
    new = Detector.load(out)  # its bundle, encoder and artifact CNN found from the new place, fingerprints checked
    spec = json.loads(out.read_text())
    cal, op = spec["calibration"], spec["operating"]
    assert cal["n_photos"] == 100 and cal["reference"] == "mine" and cal["target_fpr"] == 0.05
    assert new.model_id != det.model_id and new.model_id.startswith(det.model_id + "-cal")
    assert "operating" in spec["contents"] and new.operating is not None
    # every photo presented in every laundering condition; each condition's share flagged near the target
    assert op["photos"]["presentations"] == 100 * len(op["photos"]["conditions"])
    for name, sh in op["on_photos"].items():
        assert sh["fake"] + sh["uncertain"] + sh["real"] == pytest.approx(1.0), name
    fake = np.mean([sh["fake"] for sh in op["on_photos"].values()])
    assert fake <= 0.05 + 1e-9
    # The same probabilities; the verdicts follow the operating point, each at its cell's (or stratum's) threshold.
    imgs = sorted(ref.glob("*.png"))
    results = new.score_batch(imgs)
    p_new = np.array([r.p_fake for r in results])
    p_old = np.array([r.p_fake for r in det.score_batch(imgs)])
    np.testing.assert_allclose(p_new, p_old, atol=1e-9)
    thresholds = {v["threshold"] for v in op["per_stratum"].values()}
    assert cal["cell_thresholds"] == op["cells"]["thresholds"]  # the presentation cells', recorded too
    thresholds |= set(op["cells"]["thresholds"].values())
    for r in results:
        assert r.threshold in thresholds
        assert r.verdict == ("fake" if r.p_fake > r.threshold else "uncertain" if r.doubts else "real")
        assert not r.doubts or set(r.doubts) <= set(DOUBTS.values())
    flagged = float(np.mean([r.verdict == "fake" for r in results]))
    assert flagged == pytest.approx(op["on_photos"]["clean"]["fake"], abs=0.02)  # batched as the command did
    assert new.info["calibration"]["n_photos"] == 100 and new.info["operating"]["uncertain_rate"] == 0.10


def test_too_few_photos_is_refused(tiny_detector, tmp_path, capsys):
    folder, _ = tiny_detector
    ref = _photos(tmp_path / "few", 20)
    rc = main(["calibrate", "--real", str(ref), "--fpr", "0.01", "--out", str(tmp_path / "c.json"),
               "--detector", str(folder / "det.json"), "--device", "cpu"])
    assert rc == 2 and "at least 500 are needed" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
    assert min_reference_photos(0.05) == 100 and min_reference_photos(0.001) == 5000
    with pytest.raises(CalibrationError, match="--fpr"):
        calibrate(folder / "det.json", np.zeros(1000), fpr=0.7, out_path=tmp_path / "x.json", source="x")
    assert main(["calibrate", "--real", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c.json"),
                 "--detector", str(folder / "det.json")]) == 2
