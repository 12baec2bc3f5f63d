"""Fitting an attribution detector over a primary detector and further registered generators.

The multinomial model is fitted on the data plan's `attribution` photos and fresh samples of every generator
(clean and laundered), and its p_fake threshold set on a held-out part's photos at the primary's target rate.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gan_inversion.data import ImageDataset, to_float
from gan_inversion.encoder import weights_fingerprint
from gan_inversion.metrics import generate

from .. import laundering, plan
from .. import spec as spec_file
from ..components.attribution import (
    ATTRIBUTION_FORMAT,
    MEMBER_FEATURES,
    NONE,
    AttributionError,
    AttributionModel,
    Member,
    attribution_rows,
    member_features,
    member_invert_config,
    row_names,
)
from ..features import FeatureCache, appearance_features, cached_rows, feature_context, features_for
from ..runtime import Detector
from .config import DetectorConfig
from .images import data_plan, quantize


@dataclass(frozen=True)
class AttributionConfig:
    n_per_class: int = 400       # photos and samples of each member used to fit (train split / fresh seeds)
    launder_prob: float = 0.5    # share of them given one random laundering (JPEG, blur, resize)
    calibration_fraction: float = 0.4  # held out from the model's fit, to set the threshold
    C: float = 1.0               # inverse L2 strength of the multinomial logistic model
    batch: int = 50
    seed: int = 0
    real_offset: int | None = None  # photos start at this position of the primary fit's seeded permutation of the
                                    # train split (None: the data plan's 'attribution' slice)


def fit_attribution_model(R: np.ndarray, labels: np.ndarray, classes: list[str], *, target_fpr: float,
                          cfg: AttributionConfig = AttributionConfig()) -> dict:
    """Fit the multinomial model on one part, set the p_fake threshold on the other part's photos."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    R, labels = np.asarray(R, dtype=np.float64), np.asarray(labels)
    if not np.isfinite(R).all():
        raise AttributionError("attribution rows contain NaN or infinity")
    idx = np.arange(len(R))
    fit_idx, cal_idx = train_test_split(idx, test_size=cfg.calibration_fraction, stratify=labels,
                                        random_state=cfg.seed)
    mean, scale = R[fit_idx].mean(0), R[fit_idx].std(0) + 1e-9
    lr = LogisticRegression(C=cfg.C, max_iter=5000).fit((R[fit_idx] - mean) / scale, labels[fit_idx])
    order = [list(lr.classes_).index(k) for k in range(len(classes))]
    spec = {"format": ATTRIBUTION_FORMAT, "classes": list(classes), "row_names": row_names(classes),
            "mean": mean.tolist(), "scale": scale.tolist(), "coef": lr.coef_[order].tolist(),
            "intercept": lr.intercept_[order].tolist(), "threshold": 0.5}
    model = AttributionModel(spec)
    P = model.probabilities(R[cal_idx])
    p = model.p_fake(P)
    cal_real = p[labels[cal_idx] == 0]
    thr = float(np.quantile(cal_real, 1.0 - target_fpr, method="higher")) if len(cal_real) else 0.5
    spec["threshold"] = thr
    y_cal = labels[cal_idx]
    spec["calibration_split"] = {
        "n": int(len(cal_idx)), "accuracy": float((P.argmax(1) == y_cal).mean()),
        "fpr_at_threshold": float((cal_real > thr).mean()),
        "tpr_at_threshold": float((p[y_cal != 0] > thr).mean())}
    spec["target_fpr"] = target_fpr
    return spec


def attribution_images(primary_G, members: list[Member], reals: ImageDataset, *, n: int, seed: int,
                       launder_prob: float, real_offset: int, perm_seed: int = 0, device="cpu"
                       ) -> tuple[torch.Tensor, np.ndarray]:
    """n photos (train split, past the first `real_offset` of the seeded permutation the primary's fit used)
    and n samples of each generator, with the same random laundering for all; labels 0 (none), 1, 2, ..."""
    g = torch.Generator().manual_seed(plan.seed("attribution_launder", seed))
    perm = torch.randperm(len(reals), generator=torch.Generator().manual_seed(plan.seed("fit", perm_seed)))
    idx = perm[real_offset: real_offset + n]
    if len(idx) < n:
        raise AttributionError(f"only {len(idx)} unused train-split photos for attribution (need {n})")
    parts = [to_float(reals.get_batch(idx))]
    for k, G in enumerate([primary_G] + [m.G for m in members]):
        parts.append(quantize(generate(G, n, seed=plan.seed("attribution_fakes", seed, k=k), device=device)))
    images = torch.cat(parts)
    images, _ = laundering.random_launder(images, prob=launder_prob, generator=g)
    labels = np.repeat(np.arange(len(parts)), n)
    return images, labels


