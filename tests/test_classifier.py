import json

import numpy as np
import pytest

from detector.components.classifier import JsonClassifier
from detector.fitting.classifier import ClassifierConfig, fit_classifier, threshold_at_fpr


def _data(n=400, f=6, seed=0, nonlinear=False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, f))
    y = (rng.random(n) < 0.5).astype(int)
    if nonlinear:
        X[y == 1, 0] = rng.choice([-3, 3], size=(y == 1).sum()) + rng.normal(scale=0.3, size=(y == 1).sum())
    else:
        X[:, 0] += 1.5 * y
    return X, y


@pytest.mark.parametrize("nonlinear,calibration", [(False, "sigmoid"), (True, "isotonic")])
def test_fit_export_round_trip(nonlinear, calibration, tmp_path):
    X, y = _data(nonlinear=nonlinear)
    names = [f"f{i}" for i in range(X.shape[1])]
    spec, sk = fit_classifier(X, y, names, cfg=ClassifierConfig(calibration=calibration))
    assert spec["selection"]["chosen"] == ("gbdt" if nonlinear else "logistic")
    path = tmp_path / "clf.json"
    path.write_text(json.dumps(spec))
    clf = JsonClassifier(json.loads(path.read_text()))
    Xt, _ = _data(n=200, seed=1, nonlinear=nonlinear)
    Xt[0, 1] = np.nan if nonlinear else Xt[0, 1]  # trees route missing values like sklearn does
    assert np.allclose(clf.predict_proba(Xt), sk.predict_proba(Xt)[:, 1], atol=1e-9)
    # a row alone (a request) gets what it gets in a batch (all trees are walked together, row by row)
    assert np.allclose([clf.decision(Xt[i:i + 1])[0] for i in range(10)], clf.decision(Xt)[:10], atol=1e-12)
    assert clf.feature_names == names and 0 <= clf.threshold <= 1
    assert spec["calibration_split"]["fpr_at_threshold"] <= 0.01 + 1e-9
    assert spec["calibration_split"]["auc"] > 0.8


def test_threshold_at_fpr():
    p = np.linspace(0, 1, 101)
    t = threshold_at_fpr(p, 0.1)
    assert (p > t).mean() <= 0.1 and (p >= t).mean() > 0.1


def test_bad_features_rejected():
    X, y = _data()
    X[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        fit_classifier(X, y, [f"f{i}" for i in range(6)])
    with pytest.raises(ValueError, match="names"):
        fit_classifier(_data()[0], y, ["a"])
    with pytest.raises(ValueError, match="not a"):
        JsonClassifier({"format": "pickle"})
