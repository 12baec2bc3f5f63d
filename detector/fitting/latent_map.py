"""Fitting the 2D latent map (detector/components/latent_map.py) from refined codes of photos and samples."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from gan_inversion.encoder import Encoder
from gan_inversion.metrics import generate
from gan_inversion.networks import Discriminator, Generator
from gan_inversion.perceptual import PerceptualDistance

from .. import plan
from ..components.latent_map import LATENT_MAP_FORMAT, ws_code
from ..features import FeatureConfig, extract_features
from .images import quantize


def _axes(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, [2, D] unit axes: discriminant, then the first principal component orthogonal to it, its share of
    the variance) of codes X with labels y (0 photo, 1 sample)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    mean = X.mean(0)
    u = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(X, y).coef_[0]
    u /= np.linalg.norm(u) + 1e-12
    R = (X - mean) - np.outer((X - mean) @ u, u)  # the codes with the discriminant direction removed
    _, s, vt = np.linalg.svd(R, full_matrices=False)
    v = vt[0] * np.sign(vt[0][np.abs(vt[0]).argmax()])  # a fixed sign
    total = float(((X - mean) ** 2).sum())
    return mean, np.stack([u, v]), float(s[0] ** 2 / max(total, 1e-12))


def fit_latent_map(w_photos: np.ndarray, w_samples: np.ndarray, *, max_points: int = 300, seed: int = 0,
                   source: str = "") -> dict:
    """The 2D map of codes [N, w_dim]: photos' and samples' codes, the separating axis and the main one beside it,
    with up to `max_points` of each cloud projected and the separating axis's AUC on held-out halves."""
    from sklearn.metrics import roc_auc_score

    w_photos, w_samples = np.asarray(w_photos, np.float64), np.asarray(w_samples, np.float64)
    if len(w_photos) < 3 or len(w_samples) < 3:
        raise ValueError("the latent map needs at least 3 photos and 3 samples")
    X = np.concatenate([w_photos, w_samples])
    y = np.r_[np.zeros(len(w_photos)), np.ones(len(w_samples))]
    rng = np.random.default_rng(seed)
    half = rng.permutation(len(X)) % 2 == 0  # two folds: the held-out AUC of the separating axis
    aucs = []
    for a, b in ((half, ~half), (~half, half)):
        if len(set(y[a])) == 2 and len(set(y[b])) == 2:
            m, ax, _ = _axes(X[a], y[a])
            aucs.append(roc_auc_score(y[b], (X[b] - m) @ ax[0]))
    mean, comps, share = _axes(X, y)
    pick = lambda W: W[np.sort(rng.permutation(len(W))[:max_points])]  # noqa: E731
    proj = lambda W: ((W - mean) @ comps.T).round(4).tolist()  # noqa: E731
    return {"format": LATENT_MAP_FORMAT, "axes": ["photos -> samples (discriminant)", "main variation beside it"],
            "mean": mean.tolist(), "components": comps.tolist(),
            "held_out_auc": round(float(np.mean(aucs)), 4) if aucs else None,
            "vertical_variance_share": round(share, 4),
            "photos": proj(pick(w_photos)), "samples": proj(pick(w_samples)),
            "n": {"photos": len(w_photos), "samples": len(w_samples)}, "source": source}


def compute_latent_map(*, G: Generator, D: Discriminator, encoder: Encoder | None, perceptual: PerceptualDistance,
                       feature_cfg: FeatureConfig, photos: torch.Tensor, n: int = 300, batch: int = 50,
                       device="cpu", progress: bool = True) -> dict:
    """The 2D latent map from the refined codes of `photos` (the data plan's 'latent_map' photos) and of n fresh
    samples, inverted exactly as the features are."""
    samples = quantize(generate(G, n, seed=plan.seed("latent_map_fakes"), device=device))
    codes = []
    for imgs in (photos[:n], samples):
        part = []
        for i in tqdm(range(0, len(imgs), batch), disable=not progress, desc="latent map"):
            fb = extract_features(G, D, encoder, perceptual, imgs[i:i + batch].to(device), cfg=feature_cfg)
            part.append(ws_code(fb.ws))
        codes.append(np.concatenate(part))
    return fit_latent_map(codes[0], codes[1], source=f"{len(codes[0])} photos, {n} samples "
                          f"(seed {plan.seed('latent_map_fakes')}), refined as the features are")
