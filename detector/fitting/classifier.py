"""Fitting the generator-specific classifier with scikit-learn, exported to the JSON that serving reads.

A scaled logistic regression and a scaled gradient-boosted model are compared by stratified cross-validation (ROC
AUC) on the fit part; the better is refitted, its probabilities calibrated on the held-out part (sigmoid or
isotonic) and its threshold set on the held-out photos at the target false-positive rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ..components.classifier import CLASSIFIER_FORMAT


@dataclass(frozen=True)
class ClassifierConfig:
    cv_folds: int = 5
    calibration: str = "sigmoid"        # 'sigmoid' or 'isotonic'
    calibration_fraction: float = 0.3   # held out from fitting, for calibration and the threshold
    target_fpr: float = 0.01            # false-positive rate on held-out reals at the threshold
    seed: int = 0


def candidates(seed: int) -> dict[str, Pipeline]:
    return {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000)),
        "gbdt": make_pipeline(StandardScaler(), HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0, random_state=seed)),
    }


def threshold_at_fpr(p_real: np.ndarray, target_fpr: float) -> float:
    """Smallest threshold t with mean(p_real > t) <= target_fpr (verdict 'fake' when p > t)."""
    s = np.sort(np.asarray(p_real, dtype=np.float64))
    k = int(np.floor(target_fpr * len(s)))  # reals allowed above the threshold
    return float(s[len(s) - 1 - k]) if len(s) else 0.5


def _export_tree(pred) -> dict:
    n = pred.nodes
    return {"feature": n["feature_idx"].tolist(), "threshold": n["num_threshold"].tolist(),
            "missing_left": n["missing_go_to_left"].astype(bool).tolist(), "left": n["left"].tolist(),
            "right": n["right"].tolist(), "leaf": n["is_leaf"].astype(bool).tolist(), "value": n["value"].tolist()}


def export_pipeline(pipe: Pipeline) -> dict:
    scaler, model = pipe.named_steps["standardscaler"], pipe.steps[-1][1]
    out = {"scaler": {"mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist()}}
    if isinstance(model, LogisticRegression):
        out["model"] = {"kind": "logistic", "coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0])}
    elif isinstance(model, HistGradientBoostingClassifier):
        if getattr(model, "is_categorical_", None) is not None and np.any(model.is_categorical_):
            raise ValueError("categorical features cannot be exported")
        out["model"] = {"kind": "gbdt", "baseline": float(np.ravel(model._baseline_prediction)[0]),
                        "trees": [_export_tree(it[0]) for it in model._predictors]}
    else:
        raise TypeError(f"cannot export {type(model).__name__}")
    return out


def export_calibrator(cal: CalibratedClassifierCV) -> dict:
    if len(cal.calibrated_classifiers_) != 1:
        raise ValueError("expected one calibrator for a frozen estimator")
    c = cal.calibrated_classifiers_[0].calibrators[0]
    if cal.method == "sigmoid":
        return {"method": "sigmoid", "a": float(c.a_), "b": float(c.b_)}
    return {"method": "isotonic", "x": c.X_thresholds_.tolist(), "y": c.y_thresholds_.tolist()}


def split_indices(y: np.ndarray, cfg: ClassifierConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the fit and calibration parts (stratified, seeded): the split `fit_classifier` uses."""
    idx = np.arange(len(y))
    fit_idx, cal_idx = train_test_split(idx, test_size=cfg.calibration_fraction, stratify=y, random_state=cfg.seed)
    return fit_idx, cal_idx


def fit_classifier(X: np.ndarray, y: np.ndarray, feature_names: list[str], *,
                   cfg: ClassifierConfig = ClassifierConfig()) -> tuple[dict, CalibratedClassifierCV]:
    """Fit, compare, calibrate and threshold. Returns (JSON spec, the sklearn calibrated model)."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64)
    if X.shape[1] != len(feature_names):
        raise ValueError(f"{X.shape[1]} feature columns but {len(feature_names)} names")
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or infinity")
    fit_idx, cal_idx = split_indices(y, cfg)
    X_fit, X_cal, y_fit, y_cal = X[fit_idx], X[cal_idx], y[fit_idx], y[cal_idx]
    cv = StratifiedKFold(n_splits=cfg.cv_folds, shuffle=True, random_state=cfg.seed)
    scores = {name: cross_val_score(pipe, X_fit, y_fit, cv=cv, scoring="roc_auc")
              for name, pipe in candidates(cfg.seed).items()}
    cv_report = {name: {"auc_mean": float(s.mean()), "auc_std": float(s.std())} for name, s in scores.items()}
    best = max(scores, key=lambda n: (round(float(scores[n].mean()), 4), n == "logistic"))
    model = candidates(cfg.seed)[best].fit(X_fit, y_fit)
    cal = CalibratedClassifierCV(FrozenEstimator(model), method=cfg.calibration).fit(X_cal, y_cal)
    p_cal = cal.predict_proba(X_cal)[:, 1]
    threshold = threshold_at_fpr(p_cal[y_cal == 0], cfg.target_fpr)
    spec = {
        "format": CLASSIFIER_FORMAT,
        "feature_names": list(feature_names),
        **export_pipeline(model),
        "calibrator": export_calibrator(cal),
        "threshold": threshold,
        "target_fpr": cfg.target_fpr,
        "config": asdict(cfg),
        "selection": {"chosen": best, "cv": cv_report},
        "sizes": {"fit": {"real": int((y_fit == 0).sum()), "fake": int((y_fit == 1).sum())},
                  "calibration": {"real": int((y_cal == 0).sum()), "fake": int((y_cal == 1).sum())}},
        "calibration_split": {"auc": float(roc_auc_score(y_cal, p_cal)),
                              "fpr_at_threshold": float((p_cal[y_cal == 0] > threshold).mean()),
                              "tpr_at_threshold": float((p_cal[y_cal == 1] > threshold).mean())},
    }
    return spec, cal
