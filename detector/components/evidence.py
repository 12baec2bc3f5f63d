"""The evidences combined into one calibrated fake-probability, with the reasons that drove it (serving side).

Each evidence is a score, higher when more suspicious: `generator` (the classifier over the inversion features),
`photos` (negative log-likelihood under a one-class model of photos' appearance), `probe` (a linear probe on the
same appearance features) and `artifacts` (the artifact CNN's logit). Each score becomes a tail probability q
under reference photos (the share at least as extreme: empirical in the body, an exponential tail beyond it).
The reference photos are split in strata by the degradation the inversion estimated, so that a strongly blurred or
shrunk image is compared with photos estimated so too. Fisher's statistic F = -sum_k log q_k gets its own tail
probability q_F under the reference photos of the image's stratum; c = -log q_F, and a sigmoid of c is `p_fake`.
An evidence is named among an image's reasons when it carries at least an equal share of the statistic the
threshold needs: -log q_k >= F*/K. docs/evidence.md explains the rules; detector/fitting/evidence.py fits them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from .classifier import JsonClassifier

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


class ProbeModel:
    """The probe's logit (higher: more generated-looking)."""

    def __init__(self, spec: dict):
        self.mean, self.scale = np.asarray(spec["mean"]), np.asarray(spec["scale"])
        self.coef, self.intercept = np.asarray(spec["coef"]), float(spec["intercept"])

    def score(self, A: np.ndarray) -> np.ndarray:
        return ((np.asarray(A, dtype=np.float64) - self.mean) / self.scale) @ self.coef + self.intercept


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
    """Serving side of `fit_evidence` (detector/fitting/evidence.py): classifier decisions, appearance features and
    the estimated degradation -> Evidence."""

    def __init__(self, spec: dict):
        if spec.get("format") != EVIDENCE_FORMAT:
            raise ValueError(f"not a {EVIDENCE_FORMAT} spec")
        self.spec = spec
        self.names = list(spec["evidences"])
        self.real_model = RealPhotoModel(spec["real_model"])
        self.probe = ProbeModel(spec["probe"]) if "probe" in self.names else None
        self.refs = spec["reference"]  # {stratum: {evidence: tail reference}}
        self.strata = spec.get("strata")  # the strata's bounds (None: one stratum, "all")
        self.combine = spec["combine"]  # Fisher's statistic's own reference, per stratum
        self.a, self.b = float(spec["sigmoid"]["a"]), float(spec["sigmoid"]["b"])
        self.threshold = float(spec["threshold"])

    def probability(self, c: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.a * np.asarray(c) + self.b, -500, 500)))

    def _c_at_threshold(self, threshold=None) -> np.ndarray:
        """The combined statistic at a threshold on p_fake (a number, or one per image)."""
        t = np.clip(np.asarray(self.threshold if threshold is None else threshold, dtype=np.float64), 1e-12, 1 - 1e-12)
        return np.maximum((np.log(t / (1 - t)) - self.b) / self.a, 0.0)

    @property
    def artifacts(self) -> dict | None:
        """The artifact CNN's entry (its file and fingerprint), when it is an evidence."""
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
        f = fisher_statistic(*q.values())
        c = np.zeros(len(f))
        for k, m in stratum_masks(degradation, len(f), self.strata).items():
            c[m] = -np.log(tail_probability(self.combine["reference"][k], f[m]))
        return c

    def reason_levels(self, degradation: np.ndarray | None, n: int, threshold=None) -> np.ndarray:
        """[N] the tail probability at or below which an evidence is named among an image's reasons (threshold: a
        number, or one per image; None: the fitted one)."""
        c_star = np.broadcast_to(self._c_at_threshold(threshold), (n,))
        out = np.ones(n)
        for k, m in stratum_masks(degradation, n, self.strata).items():
            ref = self.combine["reference"][k]
            f_star = np.array([tail_quantile(ref, float(np.exp(-c))) for c in c_star[m]])
            out[m] = np.exp(-f_star / len(self.names))
        return out

    def evaluate(self, decision: np.ndarray, appearance: np.ndarray, degradation: np.ndarray | None = None, *,
                 artifacts: np.ndarray | None = None, threshold=None) -> Evidence:
        """decision [N], appearance [N, F], degradation [N, 2] (estimated blur sigma, scale; None: undegraded),
        artifacts [N] (the artifact CNN's logits, when it is an evidence). Reasons at `threshold` (a number or one
        per image; None: the fitted one)."""
        return self.from_scores(self.scores(decision, appearance, artifacts), degradation, threshold=threshold)

    def from_scores(self, scores: dict[str, np.ndarray], degradation: np.ndarray | None = None, *,
                    threshold=None) -> Evidence:
        """Evidence of the evidences' raw scores (`scores`)."""
        q = self.tail_probabilities(scores, degradation)
        p = self.probability(self.statistic(q, degradation))
        over = p > (self.threshold if threshold is None else threshold)  # an image below it has no reason
        return Evidence(p_fake=p, q=q, scores=scores,
                        q_reason=np.where(over, self.reason_levels(degradation, len(p), threshold), 0.0))


def degradation_columns(X: np.ndarray, classifier: JsonClassifier) -> np.ndarray | None:
    """[N, 2] estimated (blur sigma, scale) of feature rows X, for the evidence's strata; None when the features
    have no degradation estimate (a detector fitted without the degradation search)."""
    names = classifier.feature_names
    if "deg_blur_sigma" not in names or "deg_scale" not in names:
        return None
    return np.asarray(X, dtype=np.float64)[:, [names.index("deg_blur_sigma"), names.index("deg_scale")]]
