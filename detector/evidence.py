"""Four kinds of evidence combined into one calibrated fake-probability, with the reasons that drove it.

1. *Reproduced like this generator's samples* (`generator`): the generator-specific classifier over the inversion
   features (detector/classifier.py). It recognises the registered generator's images, clean or laundered.
2. *Unlike real photos* (`photos`): a one-class model fitted on real photos only (the train split, clean and
   laundered): how unlikely an image's appearance is under the photos' distribution. Appearance = the perceptual
   network's pretrained features (MobileNetV2 ImageNet, average-pooled at each stage), reduced by a whitened PCA
   and modelled by a Gaussian mixture. It raises suspicion for images that look unlike any photo (a VAE's smooth
   outputs).
3. *Generated-looking to a pretrained network* (`probe`): a linear probe on the same frozen appearance features,
   fitted on the classifier's own fitting images (photos against the registered generator's samples, laundered),
   in the spirit of universal detectors (Ojha et al. 2023): what separates one generator's images from photos
   in pretrained features carries over to other generators better than the inversion does.
4. *Pixel traces like this generator's* (`artifacts`): a small CNN on the pixels, trained on the classifier's own
   fit part with blur, JPEG, resize and noise augmentation (detector/artifacts.py). It keeps what survives a
   laundering that blurs the inversion's view (a down-up resize, a blur). Detectors fitted before it weigh three.

Each score is turned into a tail probability under *reference photos* (held out from every fit; by default 1,000
train-split photos no fit uses, detector/fit.py): q = the share of photos at least as extreme (empirical in the
body, an exponential tail fitted to the top 10% beyond it, so that scores past every reference photo still
rank). The reference photos come with a laundered copy of each
(JPEG, blur, resize, noise; detector/laundering.py REFERENCE_RANGES) and are split in two strata by the
degradation the inversion estimated (degradation-aware detectors): an image the search finds strongly blurred or
shrunk is compared with photos found so too, not with sharp ones, which keeps the false-positive rate of
laundered photos near that of clean ones.

Combining (`combine`): Fisher's statistic F = -sum_k log q_k, an image is as suspicious as all its evidence
together. The evidences are correlated, so F is no chi-square; it gets its own tail probability under the
reference photos of the image's stratum, q_F, and c = -log q_F. (Files written before use c = -log min_k q_k.)
A sigmoid of c, fitted (classes weighted equally) on held-out photos and the registered generator's samples, is
the calibrated `p_fake`. The threshold is set at the target false-positive rate twice, and the higher one kept:
on the held-out photos, and on the reference photos (q_F = the target; each stratum's own rate). The reasons
name every evidence that carries at least its equal share of the statistic the threshold needs: -log q_k >= F*/K
(F*: the stratum's F at the threshold, K evidences), so an image over the threshold always has a reason.

Serving evaluates the stored JSON with numpy (no pickle, no scikit-learn objects on the serving path).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy.special import logsumexp

EVIDENCE_FORMAT = "resynth-evidence-json"
REASON_GENERATOR = "reproduced like this generator's samples"
REASON_PHOTOS = "unlike real photos"
REASON_PROBE = "generated-looking to a pretrained network"
REASON_ARTIFACTS = "pixel traces like this generator's"
REASONS = {"generator": REASON_GENERATOR, "photos": REASON_PHOTOS, "probe": REASON_PROBE,
           "artifacts": REASON_ARTIFACTS}
# An image whose estimated degradation is at least this strong is compared with reference photos estimated so too.
DEGRADED_STRATUM = {"blur_sigma_min": 1.0, "scale_max": 0.5}
MIN_STRATUM = 30  # reference photos a stratum needs (otherwise every image is compared with all of them)


@dataclass(frozen=True)
class RealModelConfig:
    n_components: int = 64      # whitened PCA dimensions the mixture models
    mixture: int = 8            # Gaussian mixture components (full covariance)
    reg_covar: float = 1e-3     # added to each component's covariance diagonal
    tail_fraction: float = 0.1  # the top share of reference scores the exponential tail is fitted to
    seed: int = 0


@torch.no_grad()
def appearance_features(perceptual, images: torch.Tensor, *, batch: int = 200) -> np.ndarray:
    """images [N, C, H, W] in [-1, 1] -> [N, sum of stage channels] (float64): stage-wise mean activations."""
    out = []
    for i in range(0, len(images), batch):
        stages = perceptual.stage_features(perceptual._prepare(images[i:i + batch]))
        out.append(torch.cat([f.mean(dim=(2, 3)) for f in stages], dim=1).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


# --------------------------------------------------------------------------- one-class model of photos
def fit_real_model(X_real: np.ndarray, *, cfg: RealModelConfig = RealModelConfig(), backbone: str) -> dict:
    """Fit PCA + Gaussian mixture on appearance features of real photos only; returns its JSON spec."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

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


