"""Fitting the evidences' models and their combination (detector/components/evidence.py serves them).

The photo model is a whitened PCA and a Gaussian mixture on photos' appearance features; the probe a
standardised logistic regression whose strength is chosen by cross-validation. `fit_evidence` measures each
evidence's tail reference on the reference photos (per stratum), the Fisher statistic's own reference, the sigmoid
on the calibration images, and the threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..components.evidence import (
    DEGRADED_STRATUM,
    EVIDENCE_FORMAT,
    MIN_STRATUM,
    EvidenceModel,
    fisher_statistic,
    stratum_masks,
)
from .classifier import threshold_at_fpr


@dataclass(frozen=True)
class RealModelConfig:
    n_components: int = 64      # whitened PCA dimensions the mixture models
    mixture: int = 8            # Gaussian mixture components (full covariance)
    reg_covar: float = 1e-3     # added to each component's covariance diagonal
    tail_fraction: float = 0.1  # the top share of reference scores the exponential tail is fitted to
    seed: int = 0


# --------------------------------------------------------------------------- one-class model of photos
def fit_real_model(X_real: np.ndarray, *, cfg: RealModelConfig = RealModelConfig(), backbone: str) -> dict:
    """Fit PCA + Gaussian mixture on appearance features of real photos only; returns its JSON spec."""
    X_real = np.asarray(X_real, dtype=np.float64)
    n = len(X_real)
    if n < 20:
        raise ValueError(f"too few photos ({n}) to fit the real-photo model (at least 20)")
    # few photos: fewer dimensions (at least 4 photos each) and components (at least 2 photos per dimension)
    k = max(1, min(cfg.n_components, X_real.shape[1], n // 4))
    m = max(1, min(cfg.mixture, n // (2 * k)))
    pca = PCA(n_components=k, whiten=True, random_state=cfg.seed).fit(X_real)
    gm = GaussianMixture(m, covariance_type="full", reg_covar=cfg.reg_covar,
                         random_state=cfg.seed).fit(pca.transform(X_real))
    return {"backbone": backbone, "config": asdict(cfg), "n_photos": int(n), "n_components": k, "mixture": m,
            "pca": {"mean": pca.mean_.tolist(), "components": pca.components_.tolist(),
                    "variance": pca.explained_variance_.tolist()},
            "gmm": {"weights": gm.weights_.tolist(), "means": gm.means_.tolist(),
                    "precisions_cholesky": gm.precisions_cholesky_.tolist()}}


# --------------------------------------------------------------------------- linear probe
def cv_logistic(X: np.ndarray, y: np.ndarray, *, seed: int = 0):
    """Standardised logistic regression, its C chosen among 1e-4..1e2 by 5-fold CV AUC (refit on all)."""
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return GridSearchCV(pipe, {"logisticregression__C": np.logspace(-4, 2, 7)}, cv=folds, scoring="roc_auc").fit(X, y)


def fit_probe(A: np.ndarray, y: np.ndarray, *, backbone: str, seed: int = 0) -> dict:
    """The linear probe's JSON spec: logistic regression on appearance features [N, F], y 1 = fake."""
    y = np.asarray(y, dtype=np.int64)
    if min((y == 0).sum(), (y == 1).sum()) < 10:
        raise ValueError("too few images to fit the linear probe (at least 10 photos and 10 fakes)")
    gs = cv_logistic(np.asarray(A, dtype=np.float64), y, seed=seed)
    scaler, lr = gs.best_estimator_.named_steps["standardscaler"], gs.best_estimator_.named_steps["logisticregression"]
    return {"backbone": backbone, "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
            "coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0]),
            "C": float(gs.best_params_["logisticregression__C"]), "cv_auc": float(gs.best_score_),
            "n": {"real": int((y == 0).sum()), "fake": int((y == 1).sum())}}


