"""Fitting the operating point on photos alone (detector/components/operating.py serves it).

Photos that took no part in fitting (the data plan's `operating` slice, or a user's own with `resynth calibrate`)
are presented as a user's files in every laundering condition (detector.laundering.CONDITIONS) and scored by the
detector. Per degradation stratum:

- the `fake` threshold is the photos' at `target_fpr` (at most that share of them above it);
- with presentation cells (the default), a model of which laundering an image looks like (its presentation
  statistics and estimated degradation; components/operating.PresentationCells) is fitted on the photos'
  conditions, and each cell it predicts gets its own threshold at `target_fpr` on the photos it assigns there:
  within a stratum, noisy or shrunk photos score higher than clean ones, and one threshold for their mixture
  over-flags the one and under-flags the other;
- the photos are split in two halves by photo (a photo's copies stay together): the checks' tail references are
  measured on one half, and the band's level M* on the other, so that the share of photos failing a check
  without being `fake` is `uncertain_rate` on photos the references did not see.

`fit_operating_point` is the pure function over scores; `operating_point` scores the photos first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from gan_inversion.data import ImageDataset

from .. import laundering
from ..components.evidence import degradation_columns, stratum_masks
from ..components.operating import (
    OPERATING_FORMAT,
    PRESENTATION_STATS,
    OperatingPoint,
    PresentationCells,
    check_scores,
    presentation_stats,
)
from ..features import FeatureCache, features_for
from ..imageio import as_files
from ..runtime import Detector
from ..spec import base_model_id, read_spec, write_spec
from .classifier import threshold_at_fpr
from .config import DetectorConfig
from .evidence import tail_reference
from .images import data_plan, unused_reals


class OperatingPointError(ValueError):
    """Too few photos for the asked rates, or rates that cannot be met."""


@dataclass(frozen=True)
class OperatingConfig:
    target_fpr: float = 0.01       # share of photos answered 'fake' (per presentation cell, or stratum)
    uncertain_rate: float = 0.10   # share of photos answered 'uncertain' (not fake, failing at least one check)
    conditions: tuple[str, ...] = tuple(laundering.CONDITIONS)  # the laundering conditions each photo is presented in
    tail_fraction: float = 0.1     # the top share of photos' scores each check's exponential tail is fitted to
    cells: bool = True             # fake thresholds per presentation cell (else per degradation stratum)
    seed: int = 0                  # the photos' split into the references' half and the band's half
    batch: int = 50                # images per inversion batch


def min_photos(target_fpr: float) -> int:
    """Fewest photo presentations a stratum needs for its threshold: at least 5 above it, and 100."""
    return max(100, int(np.ceil(5 / target_fpr)))


def presented(photos: torch.Tensor, framing: dict | None, conditions: tuple[str, ...]
              ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Every photo [N, C, H, W] as a user's file in every condition: (images [N*K, ...], photo index [N*K],
    condition index [N*K])."""
    out, photo, cond = [], [], []
    for k, name in enumerate(conditions):
        c = laundering.CONDITIONS[name]
        out.append(as_files(photos, framing, launder=partial(laundering.apply_condition, cond=c)))
        photo.append(np.arange(len(photos)))
        cond.append(np.full(len(photos), k))
    return torch.cat(out), np.concatenate(photo), np.concatenate(cond)


def score_photos(det, images: torch.Tensor, *, cache: FeatureCache | None, batch: int = 50, progress: bool = True
                 ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None, np.ndarray]:
    """(p_fake [N], every check's score, estimated degradation [N, 2] or None, presentation statistics [N, 5]) of
    images as the detector serves them (fully refined; features through the cache)."""
    X, names = features_for(images.to(det.device), G=det.G, D=det.D, encoder=det.encoder, perceptual=det.perceptual,
                            feature_cfg=det.feature_cfg, batch=batch, cache=cache, desc="operating-point photos",
                            progress=progress)
    ev = det.probabilities(X, images)
    return (ev.p_fake, check_scores(ev, X, names, images), degradation_columns(X, det.classifier),
            presentation_stats(images))


