"""`resynth build` (detector/fitting/build.py): the plan before anything runs, refusals that name the slice, the
whole path from a bundle and a folder of photos to a detector that serves, and a rerun that redoes only what is
missing."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from detector.cli import main
from detector.fitting.build import BuildConfig, build_plan
from detector.fitting.config import DetectorConfig, FitConfig
from detector.runtime import Detector
from gan_inversion.checkpoints import save_bundle

from .conftest import TINY_FRAMING, make_D, make_G


def test_the_plan_counts_each_slice_and_names_what_is_missing():
    plan = build_plan(BuildConfig(), n_train=6000, n_test=700)
    rows = {r["slice"]: r for r in plan["slices"]}
    assert rows["fit"]["status"] == "ok" and rows["fit"]["positions"] == [0, 1500]
    assert rows["operating"]["status"] == "missing" and rows["reference"]["status"].startswith("short")
    assert any("'operating' slice" in m and "1000 photos" in m and "holds 6000" in m for m in plan["missing"])
    enough = build_plan(BuildConfig(), n_train=plan["train_photos_needed"], n_test=700)
    assert enough["missing"] == [] and all(r["status"] == "ok" for r in enough["slices"])
    # a folder's compact plan: the build needs the fit's, the cascade's, the map's and the operating photos only
    compact = BuildConfig(detector=DetectorConfig(fit=dataclasses.replace(DetectorConfig().fit, compact_plan=True)))
    folder = build_plan(compact, n_train=3400, n_test=300)
    assert folder["missing"] == [] and folder["train_photos_needed"] == 3400
    assert {r["slice"]: r["status"] for r in folder["slices"]}["reference"].startswith("short")
    small = BuildConfig(detector=DetectorConfig(fit=FitConfig(n_real=100, n_operating=0)), cascade=None)
    assert build_plan(small, n_train=150, n_test=10)["missing"] == [
        "the held-out test split holds 10 photos: at least 20 are needed to evaluate"]


def _folder(root, n, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir()
    for i in range(n):  # photos of the bundle's native size (12x12), centred on its 16x16 canvas as uploads are
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8), "L").save(root / f"p{i:03d}.png")
    return root


TINY = ["--encoder-steps", "2", "--encoder-batch", "4", "--perceptual", "mobilenet_v2-random@32", "--n-real", "48",
        "--n-fake", "48", "--batch", "24", "--refine-steps", "1", "--no-artifact-cnn", "--no-aux-generator",
        "--no-real-model", "--latent-map", "0", "--n-operating", "0", "--no-cascade", "--n-eval", "12",
        "--device", "cpu"]


@pytest.mark.slow
def test_a_build_from_a_folder_serves_and_resumes(tmp_path, capsys):
    bundle = tmp_path / "g.pt"
    save_bundle(bundle, G_ema=make_G(), D=make_D(), data={"name": "toy", "framing": TINY_FRAMING})
    photos = _folder(tmp_path / "photos", 200)
    out = tmp_path / "build"
    args = ["build", "--bundle", str(bundle), "--real", str(photos), "--test-fraction", "0.2", "--out", str(out),
            *TINY]
    assert main([*args, "--plan"]) == 0
    printed = capsys.readouterr().out
    assert "the build can run" in printed and "ms an inversion" in printed and not out.exists()
    assert main(args) == 0
    done = json.loads(capsys.readouterr().out)
    det = Detector.load(done["detector"])
    assert det.score_batch([next(photos.iterdir())])[0].verdict in ("fake", "real", "uncertain")
    record = json.loads((out / "build.json").read_text())
    assert list(record["stages"]) == ["encoder", "fit", "cascade", "evaluation", "report"]
    assert record["inputs"]["train"]["folder"] == "photos" and det.spec["metrics"]["real_data"] == "photos-test"
    report = (out / "REPORT.md").read_text()
    assert "fake / uncertain / real" in report and f"RESYNTH_DETECTOR={out / 'detector.json'}" in report
    # a rerun redoes nothing but the report; a detector file changed behind the build's back is fitted again
    assert main(args) == 0
    log = capsys.readouterr().err
    assert all(f"[{s}] done before: skipped" in log for s in ("encoder", "fit", "cascade", "evaluation"))
    spec = json.loads((out / "detector.json").read_text())
    spec["metrics"] = {}
    (out / "detector.json").write_text(json.dumps(spec))
    assert main(args) == 0
    log = capsys.readouterr().err
    assert "[encoder] done before: skipped" in log and "[fit] running" in log and "[evaluation] running" in log
    # the same folder with other settings is refused, naming the build file
    assert main([*args[:-2], "--n-eval", "10", "--device", "cpu"]) == 2
    assert "made from other inputs or settings (build.json; changed: the settings)" in capsys.readouterr().err


def test_a_folder_too_small_for_the_plan_is_refused_before_anything_runs(tmp_path, capsys):
    bundle = tmp_path / "g.pt"
    save_bundle(bundle, G_ema=make_G(), D=make_D(), data={"name": "toy", "framing": TINY_FRAMING})
    photos = _folder(tmp_path / "photos", 60)
    out = tmp_path / "build"
    tiny = list(TINY)
    tiny[tiny.index("--n-real") + 1] = "500"
    args = ["build", "--bundle", str(bundle), "--real", str(photos), "--out", str(out), *tiny]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the 'fit' slice" in err and "needs 500 photos" in err and not out.exists()