class RealPhotoModel:
    """Negative log-likelihood of appearance features under the photos' mixture (higher: less like a photo)."""

    def __init__(self, spec: dict):
        p, g = spec["pca"], spec["gmm"]
        self.mean = np.asarray(p["mean"], dtype=np.float64)
        self.components = np.asarray(p["components"], dtype=np.float64)       # [k, F]
        self.scale = np.sqrt(np.asarray(p["variance"], dtype=np.float64))     # [k]
        self.log_weights = np.log(np.asarray(g["weights"], dtype=np.float64))  # [M]
        self.means = np.asarray(g["means"], dtype=np.float64)                  # [M, k]
        self.prec_chol = np.asarray(g["precisions_cholesky"], dtype=np.float64)  # [M, k, k]
        k = self.means.shape[1]
        self.log_norm = (-0.5 * k * np.log(2 * np.pi)
                         + np.log(np.diagonal(self.prec_chol, axis1=1, axis2=2)).sum(axis=1))  # [M]

    def score(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean) @ self.components.T / self.scale  # [N, k]
        y = np.einsum("nk,mkj->nmj", Z, self.prec_chol) - np.einsum("mk,mkj->mj", self.means, self.prec_chol)
        log_p = self.log_norm - 0.5 * np.square(y).sum(axis=2) + self.log_weights  # [N, M]
        return -logsumexp(log_p, axis=1)


# --------------------------------------------------------------------------- linear probe
def cv_logistic(X: np.ndarray, y: np.ndarray, *, seed: int = 0):
    """Standardised logistic regression, its C chosen among 1e-4..1e2 by 5-fold CV AUC (refit on all)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

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


class ProbeModel:
    """The probe's logit (higher: more generated-looking)."""

    def __init__(self, spec: dict):
        self.mean, self.scale = np.asarray(spec["mean"]), np.asarray(spec["scale"])
        self.coef, self.intercept = np.asarray(spec["coef"]), float(spec["intercept"])

    def score(self, A: np.ndarray) -> np.ndarray:
        return ((np.asarray(A, dtype=np.float64) - self.mean) / self.scale) @ self.coef + self.intercept


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


def tail_probability(ref: dict, v: np.ndarray) -> np.ndarray:
    """Share of reference photos scoring at least v: empirical below the tail start, exponential beyond it."""
    v = np.asarray(v, dtype=np.float64)
    values, levels = np.asarray(ref["values"]), np.asarray(ref["levels"])
    _, first = np.unique(values, return_index=True)  # np.interp needs increasing x
    body = 1.0 - np.interp(v, values[first], levels[first])
    u, frac, beta = ref["tail_start"], ref["tail_fraction"], ref["tail_scale"]
    tail = frac * np.exp(-np.maximum(v - u, 0.0) / beta)
    return np.clip(np.where(v > u, tail, np.maximum(body, frac)), 1e-300, 1.0)


def tail_quantile(ref: dict, q: float) -> float:
    """The score whose tail probability is q (the inverse of `tail_probability`)."""
    u, frac, beta = ref["tail_start"], ref["tail_fraction"], ref["tail_scale"]
    if q < frac:
        return float(u + beta * np.log(frac / max(q, 1e-300)))
    return float(np.interp(1.0 - q, ref["levels"], ref["values"]))


def combined_statistic(*q: np.ndarray) -> np.ndarray:
    """c = -log min_k q_k over the evidences' tail probabilities (the rule of files without "combine")."""
    return -np.log(np.minimum.reduce(q))


def fisher_statistic(*q: np.ndarray) -> np.ndarray:
    """F = -sum_k log q_k over the evidences' tail probabilities."""
    return -np.sum(np.log(np.stack(q)), axis=0)


def stratum_masks(degradation: np.ndarray | None, n: int, strata: dict | None) -> dict[str, np.ndarray]:
    """The strata's row masks: {"sharp", "degraded"} with `strata` (the bounds), else {"all"}. Degraded: the
    estimated degradation [N, 2] (blur sigma, scale; None: undegraded) has blur sigma at least "blur_sigma_min"
    or scale at most "scale_max"."""
    if strata is None:
        return {"all": np.ones(n, dtype=bool)}
    deg = np.zeros(n, dtype=bool)
    if degradation is not None:
        d = np.asarray(degradation, dtype=np.float64)
        deg = (d[:, 0] >= strata["blur_sigma_min"] - 1e-6) | (d[:, 1] <= strata["scale_max"] + 1e-6)
    return {"sharp": ~deg, "degraded": deg}