def fit_cells(p: np.ndarray, stats: np.ndarray, degradation: np.ndarray | None, *, condition: np.ndarray,
              conditions: tuple[str, ...], target_fpr: float) -> dict:
    """The presentation cells' spec: a multinomial logistic model of the photos' conditions from their
    presentation statistics and estimated degradation, and per predicted cell the threshold at `target_fpr` on
    the photos it holds; cells with fewer than min_photos(target_fpr) share one threshold (`fallback`)."""
    Z = PresentationCells.inputs(stats, degradation)
    mean, std = Z.mean(axis=0), Z.std(axis=0)
    std[std < 1e-12] = 1.0
    model = LogisticRegression(C=1.0, max_iter=5000).fit((Z - mean) / std, condition)
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:  # sklearn gives one row for two classes: class 1 wins where it is positive
        coef, intercept = np.r_[np.zeros_like(coef), coef], np.r_[0.0, intercept]
    spec = {"inputs": [*PRESENTATION_STATS, "blur_sigma", "scale"], "labels": [conditions[k] for k in model.classes_],
            "mean": mean.tolist(), "std": std.tolist(), "coef": coef.tolist(), "intercept": intercept.tolist(),
            "thresholds": {}, "fallback_threshold": 0.0}
    assigned = np.array(PresentationCells(spec).assign(stats, degradation))
    need, small = min_photos(target_fpr), np.zeros(len(p), dtype=bool)
    for c in spec["labels"]:
        m = assigned == c
        if m.sum() >= need:
            spec["thresholds"][c] = threshold_at_fpr(p[m], target_fpr)
        else:
            small |= m
    spec["fallback_threshold"] = threshold_at_fpr(p[small] if small.sum() >= need else p, target_fpr)
    spec["sizes"] = {c: int((assigned == c).sum()) for c in spec["labels"]}
    # how often each condition's photos land in their own cell (the rest share a cell with another condition)
    spec["own_cell"] = {name: float((assigned[condition == k] == name).mean())
                        for k, name in enumerate(conditions) if (condition == k).any()}
    return spec


def fit_operating_point(p: np.ndarray, scores: dict[str, np.ndarray], degradation: np.ndarray | None, *,
                        photo: np.ndarray, condition: np.ndarray, cfg: OperatingConfig = OperatingConfig(),
                        strata: dict | None = None, stats: np.ndarray | None = None, source: str = "") -> dict:
    """The operating point's JSON spec from photos' p_fake [N], check scores and estimated degradation, each row a
    presentation of photo `photo[i]` in condition `condition[i]` (an index into cfg.conditions). `strata`: the
    evidence's bounds (None: one stratum). `stats`: the presentations' statistics [N, 5] (presentation_stats), for
    thresholds per presentation cell (cfg.cells)."""
    if not 0 < cfg.target_fpr < 0.5 or not 0 < cfg.uncertain_rate < 0.5:
        raise OperatingPointError(f"the rates must lie in (0, 0.5): target_fpr {cfg.target_fpr}, "
                                  f"uncertain_rate {cfg.uncertain_rate}")
    p, n = np.asarray(p, dtype=np.float64), len(p)
    need = min_photos(cfg.target_fpr)
    masks = stratum_masks(degradation, n, strata)
    if strata is not None and min(int(m.sum()) for m in masks.values()) < 2 * need:
        strata, masks = None, stratum_masks(None, n, None)  # too few for each stratum: one for all
    if n < 2 * need:
        raise OperatingPointError(f"{len(np.unique(photo))} photos give {n} presentations: at least {2 * need} are "
                                  f"needed to set a threshold at {cfg.target_fpr:.2%} false positives and its band "
                                  "(add photos or raise the rate)")
    checks = sorted(scores, key=list(CHECK_ORDER).index)
    half = np.random.default_rng(cfg.seed).permutation(int(photo.max()) + 1) % 2  # photo -> 0 (references) or 1
    in_ref = half[photo] == 0
    per = {}
    for k, m in masks.items():
        t = threshold_at_fpr(p[m], cfg.target_fpr)
        ref = {c: tail_reference(np.asarray(scores[c])[m & in_ref], tail_fraction=cfg.tail_fraction) for c in checks}
        per[k] = {"threshold": float(t), "m_star": 0.0, "reference": ref, "n": int(m.sum())}
    spec = {"format": OPERATING_FORMAT, "target_fpr": cfg.target_fpr, "uncertain_rate": cfg.uncertain_rate,
            "checks": checks, **({"strata": strata} if strata is not None else {}), "per_stratum": per}
    if cfg.cells and stats is not None:
        spec["cells"] = fit_cells(p, stats, degradation, condition=condition, conditions=cfg.conditions,
                                  target_fpr=cfg.target_fpr)
    op = OperatingPoint(spec)
    s = op.surprise(scores, degradation)
    M = np.max(np.stack([s[c] for c in checks]), axis=0)  # [N] the strongest check
    t_img = op.thresholds(degradation, n, stats)  # [N] each presentation's fake threshold
    for k, m in masks.items():
        band = m & ~in_ref
        calm = np.sort(M[band & (p <= t_img)])[::-1]  # not fake, most surprising first
        j = int(np.floor(cfg.uncertain_rate * band.sum()))  # photos of the band's half allowed 'uncertain'
        per[k]["m_star"] = float(calm[j]) if j < len(calm) else float("-inf")
    op = OperatingPoint(spec)
    spec["on_photos"] = shares(op, p, scores, degradation, condition, cfg.conditions, stats)
    spec["photos"] = {"source": source, "n_photos": int(photo.max()) + 1, "presentations": n,
                      "conditions": list(cfg.conditions), "config": asdict(cfg)}
    return spec


