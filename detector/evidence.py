"""Two kinds of evidence combined into one calibrated fake-probability, with the reasons that drove it.

1. *Reproduced like this generator's samples*: the generator-specific classifier over the inversion features
   (detector/classifier.py). It recognises the registered generator's images, clean or laundered.
2. *Unlike real photos*: a one-class model fitted on real photos only (the train split, clean and laundered):
   how unlikely an image's appearance is under the photos' distribution. Appearance = the perceptual network's
   pretrained features (MobileNetV2 ImageNet, average-pooled at each stage), reduced by a whitened PCA and
   modelled by a Gaussian mixture. It raises suspicion for images of generators nobody registered (a VAE's
   smooth outputs, another GAN's textures) that the inversion alone would let pass as real.

Each score is turned into a tail probability under *reference photos* (held out from both fits): q = the share
of photos at least as extreme (empirical in the body, an exponential tail fitted to the top 10% beyond it, so
that scores past every reference photo still rank). The combined statistic is c = -log min(q_generator,
q_photos): an image is as suspicious as its most surprising evidence. A sigmoid of c, fitted on held-out photos
and the registered generator's samples, is the calibrated `p_fake`; the threshold is set on held-out photos at
the target false-positive rate, and the reasons name every evidence whose q is below the threshold's.

Serving evaluates the stored JSON with numpy (no pickle, no scikit-learn objects on the serving path).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.special import logsumexp

EVIDENCE_FORMAT = "resynth-evidence-json"
REASON_GENERATOR = "reproduced like this generator's samples"
REASON_PHOTOS = "unlike real photos"


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


def combined_statistic(q_generator: np.ndarray, q_photos: np.ndarray) -> np.ndarray:
    return -np.log(np.minimum(q_generator, q_photos))


# --------------------------------------------------------------------------- fitting and serving
def fit_evidence(*, decision_ref: np.ndarray, photo_ref: np.ndarray, decision_cal: np.ndarray,
                 photo_cal: np.ndarray, y_cal: np.ndarray, real_model: dict, target_fpr: float,
                 tail_fraction: float = 0.1) -> dict:
    """The combination's JSON spec.

    decision_ref / photo_ref: classifier decisions and real-model scores of reference photos (held out from
    both fits); *_cal with y_cal (0 photo, 1 fake): held-out images for the sigmoid and the threshold.
    """
    from sklearn.linear_model import LogisticRegression

    from .classifier import threshold_at_fpr

    refs = {"generator": tail_reference(decision_ref, tail_fraction=tail_fraction),
            "photos": tail_reference(photo_ref, tail_fraction=tail_fraction)}
    c = combined_statistic(tail_probability(refs["generator"], decision_cal),
                           tail_probability(refs["photos"], photo_cal))
    y_cal = np.asarray(y_cal, dtype=np.int64)
    lr = LogisticRegression(C=1e4, max_iter=1000).fit(c[:, None], y_cal)
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if a <= 0:
        raise ValueError("the combined evidence does not separate the calibration images (slope <= 0)")
    spec = {"format": EVIDENCE_FORMAT, "real_model": real_model, "reference": refs, "sigmoid": {"a": a, "b": b},
            "threshold": 0.5, "target_fpr": target_fpr}
    ev = EvidenceModel(spec)
    p = ev.probability(c)
    spec["threshold"] = threshold_at_fpr(p[y_cal == 0], target_fpr)
    spec["sizes"] = {"reference": int(len(decision_ref)), "calibration": {"real": int((y_cal == 0).sum()),
                                                                         "fake": int((y_cal == 1).sum())}}
    return spec


@dataclass
class Evidence:
    p_fake: np.ndarray       # [N] calibrated
    q_generator: np.ndarray  # [N] share of reference photos the classifier finds at least as generator-like
    q_photos: np.ndarray     # [N] share of reference photos at least as unlike photos
    photo_score: np.ndarray | None = None  # [N] the real-photo model's NLL (higher: less like photos)

    def reasons(self, i: int, q_star: float) -> list[str]:
        out = []
        if self.q_generator[i] <= q_star:
            out.append(REASON_GENERATOR)
        if self.q_photos[i] <= q_star:
            out.append(REASON_PHOTOS)
        return out


class EvidenceModel:
    """Serving side of `fit_evidence`: classifier decisions and appearance features -> Evidence."""

    def __init__(self, spec: dict):
        if spec.get("format") != EVIDENCE_FORMAT:
            raise ValueError(f"not a {EVIDENCE_FORMAT} spec")
        self.spec = spec
        self.real_model = RealPhotoModel(spec["real_model"])
        self.refs = spec["reference"]
        self.a, self.b = float(spec["sigmoid"]["a"]), float(spec["sigmoid"]["b"])
        self.threshold = float(spec["threshold"])

    def probability(self, c: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.a * np.asarray(c) + self.b, -500, 500)))

    def q_at_threshold(self, threshold: float | None = None) -> float:
        """The tail probability an evidence must reach (at most) to drive a verdict over the threshold."""
        t = min(max(self.threshold if threshold is None else threshold, 1e-12), 1 - 1e-12)
        c_star = (np.log(t / (1 - t)) - self.b) / self.a
        return float(np.exp(-max(c_star, 0.0)))

    def evaluate(self, decision: np.ndarray, appearance: np.ndarray) -> Evidence:
        qg = tail_probability(self.refs["generator"], decision)
        nll = self.real_model.score(appearance)
        qp = tail_probability(self.refs["photos"], nll)
        return Evidence(p_fake=self.probability(combined_statistic(qg, qp)), q_generator=qg, q_photos=qp,
                        photo_score=nll)
