"""Fitting the two-stage cascade (detector/components/first_stage.py serves it).

The stage-1 classifier is fitted on the fit's own images (their stage-1 features, the same split as the full
classifier). Stage 1's evidence and the band are fitted on images held out from every other fit (the data plan's
`cascade` photos and stream): of the fakes the full detector flags, at most `max_missed` are cleared at stage 1;
of the photos it clears, at most `max_extra_fpr` are flagged there. With `decide_real=False` stage 1 only flags
confident fakes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch

from gan_inversion.metrics import generate

from .. import laundering, plan
from ..components.classifier import JsonClassifier
from ..components.evidence import EvidenceModel, RealPhotoModel
from ..components.first_stage import first_stage_config
from ..features import FeatureCache, FeatureConfig, appearance_features, feature_context, features_for
from .classifier import fit_classifier
from .config import DetectorConfig
from .evidence import fit_evidence
from .images import data_plan, fit_images, quantize, unused_reals


@dataclass(frozen=True)
class CascadeConfig:
    max_missed: float = 0.01      # share of held-out fakes (that the full detector flags) stage 1 may clear
    max_extra_fpr: float = 0.0    # share of held-out photos (that the full detector clears) stage 1 may flag
    decide_real: bool = True      # False: stage 1 only flags confident fakes, every other image is refined
    n_real: int = 600             # held-out train-split photos for stage 1's evidence and the band
    n_fake: int = 600             # held-out fresh samples (laundered like the fit's)
    reference_fraction: float = 1 / 3  # of those photos: the reference for stage 1's tail probabilities
    seed: int = 0


def choose_band(p1: np.ndarray, p2: np.ndarray, y: np.ndarray, threshold: float, *, max_missed: float,
                max_extra_fpr: float) -> tuple[float, float]:
    """(lo, hi) on held-out images: stage-1 probabilities p1, full probabilities p2, labels y (1: fake).

    Decided at stage 1: p1 < lo or p1 > hi. lo is as high as the missed-fakes budget allows, hi as low as the
    extra-false-positive budget allows; lo <= threshold <= hi always, so a verdict never contradicts its p.
    """
    p1, p2, y = np.asarray(p1, float), np.asarray(p2, float), np.asarray(y, int)
    caught = np.sort(p1[(y == 1) & (p2 > threshold)])
    k = int(np.floor(max_missed * (y == 1).sum()))
    lo = float(caught[min(k, len(caught) - 1)]) if len(caught) else threshold
    cleared = np.sort(p1[(y == 0) & (p2 <= threshold)])[::-1]
    k = int(np.floor(max_extra_fpr * (y == 0).sum()))
    hi = float(cleared[min(k, len(cleared) - 1)]) if len(cleared) else threshold
    return min(lo, threshold), max(hi, threshold)


def fit_cascade(detector, reals, *, cfg: CascadeConfig = CascadeConfig(), cache_dir=None, progress: bool = True
                ) -> dict:
    """A copy of `detector`'s spec with a cascade: stage-1 classifier on the fit's own images (their stage-1
    features), stage-1 evidence and band on the data plan's 'cascade' photos and stream (module docstring). `reals`
    is the train split."""
    if detector.evidence is None:
        raise ValueError("a cascade needs a detector with the real-photo model (refit without --no-real-model)")
    spec = json.loads(json.dumps(detector.spec))
    spec.pop("cascade", None)
    config = DetectorConfig.from_spec(spec)
    fit_cfg, clf_cfg = config.fit, config.classifier
    dev = detector.device
    cfg1 = first_stage_config(detector.feature_cfg)

    def cache_for(fcfg: FeatureConfig):
        return FeatureCache(cache_dir, feature_context(detector, fcfg)) if cache_dir else None

    kw = dict(G=detector.G, D=detector.D, encoder=detector.encoder, perceptual=detector.perceptual,
              batch=fit_cfg.batch, progress=progress)
    # 1. the stage-1 classifier, on the fit's own images (same split as the full classifier)
    real, fake, _, _ = fit_images(detector.G, reals, fit_cfg, device=dev)
    X1r, names = features_for(real.to(dev), feature_cfg=cfg1, cache=cache_for(cfg1), desc="stage-1 real", **kw)
    X1f, _ = features_for(fake.to(dev), feature_cfg=cfg1, cache=cache_for(cfg1), desc="stage-1 fake", **kw)
    X1 = np.concatenate([X1r, X1f])
    y = np.r_[np.zeros(len(X1r)), np.ones(len(X1f))].astype(np.int64)
    clf1, _ = fit_classifier(X1, y, names, cfg=clf_cfg)
    # 2. held-out images: stage-1 evidence (reference photos, sigmoid) and the band
    g = torch.Generator().manual_seed(plan.seed("cascade_launder", cfg.seed))
    h_real = unused_reals(reals, fit_cfg, cfg.n_real, part="cascade")
    h_fake = quantize(generate(detector.G, cfg.n_fake, seed=plan.seed("cascade_fakes", cfg.seed), device=dev))
    h_real, _ = laundering.random_launder(h_real, prob=fit_cfg.launder_prob, generator=g)
    h_fake, _ = laundering.random_launder(h_fake, prob=fit_cfg.launder_prob, generator=g)
    images = torch.cat([h_real, h_fake]).to(dev)
    yh = np.r_[np.zeros(len(h_real)), np.ones(len(h_fake))].astype(np.int64)
    H1, _ = features_for(images, feature_cfg=cfg1, cache=cache_for(cfg1), desc="held-out stage 1", **kw)
    H2, _ = features_for(images, feature_cfg=detector.feature_cfg,
                         cache=cache_for(detector.feature_cfg), desc="held-out full", **kw)
    A = appearance_features(detector.perceptual, images)
    real_model = spec["evidence"]["real_model"]
    photo = RealPhotoModel(real_model).score(A)
    decision = JsonClassifier(clf1).decision(H1)
    rng = np.random.default_rng(plan.seed("cascade_split", cfg.seed))
    photos = np.flatnonzero(yh == 0)
    ref = np.sort(rng.permutation(photos)[: int(round(cfg.reference_fraction * len(photos)))])
    cal = np.setdiff1d(np.arange(len(yh)), ref)
    ev1 = fit_evidence(ref={"generator": decision[ref], "photos": photo[ref]},
                       cal={"generator": decision[cal], "photos": photo[cal]}, y_cal=yh[cal], real_model=real_model,
                       target_fpr=clf_cfg.target_fpr)
    p1 = EvidenceModel(ev1).evaluate(decision[cal], A[cal]).p_fake
    p2 = detector.probabilities(H2[cal], images[cal], appearance=A[cal]).p_fake
    t = detector.threshold
    lo, hi = choose_band(p1, p2, yh[cal], t, max_missed=cfg.max_missed, max_extra_fpr=cfg.max_extra_fpr)
    if not cfg.decide_real:
        lo = 0.0  # p1 < 0 never happens: no image is cleared at stage 1
    decided = (p1 < lo) | (p1 > hi)
    final = np.where(decided, p1, p2)
    yc = yh[cal]
    held_out = {"n_real": int((yc == 0).sum()), "n_fake": int((yc == 1).sum()),
                "decided_share": float(decided.mean()),
                "decided_share_real": float(decided[yc == 0].mean()),
                "decided_share_fake": float(decided[yc == 1].mean()),
                "changed_verdicts": int(((final > t) != (p2 > t)).sum()),
                "fpr_full": float((p2[yc == 0] > t).mean()), "fpr_cascade": float((final[yc == 0] > t).mean()),
                "tpr_full": float((p2[yc == 1] > t).mean()), "tpr_cascade": float((final[yc == 1] > t).mean())}
    lo_f, hi_f = np.percentile(X1, 0.1, axis=0), np.percentile(X1, 99.9, axis=0)
    spec["cascade"] = {"features": cfg1.to_dict(), "classifier": clf1, "evidence": ev1,
                       "band": {"lo": lo, "hi": hi}, "config": asdict(cfg), "held_out": held_out,
                       "domain": {"feature_lo": lo_f.tolist(), "feature_hi": hi_f.tolist()}}
    # The file's model id and metrics stay those of the full detector (what it serves by default); with the
    # cascade switched on, results carry the model id with this suffix.
    held = data_plan(fit_cfg).slice("cascade", cfg.n_real)
    spec["data_plan"]["slices"]["cascade"] = [held.start, held.stop]
    spec["data_plan"]["streams"].update({k: plan.seed(k, cfg.seed) for k in ("cascade_fakes", "cascade_launder",
                                                                               "cascade_split")})
    spec["cascade"]["id_suffix"] = "-cas" + hashlib.sha256(
        json.dumps(spec["cascade"], sort_keys=True).encode()).hexdigest()[:8]
    return spec
