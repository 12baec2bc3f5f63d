"""Held-out evaluation of a detector: test-split photos against fresh samples, clean and laundered, each presented
as a user's file of that size would reach the model (detector.imageio.as_files): the metrics of the ranking, and
what users are told at the operating point (the shares answered fake / uncertain / real)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch

from gan_inversion.data import ImageDataset, to_float
from gan_inversion.metrics import generate

from .. import laundering, plan
from ..features import FeatureCache, features_for
from ..imageio import as_files
from ..metrics import point_metrics
from .images import quantize


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Held-out metrics of calibrated probabilities at the stored threshold (see detector/metrics.py)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    m = point_metrics(y, p, threshold, probabilities=True)
    return {"n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()), **m,
            "fpr_at_threshold": 1.0 - m["real_accuracy"], "tpr_at_threshold": m["fake_accuracy"]}


EVAL_CONDITIONS = {"clean": None, "jpeg75": ("jpeg", 75), "resize0.5": ("resize", 0.5), "blur1.0": ("blur", 1.0)}


def evaluate_detector(detector, test_reals: ImageDataset, *, n: int = 1000, batch: int = 50,
                      conditions: dict = EVAL_CONDITIONS, cache_dir: str | Path | None = None,
                      progress: bool = True) -> dict:
    """Held-out evaluation: first n test-split reals vs n fresh G_ema samples, per laundering condition: the
    ranking's metrics at the detector's threshold, and the verdicts' shares (`answered`)."""
    if getattr(detector, "attribution", None) is not None:
        raise ValueError("an attribution detector is evaluated by python -m benchmarks.attribution (its p_fake "
                         "needs every registered generator's inversion); evaluate its primary detector here")
    G = detector.G
    real = to_float(test_reals.images[:n])
    n = len(real)
    fake = quantize(generate(G, n, seed=plan.seed("eval_fakes"), device=detector.device))
    cache = FeatureCache(cache_dir, detector.feature_context()) if cache_dir else None
    kw = dict(G=G, D=detector.D, encoder=detector.encoder, perceptual=detector.perceptual,
              feature_cfg=detector.feature_cfg, batch=batch, cache=cache, progress=progress)
    out = {}
    for name, cond in conditions.items():
        present = partial(as_files, framing=detector.bundle.framing,
                          launder=partial(laundering.apply_condition, cond=cond))
        r, f = present(real), present(fake)
        X_r, names = features_for(r.to(detector.device), desc=f"{name} real", **kw)
        X_f, _ = features_for(f.to(detector.device), desc=f"{name} fake", **kw)
        X, images = np.concatenate([X_r, X_f]), torch.cat([r, f])
        y = np.concatenate([np.zeros(len(X_r)), np.ones(len(X_f))]).astype(int)
        ev = detector.probabilities(X, images)
        p, X1, decided = ev.p_fake, None, None
        if detector.first_stage is not None:
            X1 = first_stage_features(detector, images, batch=batch, cache_dir=cache_dir, progress=progress,
                                      desc=f"{name} stage 1")
            p, decided = detector.cascade_probabilities(X1, X, images)
        v = np.asarray(detector.verdicts(X, names, p, ev=ev, images=images, X1=X1, decided=decided))
        shares = {side: {k: float((v[y == c] == k).mean()) for k in ("fake", "uncertain", "real")}
                  for side, c in (("photos", 0), ("fakes", 1))}
        out[name] = {**binary_metrics(y, p, detector.threshold), "answered": shares}
        if decided is not None:
            out[name]["decided_at_first_stage"] = float(decided.mean())
    return {"n_per_class": n, "fake_seed": plan.seed("eval_fakes"), "real_data": test_reals.name, "conditions": out,
            "cascade": detector.first_stage is not None}


def first_stage_features(detector, images: torch.Tensor, *, batch: int = 50, cache_dir=None, progress: bool = True,
                         desc: str = "stage 1") -> np.ndarray:
    """The cascade's stage-1 feature rows of images (a detector with a cascade), through the cache."""
    cfg1 = detector.first_stage.feature_cfg
    cache = FeatureCache(cache_dir, detector.feature_context(cfg1)) if cache_dir else None
    X1, _ = features_for(images.to(detector.device), G=detector.G, D=detector.D, encoder=detector.encoder,
                         perceptual=detector.perceptual, feature_cfg=cfg1, batch=batch, cache=cache, desc=desc,
                         progress=progress)
    return X1
