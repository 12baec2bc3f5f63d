"""The feature cache: feature rows on disk, keyed by the images' bytes and everything the features read.

The key's context (`feature_context`) covers the feature settings and the fingerprints of every network the
features read: the generator, the discriminator, the encoder and the perceptual network. Fitting and evaluation
share it, so an evaluation finds the fit's rows again and a refit that keeps the inversion reuses them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gan_inversion.data import to_uint8
from gan_inversion.encoder import weights_fingerprint
from gan_inversion.fileio import atomic_write

from .inversion import FeatureConfig, extract_features


class FeatureCache:
    """Feature batches on disk, keyed by a hash of the images' bytes and everything the features depend on."""

    def __init__(self, folder: str | Path, context: dict):
        self.folder = Path(folder)
        self.context = json.dumps(context, sort_keys=True)

    def key(self, images_u8: torch.Tensor) -> str:
        h = hashlib.sha256(self.context.encode())
        h.update(images_u8.contiguous().numpy().tobytes())
        return h.hexdigest()

    def get(self, key: str) -> tuple[np.ndarray, list[str]] | None:
        p = self.folder / f"{key}.npz"
        if not p.exists():
            return None
        with np.load(p, allow_pickle=False) as z:
            return z["values"], [str(n) for n in z["names"]]

    def put(self, key: str, values: np.ndarray, names: list[str]) -> None:
        atomic_write(self.folder / f"{key}.npz", lambda f: np.savez(f, values=values, names=np.asarray(names)))


def cached_rows(images: torch.Tensor, compute, *, batch: int, cache: FeatureCache | None, desc: str,
                progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """compute(x) -> (rows [n, F], names) over float images [N, C, H, W] (8-bit values), batch by batch,
    through the cache."""
    out, names = [], None
    for i in tqdm(range(0, len(images), batch), disable=not progress, desc=desc):
        x = images[i:i + batch]
        key = cache.key(to_uint8(x)) if cache else None
        hit = cache.get(key) if cache else None
        if hit is None:
            values, names = compute(x)
            if cache:
                cache.put(key, values, names)
        else:
            values, names = hit
        out.append(values)
    return np.concatenate(out), names


def features_for(images: torch.Tensor, *, G, D, encoder, perceptual, feature_cfg: FeatureConfig, batch: int,
                 cache: FeatureCache | None, desc: str = "features", progress: bool = True
                 ) -> tuple[np.ndarray, list[str]]:
    """Features of float images [N, C, H, W] (8-bit values), batch by batch, through the cache."""
    def compute(x):
        fb = extract_features(G, D, encoder, perceptual, x, cfg=feature_cfg)
        return fb.values.numpy(), fb.names

    return cached_rows(images, compute, batch=batch, cache=cache, desc=desc, progress=progress)


def feature_context(nets, feature_cfg: FeatureConfig | None = None) -> dict:
    """What cached feature rows depend on: the feature settings (`feature_cfg`, default `nets.feature_cfg`) and the
    weights of every network they read. `nets` is anything with `G`, `D`, `encoder` and `perceptual` (a loaded
    detector, or `FeatureNets`)."""
    cfg = feature_cfg if feature_cfg is not None else nets.feature_cfg
    return {"features": cfg.to_dict(), "G": weights_fingerprint(nets.G), "D": weights_fingerprint(nets.D),
            "encoder": weights_fingerprint(nets.encoder) if nets.encoder is not None else None,
            "perceptual": nets.perceptual.backend_id}


@dataclass(frozen=True)
class FeatureNets:
    """The networks the features read, with the settings they are computed with."""

    G: object                   # gan_inversion.networks.Generator
    D: object                   # gan_inversion.networks.Discriminator
    encoder: object | None      # gan_inversion.encoder.Encoder, or None (inversion from w_avg)
    perceptual: object          # gan_inversion.perceptual.PerceptualDistance
    feature_cfg: FeatureConfig