# --------------------------------------------------------------------------- tail probabilities
def tail_reference(scores: np.ndarray, *, tail_fraction: float = 0.1, levels: int = 201) -> dict:
    """The reference distribution of a score on photos (higher = more suspicious), for `tail_probability`."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if len(s) < 10:
        raise ValueError(f"too few reference photos ({len(s)}) for tail probabilities (at least 10)")
    qs = np.linspace(0.0, 1.0, levels)
    values = np.quantile(s, qs)
    u = float(np.quantile(s, 1.0 - tail_fraction))
    beta = float(max(np.mean(s[s > u] - u) if (s > u).any() else 0.0, 1e-6 * max(1.0, abs(u))))
    return {"levels": qs.tolist(), "values": values.tolist(), "tail_start": u, "tail_fraction": tail_fraction,
            "tail_scale": beta, "n": int(len(s))}


# --------------------------------------------------------------------------- fitting and serving
def fit_evidence(*, ref: dict[str, np.ndarray], cal: dict[str, np.ndarray], y_cal: np.ndarray, real_model: dict,
                 target_fpr: float, probe: dict | None = None, ref_degradation: np.ndarray | None = None,
                 cal_degradation: np.ndarray | None = None,
                 tail_fraction: float = 0.1, artifacts: dict | None = None) -> dict:
    """The combination's JSON spec.

    ref / cal: each evidence's score ("generator": classifier decisions, "photos": real-model NLL, "probe": the
    probe's logit when `probe` is given, "artifacts": the artifact CNN's logit when `artifacts`, its file entry,
    is given) of reference photos (held out from every fit) and of calibration images
    with y_cal (0 photo, 1 fake), for the sigmoid and the threshold. *_degradation: the estimated (blur sigma,
    scale) of each [N, 2], for the strata (None: one stratum).
    The threshold is the calibration photos' at the target false-positive rate; with Fisher's rule, at least
    where an image is more extreme than all but that share of the reference photos of its stratum.
    """
    names = (["generator", "photos"] + (["probe"] if probe is not None else [])
             + (["artifacts"] if artifacts is not None else []))
    n_ref = len(ref["generator"])
    layout = dict(DEGRADED_STRATUM) if ref_degradation is not None else None
    if min(m.sum() for m in stratum_masks(ref_degradation, n_ref, layout).values()) < MIN_STRATUM:
        layout = None
    strata = stratum_masks(ref_degradation, n_ref, layout)
    refs = {k: {e: tail_reference(np.asarray(ref[e])[m], tail_fraction=tail_fraction) for e in names}
            for k, m in strata.items()}
    spec = {"format": EVIDENCE_FORMAT, "evidences": names, "real_model": real_model,
            **({"probe": probe} if probe is not None else {}),
            **({"artifacts": artifacts} if artifacts is not None else {}), "reference": refs,
            **({"strata": layout} if layout is not None else {}),
            "sigmoid": {"a": 1.0, "b": 0.0}, "threshold": 0.5, "target_fpr": target_fpr}
    # the second-level reference: Fisher's statistic of the same photos, per stratum
    spec["combine"] = {"rule": "fisher", "reference": {}}
    q_ref = EvidenceModel(spec).tail_probabilities(ref, ref_degradation)
    f_ref = fisher_statistic(*q_ref.values())
    spec["combine"]["reference"] = {k: tail_reference(f_ref[m], tail_fraction=tail_fraction) for k, m in strata.items()}
    ev = EvidenceModel(spec)
    c = ev.statistic(ev.tail_probabilities(cal, cal_degradation), cal_degradation)
    y_cal = np.asarray(y_cal, dtype=np.int64)
    lr = LogisticRegression(C=1e4, max_iter=1000, class_weight="balanced").fit(c[:, None], y_cal)
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if a <= 0:
        raise ValueError("the combined evidence does not separate the calibration images (slope <= 0)")
    spec["sigmoid"] = {"a": a, "b": b}
    ev = EvidenceModel(spec)
    p = ev.probability(c)
    spec["threshold_calibration"] = threshold_at_fpr(p[y_cal == 0], target_fpr)
    spec["threshold_reference"] = float(ev.probability(-np.log(target_fpr)))  # q_F = target_fpr
    spec["threshold"] = max(spec["threshold_calibration"], spec["threshold_reference"])
    spec["sizes"] = {"reference": {k: int(m.sum()) for k, m in strata.items()},
                     "calibration": {"real": int((y_cal == 0).sum()), "fake": int((y_cal == 1).sum())}}
    return spec