# --------------------------------------------------------------------------- fitting and serving
def fit_evidence(*, ref: dict[str, np.ndarray], cal: dict[str, np.ndarray], y_cal: np.ndarray, real_model: dict,
                 target_fpr: float, probe: dict | None = None, ref_degradation: np.ndarray | None = None,
                 cal_degradation: np.ndarray | None = None, combine: str = "fisher",
                 tail_fraction: float = 0.1, artifacts: dict | None = None) -> dict:
    """The combination's JSON spec.

    ref / cal: each evidence's score ("generator": classifier decisions, "photos": real-model NLL, "probe": the
    probe's logit when `probe` is given, "artifacts": the artifact CNN's logit when `artifacts`, its file entry,
    is given) of reference photos (held out from every fit) and of calibration images
    with y_cal (0 photo, 1 fake), for the sigmoid and the threshold. *_degradation: the estimated (blur sigma,
    scale) of each [N, 2], for the strata (None: one stratum). combine: "fisher" or "min" (module docstring).
    The threshold is the calibration photos' at the target false-positive rate; with Fisher's rule, at least
    where an image is more extreme than all but that share of the reference photos of its stratum.
    """
    from sklearn.linear_model import LogisticRegression

    from .classifier import threshold_at_fpr

    if combine not in ("fisher", "min"):
        raise ValueError(f"unknown combining rule {combine!r} (fisher or min)")
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
    if combine == "fisher":  # the second-level reference: Fisher's statistic of the same photos, per stratum
        q_ref = EvidenceModel(spec).tail_probabilities(ref, ref_degradation)
        f_ref = fisher_statistic(*q_ref.values())
        spec["combine"] = {"rule": "fisher", "reference": {
            k: tail_reference(f_ref[m], tail_fraction=tail_fraction) for k, m in strata.items()}}
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
    spec["threshold"] = spec["threshold_calibration"]
    if combine == "fisher":  # q_F = target_fpr: c = -log target_fpr
        spec["threshold_reference"] = float(ev.probability(-np.log(target_fpr)))
        spec["threshold"] = max(spec["threshold"], spec["threshold_reference"])
    spec["sizes"] = {"reference": {k: int(m.sum()) for k, m in strata.items()},
                     "calibration": {"real": int((y_cal == 0).sum()), "fake": int((y_cal == 1).sum())}}
    return spec


@dataclass
class Evidence:
    p_fake: np.ndarray                # [N] calibrated
    q: dict[str, np.ndarray]          # per evidence [N]: share of reference photos at least as extreme (NaN:
                                      # not weighed for that image)
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # per evidence [N]: its raw score (higher:
                                                                  # more suspicious)
    q_reason: np.ndarray | None = None  # [N] an evidence with q at or below it is named among the reasons (0:
                                        # none, an image below the threshold)

    @property
    def photo_score(self) -> np.ndarray | None:
        """[N] the real-photo model's NLL (higher: less like photos), when there is one."""
        return self.scores.get("photos")

    def update(self, rows: np.ndarray, other: Evidence) -> None:
        """Rows `rows` take `other`'s rows, in order, with every evidence `other` weighed (a cascade's refined
        images; an evidence only one stage weighs is NaN for the other stage's images)."""
        n = len(self.p_fake)
        self.p_fake[rows] = other.p_fake
        for own, new in ((self.q, other.q), (self.scores, other.scores)):
            for e, v in new.items():
                own.setdefault(e, np.full(n, np.nan))[rows] = v
        if other.q_reason is not None:
            if self.q_reason is None:
                self.q_reason = np.zeros(n)
            self.q_reason[rows] = other.q_reason

    def reasons(self, i: int) -> list[str]:
        """The evidence that drove image i over its threshold (module docstring); none for an image below it."""
        if self.q_reason is None:
            return []
        return [REASONS[k] for k, q in self.q.items() if q[i] <= self.q_reason[i]]

    def tail_probabilities(self, i: int) -> dict[str, float]:
        """Image i's tail probabilities (an evidence its stage did not weigh, NaN, is left out)."""
        return {k: float(q[i]) for k, q in self.q.items() if not np.isnan(q[i])}


