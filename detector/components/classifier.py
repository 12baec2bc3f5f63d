"""The generator-specific classifier, served from its JSON spec with numpy (no pickle on the serving path).

The spec is written by detector/fitting/classifier.py: scaler statistics, logistic coefficients or gradient-boosted
trees, the calibration map and the threshold.
"""

from __future__ import annotations

import numpy as np

CLASSIFIER_FORMAT = "resynth-classifier-json"


class JsonClassifier:
    """numpy evaluation of an exported classifier (the serving path)."""

    def __init__(self, spec: dict):
        if spec.get("format") != CLASSIFIER_FORMAT:
            raise ValueError(f"not a {CLASSIFIER_FORMAT} spec")
        self.spec = spec
        self.feature_names: list[str] = list(spec["feature_names"])
        self.threshold: float = float(spec["threshold"])
        self.mean = np.asarray(spec["scaler"]["mean"], dtype=np.float64)
        self.scale = np.asarray(spec["scaler"]["scale"], dtype=np.float64)
        m = spec["model"]
        self.kind = m["kind"]
        if self.kind == "logistic":
            self.coef, self.intercept = np.asarray(m["coef"], dtype=np.float64), float(m["intercept"])
        else:
            self.baseline = float(m["baseline"])
            self.trees = [{k: np.asarray(v) for k, v in t.items()} for t in m["trees"]]

    def decision(self, X: np.ndarray) -> np.ndarray:
        X = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        if self.kind == "logistic":
            return X @ self.coef + self.intercept
        out = np.full(len(X), self.baseline)
        for t in self.trees:
            node = np.zeros(len(X), dtype=np.int64)
            active = ~t["leaf"][node]
            while active.any():
                idx = np.nonzero(active)[0]
                nd = node[idx]
                x = X[idx, t["feature"][nd]]
                go_left = np.where(np.isnan(x), t["missing_left"][nd], x <= t["threshold"][nd])
                node[idx] = np.where(go_left, t["left"][nd], t["right"][nd])
                active = ~t["leaf"][node]
            out += t["value"][node]
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(fake) [N], calibrated."""
        d = self.decision(X)
        cal = self.spec["calibrator"]
        if cal["method"] == "sigmoid":
            return 1.0 / (1.0 + np.exp(np.clip(cal["a"] * d + cal["b"], -500, 500)))
        return np.clip(np.interp(d, cal["x"], cal["y"]), 0.0, 1.0)