def rows_for(detector, members: list[Member], images: torch.Tensor, *, batch: int = 50, progress: bool = True,
             cache_dir: str | Path | None = None) -> np.ndarray:
    """Attribution rows of images through the primary detector and every member (the primary's features go
    through the feature cache when one is given)."""
    cache = FeatureCache(cache_dir, feature_context(detector)) if cache_dir else None
    X, names = features_for(images.to(detector.device), G=detector.G, D=detector.D, encoder=detector.encoder,
                            perceptual=detector.perceptual, feature_cfg=detector.feature_cfg, batch=batch,
                            cache=cache, desc="primary", progress=progress)
    A = appearance_features(detector.perceptual, images.to(detector.device)) if detector.evidence else None
    ev = detector.probabilities(X, images, appearance=A) if detector.evidence else None
    cfg = member_invert_config(detector.feature_cfg)
    blocks = []
    for m in members:
        mcache = FeatureCache(cache_dir, {"member": weights_fingerprint(m.G), "invert": asdict(cfg),
                                          "encoder": None if m.encoder is None else weights_fingerprint(m.encoder),
                                          "perceptual": detector.perceptual.backend_id}) if cache_dir else None

        def compute(x, m=m):
            return member_features(m, x.to(detector.device), perceptual=detector.perceptual, cfg=cfg).features, \
                MEMBER_FEATURES

        blocks.append(cached_rows(images, compute, batch=batch, cache=mcache, desc=m.name, progress=progress)[0])
    return attribution_rows(X, names, detector.classifier.decision(X), None if ev is None else ev.photo_score,
                            blocks)


def fit_attribution(out_path: str | Path, *, primary_path: str | Path, primary_name: str, members: list[Member],
                    reals: ImageDataset, cfg: AttributionConfig = AttributionConfig(), device="cpu",
                    cache_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Fit attribution over the primary detector's generator and `members`; write the attribution detector."""
    out_path, primary_path = Path(out_path), Path(primary_path)
    names = [primary_name] + [m.name for m in members]
    if len(set(names)) != len(names) or NONE in names:
        raise AttributionError(f"generator names must be distinct and not {NONE!r}: {names}")
    det = Detector.load(primary_path, device=device)
    for m in members:
        if (m.G.img_channels, m.G.img_resolution) != (det.G.img_channels, det.G.img_resolution):
            raise AttributionError(f"member {m.name!r} makes {m.G.img_channels}x{m.G.img_resolution}px images, "
                                   f"the primary {det.G.img_channels}x{det.G.img_resolution}px")
    fit_cfg = DetectorConfig.from_spec(det.spec).fit
    offset = cfg.real_offset
    if offset is None:
        offset = data_plan(fit_cfg).slice("attribution", cfg.n_per_class).start
    images, labels = attribution_images(det.G, members, reals, n=cfg.n_per_class, seed=cfg.seed,
                                        launder_prob=cfg.launder_prob, real_offset=offset,
                                        perm_seed=fit_cfg.seed, device=device)
    R = rows_for(det, members, images, batch=cfg.batch, progress=progress, cache_dir=cache_dir)
    target_fpr = (det.spec["evidence"] if det.evidence is not None else det.spec["classifier"])["target_fpr"]
    model = fit_attribution_model(R, labels, [NONE] + names, target_fpr=target_fpr, cfg=cfg)
    rel = lambda p: os.path.relpath(Path(p).resolve(), out_path.resolve().parent)  # noqa: E731
    members_spec = [m.spec(rel) for m in members]
    fp = hashlib.sha256(json.dumps([model, members_spec]).encode()).hexdigest()
    spec = {"kind": "attribution",
            "model_id": f"{det.spec['model_id']}+attr{len(members) + 1}-{fp[:8]}",
            "attribution_of": {"file": rel(primary_path), "model_id": det.spec["model_id"], "name": primary_name},
            "members": members_spec, "attribution": model,
            "fit": {**asdict(cfg), "real_data": reals.name},
            "data_plan": {"split": reals.name, "split_fingerprint": reals.fingerprint(),
                          "permutation_seed": plan.seed("fit", fit_cfg.seed),
                          "slices": {"attribution": [offset, offset + cfg.n_per_class]},
                          "streams": {k: plan.seed(k, cfg.seed) for k in ("attribution_fakes", "attribution_launder")}},
            "metrics": {}}
    return spec_file.write_spec(out_path, spec)
