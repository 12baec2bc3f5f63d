import json

import numpy as np
import pytest
from PIL import Image

from detector.cli import main
from detector.metrics import expected_calibration_error, metrics_with_ci, plot_frontier, point_metrics, tpr_at_fpr


def test_point_metrics_perfect_and_random():
    y = np.array([0] * 50 + [1] * 50)
    perfect = point_metrics(y, np.r_[np.zeros(50), np.ones(50)], 0.5, probabilities=True)
    assert perfect["auc"] == 1 and perfect["eer"] == 0 and perfect["tpr_at_1pct_fpr"] == 1
    assert perfect["accuracy"] == 1 and perfect["ece"] == 0
    rng = np.random.default_rng(0)
    rand = point_metrics(y, rng.random(100))
    assert 0.3 < rand["auc"] < 0.7 and 0.3 < rand["eer"] < 0.7


def test_tpr_at_fpr_does_not_exceed_target():
    y = np.array([0, 0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.95])
    assert tpr_at_fpr(y, s, 0.0) == 0.5 and tpr_at_fpr(y, s, 0.25) == 1.0


def test_ece_and_ci():
    y = np.array([0, 1] * 100)
    assert expected_calibration_error(y, np.full(200, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(200, 0.9)) == pytest.approx(0.4)
    s = np.r_[np.random.default_rng(1).normal(0, 1, 100), np.random.default_rng(2).normal(1, 1, 100)]
    yy = np.r_[np.zeros(100), np.ones(100)].astype(int)
    m = metrics_with_ci(yy, s, n_boot=50)
    assert m["auc_ci"][0] <= m["auc"] <= m["auc_ci"][1] and m["n_real"] == 100


def test_plot_frontier_writes_a_png(tmp_path):
    rows = [{"setting": "encoder only", "ms_per_image": 2.0, "auc_perceptual": 0.7},
            {"setting": "hybrid K=5", "ms_per_image": 40.0, "auc_perceptual": 0.8},
            {"setting": "hybrid K=25", "ms_per_image": 180.0, "auc_perceptual": 0.9},
            {"setting": "optimisation N=100", "ms_per_image": 900.0, "auc_perceptual": 0.85}]
    path = plot_frontier(rows, tmp_path / "f.png")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (600, 400)


def test_cli_roc_on_folders(tiny_detector, tmp_path, capsys):
    folder, det = tiny_detector
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for sub, n in (("0_real", 6), ("1_fake", 5)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / sub / f"{i}.png")
    (root / "1_fake" / "broken.png").write_bytes(b"nope")
    out = tmp_path / "out"
    assert main(["roc", str(root), "--out", str(out), "--detector", str(folder / "det.json"), "--device", "cpu"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["n_real"] == 6 and result["metrics"]["n_fake"] == 5
    assert len(result["skipped"]) == 1 and "auc_ci" in result["metrics"]
    assert Image.open(out / "roc.png").format == "PNG" and "| auc |" in (out / "table.md").read_text()
    op = result["operating_point"]
    for folder in ("real", "fake"):  # every decodable image gets one of the three verdicts
        assert sum(op[folder].values()) == pytest.approx(1.0)
        assert all(0 <= v <= 1 for v in op[folder].values())
    assert op["delivered_fpr"] == op["real"]["fake"] and op["target_fpr"] == det.info["target_fpr"]
    table = (out / "table.md").read_text()
    assert table.index("answered fake") < table.index("| auc |")  # the verdicts lead
    assert f"{op['real']['fake']:.1%}" in table and "TPR at 1% FPR" in table
    assert main(["roc", "--real", str(root / "0_real"), "--out", str(out)]) == 2
    assert "give --real DIR and --fake DIR" in capsys.readouterr().err