class EvidenceModel:
    """Serving side of `fit_evidence`: classifier decisions, appearance features and the estimated degradation
    -> Evidence. Files of the earlier formats (two evidences, one reference, no strata, the minimum rule) still
    load and score as they did."""

    def __init__(self, spec: dict):
        if spec.get("format") != EVIDENCE_FORMAT:
            raise ValueError(f"not a {EVIDENCE_FORMAT} spec")
        self.spec = spec
        self.names = spec.get("evidences", ["generator", "photos"])
        self.real_model = RealPhotoModel(spec["real_model"])
        self.probe = ProbeModel(spec["probe"]) if "probe" in spec else None
        refs = spec["reference"]
        self.refs = refs if "generator" not in refs else {"all": refs}  # {stratum: {evidence: tail reference}}
        self.strata = spec.get("strata")
        self.combine = spec.get("combine", {"rule": "min"})
        self.a, self.b = float(spec["sigmoid"]["a"]), float(spec["sigmoid"]["b"])
        self.threshold = float(spec["threshold"])

    def probability(self, c: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.a * np.asarray(c) + self.b, -500, 500)))

    def _c_at_threshold(self, threshold: float | None = None) -> float:
        t = min(max(self.threshold if threshold is None else threshold, 1e-12), 1 - 1e-12)
        return max((np.log(t / (1 - t)) - self.b) / self.a, 0.0)

    @property
    def artifacts(self) -> dict | None:
        """The artifact CNN's entry (its file and fingerprint, detector/artifacts.py), when it is an evidence."""
        return self.spec.get("artifacts") if "artifacts" in self.names else None

    def scores(self, decision: np.ndarray, appearance: np.ndarray, artifacts: np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
        out = {"generator": np.asarray(decision, dtype=np.float64), "photos": self.real_model.score(appearance)}
        if self.probe is not None:
            out["probe"] = self.probe.score(appearance)
        if "artifacts" in self.names:
            if artifacts is None:
                raise ValueError("this evidence weighs the artifact CNN: its logits are needed")
            out["artifacts"] = np.asarray(artifacts, dtype=np.float64)
        return out

    def tail_probabilities(self, scores: dict[str, np.ndarray], degradation: np.ndarray | None
                           ) -> dict[str, np.ndarray]:
        n = len(scores["generator"])
        q = {e: np.ones(n) for e in self.names}
        for k, m in stratum_masks(degradation, n, self.strata).items():
            for e in self.names:
                q[e][m] = tail_probability(self.refs[k][e], np.asarray(scores[e])[m])
        return q

    def statistic(self, q: dict[str, np.ndarray], degradation: np.ndarray | None) -> np.ndarray:
        """The combined statistic c [N] of the evidences' tail probabilities (module docstring)."""
        if self.combine["rule"] == "min":
            return combined_statistic(*q.values())
        f = fisher_statistic(*q.values())
        c = np.zeros(len(f))
        for k, m in stratum_masks(degradation, len(f), self.strata).items():
            c[m] = -np.log(tail_probability(self.combine["reference"][k], f[m]))
        return c

    def reason_levels(self, degradation: np.ndarray | None, n: int, threshold: float | None = None) -> np.ndarray:
        """[N] the tail probability at or below which an evidence is named among an image's reasons."""
        c_star = self._c_at_threshold(threshold)
        if self.combine["rule"] == "min":
            return np.full(n, np.exp(-c_star))
        out = np.ones(n)
        for k, m in stratum_masks(degradation, n, self.strata).items():
            f_star = tail_quantile(self.combine["reference"][k], float(np.exp(-c_star)))
            out[m] = np.exp(-f_star / len(self.names))
        return out

    def evaluate(self, decision: np.ndarray, appearance: np.ndarray, degradation: np.ndarray | None = None, *,
                 artifacts: np.ndarray | None = None, threshold: float | None = None) -> Evidence:
        """decision [N], appearance [N, F], degradation [N, 2] (estimated blur sigma, scale; None: undegraded),
        artifacts [N] (the artifact CNN's logits, when it is an evidence). Reasons at `threshold` (None: the
        fitted one)."""
        return self.from_scores(self.scores(decision, appearance, artifacts), degradation, threshold=threshold)

    def from_scores(self, scores: dict[str, np.ndarray], degradation: np.ndarray | None = None, *,
                    threshold: float | None = None) -> Evidence:
        """Evidence of the evidences' raw scores (`scores`)."""
        q = self.tail_probabilities(scores, degradation)
        p = self.probability(self.statistic(q, degradation))
        over = p > (self.threshold if threshold is None else threshold)  # an image below it has no reason
        return Evidence(p_fake=p, q=q, scores=scores,
                        q_reason=np.where(over, self.reason_levels(degradation, len(p), threshold), 0.0))
