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
            self._pack_trees()

    def _pack_trees(self) -> None:
        """Every tree's nodes in one table (children as absolute node indices), so that all trees are walked
        together, one level a step: a few numpy calls per level, not per tree and level (a request's one row went
        from ~12 ms to well under 1)."""
        sizes = [len(t["leaf"]) for t in self.trees]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        cat = lambda key: np.concatenate([t[key] for t in self.trees]) if self.trees else np.zeros(0)  # noqa: E731
        self._roots = offsets                                                   # [T] each tree's root
        self._leaf = cat("leaf").astype(bool)
        self._feature = np.clip(cat("feature").astype(np.int64), 0, max(len(self.mean) - 1, 0))  # leaves: unused
        self._threshold = cat("threshold").astype(np.float64)
        self._missing_left = cat("missing_left").astype(bool)
        shift = np.repeat(offsets, sizes)
        self._left = np.where(self._leaf, 0, cat("left").astype(np.int64)) + shift
        self._right = np.where(self._leaf, 0, cat("right").astype(np.int64)) + shift
        self._value = cat("value").astype(np.float64)

    def decision(self, X: np.ndarray) -> np.ndarray:
        X = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        if self.kind == "logistic":
            return X @ self.coef + self.intercept
        T = len(self._roots)
        node = np.tile(self._roots, len(X))         # [N * T] the node each (row, tree) is at, row-major
        row = np.repeat(np.arange(len(X)), T)       # [N * T] its row
        todo = np.flatnonzero(~self._leaf[node])    # the (row, tree) pairs not at a leaf yet
        for _ in range(len(self._leaf) + 1):        # a tree is never deeper than its node count
            if not todo.size:
                break
            nd = node[todo]
            x = X[row[todo], self._feature[nd]]
            go_left = np.where(np.isnan(x), self._missing_left[nd], x <= self._threshold[nd])
            nxt = np.where(go_left, self._left[nd], self._right[nd])
            node[todo] = nxt
            todo = todo[~self._leaf[nxt]]
        else:
            raise ValueError("the classifier's trees have a cycle")
        node = node.reshape(len(X), T)
        return self.baseline + self._value[node].sum(axis=1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(fake) [N], calibrated."""
        d = self.decision(X)
        cal = self.spec["calibrator"]
        if cal["method"] == "sigmoid":
            return 1.0 / (1.0 + np.exp(np.clip(cal["a"] * d + cal["b"], -500, 500)))
        return np.clip(np.interp(d, cal["x"], cal["y"]), 0.0, 1.0)