# checks in the order a doubt is named
CHECK_ORDER = ("combined", "generator", "photos", "probe", "artifacts", "unexplained", "unexplained_pixels",
               "sharpness", "latent")


def shares(op: OperatingPoint, p: np.ndarray, scores: dict[str, np.ndarray], degradation: np.ndarray | None,
           condition: np.ndarray, conditions: tuple[str, ...], stats: np.ndarray | None = None) -> dict:
    """Per condition, the share of these images answered fake / uncertain / real (the fitting photos' own)."""
    j = op.judge(p, scores, degradation, stats)
    doubt = np.array([bool(d) for d in j.doubts])
    out = {}
    for k, name in enumerate(conditions):
        m = condition == k
        if m.any():
            out[name] = {"fake": float(j.fake[m].mean()), "uncertain": float((~j.fake[m] & doubt[m]).mean()),
                         "real": float((~j.fake[m] & ~doubt[m]).mean()), "n": int(m.sum())}
    return out


def operating_point(det, photos: torch.Tensor, *, cfg: OperatingConfig = OperatingConfig(),
                    cache: FeatureCache | None = None, source: str = "", progress: bool = True) -> dict:
    """Score `photos` [N, C, H, W] (float images of the photos' native framing, never seen by the fit) in every
    condition and fit the operating point on them."""
    images, photo, condition = presented(photos, det.bundle.framing, cfg.conditions)
    p, scores, degradation, stats = score_photos(det, images, cache=cache, batch=cfg.batch, progress=progress)
    strata = det.evidence.strata if det.evidence is not None else None
    return fit_operating_point(p, scores, degradation, photo=photo, condition=condition, cfg=cfg, strata=strata,
                               stats=stats, source=source)


def add_operating_point(detector_path: str | Path, reals: ImageDataset, *, cfg: OperatingConfig = OperatingConfig(),
                        n: int | None = None, out_path: str | Path | None = None, cache_dir: str | Path | None = None,
                        device="cpu", progress: bool = True) -> dict:
    """Fit the operating point of a single detector file on its data plan's `operating` photos (n of them,
    default the plan's size) and write the file (at out_path, default in place) with it, its slice recorded and
    its model id extended (its verdicts differ). Returns the spec written."""
    det = Detector.load(detector_path, device=device)
    if det.attribution is not None:
        raise OperatingPointError(f"{detector_path} is an attribution detector: it decides at its own threshold")
    if reals.fingerprint() != det.spec["fit"]["real_fingerprint"]:
        raise OperatingPointError(f"{reals.name} is not the train split {detector_path} was fitted on (fingerprints "
                                  "differ): its data plan's photos would not be held out")
    fit_cfg = DetectorConfig.from_spec(det.spec).fit
    n = fit_cfg.n_operating if n is None else n
    photos = unused_reals(reals, fit_cfg, n, part="operating")
    cache = FeatureCache(cache_dir, det.feature_context()) if cache_dir else None
    op = operating_point(det, photos, cfg=cfg, cache=cache, source="the data plan's 'operating' slice",
                         progress=progress)
    spec = read_spec(detector_path)
    refit = spec.pop("operating", None) is not None
    base = base_model_id(spec["model_id"]) if refit else spec["model_id"]
    spec["operating"] = op
    digest = hashlib.sha256(json.dumps([op["per_stratum"][k]["threshold"] for k in op["per_stratum"]]
                                       + [op["per_stratum"][k]["m_star"] for k in op["per_stratum"]]
                                       + [op["checks"]]).encode()).hexdigest()[:8]
    spec["model_id"] = f"{base}-op{digest}"
    held = data_plan(fit_cfg).slice("operating", n)
    spec["data_plan"]["slices"]["operating"] = [held.start, held.stop]
    return write_spec(out_path or detector_path, spec)
