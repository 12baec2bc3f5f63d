"""The operating point: when an image's evidence becomes 'fake', 'uncertain' or 'real' (serving side).

Both rules are measured on photos alone, photos that took no part in fitting (the data plan's `operating` slice,
or a user's own photos with `resynth calibrate`), each presented as a user's file in every laundering condition:

- `fake`: p_fake above the threshold of the image's degradation stratum, the share `target_fpr` of those photos
  scoring above it (per stratum, so that a blurred or shrunk photo is held to the rate a sharp one is);
- `real`: every check below lies within the range of the photos: the share of photos that fail at least one
  check without being `fake` is `uncertain_rate`, fixed before anything is measured;
- `uncertain`: neither; its doubts name the checks the image failed.

A check is a score, higher when less like a photo, with its own tail reference on photos of the stratum (as the
evidences' are, detector/components/evidence.py): the evidences themselves (the generator classifier, the photo
model, the probe, the artifact CNN, and their combination p_fake), and three consistency checks of what the
inversion found: a reconstruction farther than photos' (`unexplained`: perceptual, `unexplained_pixels`), an input
sharper than photos of its estimated degradation (`sharpness`: a sharp input "explained" as blurred or shrunk),
and a latent code farther from the average code than photos' (`latent`). An image fails a check when its tail
probability lies below the level that `uncertain_rate` sets (one level for every check: the largest
-log q over the checks, M, is compared with its photos' quantile M*). detector/fitting/operating.py fits it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .evidence import Evidence, stratum_masks, tail_probability

OPERATING_FORMAT = "resynth-operating-point"
# check -> the doubt an image that fails it is given
DOUBTS = {
    "generator": "reproduced more like this generator's samples than photos are",
    "photos": "less like real photos than photos are",
    "probe": "more generated-looking to a pretrained network than photos are",
    "artifacts": "more pixel traces like this generator's than photos have",
    "combined": "the combined evidence is stronger than for photos, though below the fake threshold",
    "unexplained": "the generator reconstructs it worse than it reconstructs photos (perceptual distance)",
    "unexplained_pixels": "the generator reconstructs it worse than it reconstructs photos (pixels)",
    "sharpness": "sharper than photos of its estimated degradation (a sharp input explained as degraded)",
    "latent": "its latent code lies farther from the average code than photos' codes",
}
# consistency checks read from the inversion's feature rows: check -> feature name
FEATURE_CHECKS = {"unexplained": "perc_total", "unexplained_pixels": "pix_mse", "latent": "w_dist_avg"}


def _laplacian(x: torch.Tensor) -> torch.Tensor:
    """|discrete Laplacian| of images [N, C, H, W] (float, CPU), same shape."""
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3).repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1]).abs()


def sharpness(images: torch.Tensor) -> np.ndarray:
    """[N] mean absolute discrete Laplacian of images [N, C, H, W] in [-1, 1] (higher: sharper or noisier)."""
    return _laplacian(images.detach().float().cpu()).mean(dim=(1, 2, 3)).double().numpy()


# What the presentation statistics measure, in the order `presentation_stats` returns them.
PRESENTATION_STATS = ("black", "near_black", "sharpness", "dark_detail", "blockiness")


def _blockiness(d: torch.Tensor) -> torch.Tensor:
    """[N] how much the differences d [N, C, H, W-1] between neighbouring columns peak on one phase of an 8-pixel
    grid (JPEG's block edges) above their mean over the eight phases."""
    col = d.mean(dim=(1, 2))                                      # [N, W-1]
    phases = torch.stack([col[:, p::8].mean(dim=1) for p in range(min(8, col.shape[1]))], dim=1)
    return phases.max(dim=1).values - phases.mean(dim=1)


def presentation_stats(images: torch.Tensor) -> np.ndarray:
    """[N, 5] what a laundering leaves on images [N, C, H, W] in [-1, 1], whatever their content (PRESENTATION_STATS):
    the share of exactly black pixels (noise and codecs' ringing lift them), of near-black ones (1-12 of 255),
    the sharpness, the detail left in dark regions (noise's floor) and JPEG's 8-pixel blockiness (both axes)."""
    x = images.detach().float().cpu()
    u = ((x + 1) * 127.5).round()                                 # 8-bit levels
    lap = _laplacian(x)
    dark = (F.max_pool2d(u, 3, stride=1, padding=1) <= 24).float()  # a pixel whose 3x3 neighbourhood is dark
    dark_detail = (lap * dark).sum(dim=(1, 2, 3)) / dark.sum(dim=(1, 2, 3)).clamp(min=1)
    block = _blockiness((x[..., :, 1:] - x[..., :, :-1]).abs()) + _blockiness(
        (x[..., 1:, :] - x[..., :-1, :]).abs().transpose(2, 3))
    out = torch.stack([(u <= 0).float().mean(dim=(1, 2, 3)), ((u > 0) & (u <= 12)).float().mean(dim=(1, 2, 3)),
                       lap.mean(dim=(1, 2, 3)), dark_detail, block], dim=1)
    return out.double().numpy()


class PresentationCells:
    """Which laundering an image most looks like, from its presentation statistics and estimated degradation: a
    multinomial logistic model fitted on photos presented in every condition (detector/fitting/operating.py).
    Each cell (a predicted condition) has its own fake threshold, so that the photos of every laundering, not only
    their mixture within a degradation stratum, are held to the target rate."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.labels = list(spec["labels"])                        # [K] the conditions, as cells
        self.mean, self.std = np.asarray(spec["mean"]), np.asarray(spec["std"])  # [F] standardisation
        self.coef, self.intercept = np.asarray(spec["coef"]), np.asarray(spec["intercept"])  # [K, F], [K]
        self.thresholds = dict(spec["thresholds"])               # cell -> threshold (cells too small: absent)
        self.fallback = float(spec["fallback_threshold"])         # the threshold of cells without their own

    @staticmethod
    def inputs(stats: np.ndarray, degradation: np.ndarray | None) -> np.ndarray:
        """[N, F] the model's inputs: the presentation statistics and the estimated degradation (blur, scale)."""
        stats = np.asarray(stats, dtype=np.float64)
        deg = np.c_[np.zeros(len(stats)), np.ones(len(stats))] if degradation is None else degradation
        return np.c_[stats, np.asarray(deg, dtype=np.float64)]

    def assign(self, stats: np.ndarray, degradation: np.ndarray | None) -> list[str]:
        z = (self.inputs(stats, degradation) - self.mean) / self.std
        return [self.labels[k] for k in np.argmax(z @ self.coef.T + self.intercept, axis=1)]

    def threshold_of(self, cells: list[str]) -> np.ndarray:
        return np.array([self.thresholds.get(c, self.fallback) for c in cells], dtype=np.float64)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def check_scores(ev: Evidence, X: np.ndarray, names: list[str], images: torch.Tensor | None) -> dict[str, np.ndarray]:
    """Every check's score [N] (higher: less like a photo) that these inputs allow: the evidences' raw scores,
    their combination (the logit of p_fake), the feature checks present in `names` and the input's sharpness
    (when `images` are given)."""
    out = {e: np.asarray(s, dtype=np.float64) for e, s in ev.scores.items()}
    out["combined"] = logit(ev.p_fake)
    X = np.asarray(X, dtype=np.float64)
    for check, feature in FEATURE_CHECKS.items():
        if feature in names:
            out[check] = X[:, names.index(feature)]
    if images is not None:
        out["sharpness"] = sharpness(images)
    return out


@dataclass
class Judgement:
    """What the operating point says of a batch."""

    fake: np.ndarray              # [N] p_fake over the image's threshold
    threshold: np.ndarray         # [N] the threshold of the image's stratum
    doubts: list[list[str]]       # per image, the checks it failed (DOUBTS' sentences); empty: consistent with
                                  # photos on every check
    stratum: list[str]            # per image, its degradation stratum


class OperatingPoint:
    """Serving side of `fit_operating_point` (detector/fitting/operating.py)."""

    def __init__(self, spec: dict):
        if spec.get("format") != OPERATING_FORMAT:
            raise ValueError(f"not a {OPERATING_FORMAT} spec")
        self.spec = spec
        self.cells = PresentationCells(spec["cells"]) if spec.get("cells") else None  # None: strata's thresholds
        self.strata = spec.get("strata")  # bounds as the evidence's (None: one stratum, "all")
        self.target_fpr = float(spec["target_fpr"])
        self.uncertain_rate = float(spec["uncertain_rate"])
        self.checks = list(spec["checks"])
        self.per_stratum = spec["per_stratum"]  # {stratum: {"threshold", "m_star", "reference": {check: tail}}}

    @property
    def headline_threshold(self) -> float:
        """The threshold of the undegraded stratum ('sharp', or 'all'), for summaries."""
        return float(self.per_stratum["sharp" if "sharp" in self.per_stratum else "all"]["threshold"])

    def masks(self, degradation: np.ndarray | None, n: int) -> dict[str, np.ndarray]:
        return stratum_masks(degradation, n, self.strata)

    def thresholds(self, degradation: np.ndarray | None, n: int, stats: np.ndarray | None = None) -> np.ndarray:
        """[N] each image's fake threshold: its presentation cell's, when the operating point has cells and the
        images' presentation statistics [N, 5] are given, else its degradation stratum's."""
        if self.cells is not None and stats is not None:
            return self.cells.threshold_of(self.cells.assign(stats, degradation))
        t = np.zeros(n)
        for k, m in self.masks(degradation, n).items():
            t[m] = self.per_stratum[k]["threshold"]
        return t

    def surprise(self, scores: dict[str, np.ndarray], degradation: np.ndarray | None) -> dict[str, np.ndarray]:
        """Per check, -log of its tail probability under the photos of the image's stratum [N]."""
        n = len(next(iter(scores.values())))
        missing = [c for c in self.checks if c not in scores]
        if missing:
            raise ValueError(f"the operating point weighs checks that were not scored: {', '.join(missing)}")
        out = {c: np.zeros(n) for c in self.checks}
        for k, m in self.masks(degradation, n).items():
            ref = self.per_stratum[k]["reference"]
            for c in self.checks:
                out[c][m] = -np.log(tail_probability(ref[c], np.asarray(scores[c])[m]))
        for c in self.checks:  # NaN: a check this image's stage did not weigh (a cascade's first stage) is no doubt
            out[c] = np.nan_to_num(out[c], nan=0.0)
        return out

    def judge(self, p_fake: np.ndarray, scores: dict[str, np.ndarray], degradation: np.ndarray | None,
              stats: np.ndarray | None = None) -> Judgement:
        """Thresholds (by presentation cell with `stats`, else by stratum) and doubts of these images."""
        p = np.asarray(p_fake, dtype=np.float64)
        n = len(p)
        if self.cells is not None and stats is None:
            raise ValueError("this operating point sets its thresholds by presentation cell: pass the images' "
                             "presentation_stats")
        t = self.thresholds(degradation, n, stats)
        s = self.surprise(scores, degradation)
        m_star, stratum = np.zeros(n), np.empty(n, dtype=object)
        for k, m in self.masks(degradation, n).items():
            m_star[m], stratum[m] = self.per_stratum[k]["m_star"], k
        doubts = [[DOUBTS[c] for c in self.checks if s[c][i] > m_star[i]] for i in range(n)]
        return Judgement(fake=p > t, threshold=t, doubts=doubts, stratum=list(stratum))
