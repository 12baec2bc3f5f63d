"""A two-stage cascade: the encoder's guess decides the clear cases, only the others pay for refinement.

Stage 1 computes the features after the encoder's guess alone (no projector step; a degradation-aware detector
scores its degradation candidates on that guess), a classifier fitted on those features, and the detector's own
real-photo model, combined as in detector/evidence.py into p1. An image with p1 below `lo` is decided with p1
(a confident 'real'), above `hi` too (a confident 'fake'); between them it is refined and scored by the full
detector. The band is chosen on images held out from every fit (train-split photos the fit did not use, fresh
samples): of the fakes the full detector flags, at most `max_missed` are cleared at stage 1; of the photos it
clears, at most `max_extra_fpr` are flagged at stage 1.
With `decide_real=False` stage 1 only flags confident fakes: clearing photos early mixes two score scales
among the photos and costs ranking (AUC) even where no verdict changes (benchmarks/RESULTS.md, speed).
The cascade as a whole is measured on the test split by `python -m benchmarks.speed`. It is opt-in
(`Detector.load(..., cascade=True)`, `--cascade`, RESYNTH_CASCADE=1): a faster setting that ranks worse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .classifier import ClassifierConfig, JsonClassifier, fit_classifier
from .evidence import EvidenceModel, RealPhotoModel, appearance_features, fit_evidence
from .features import FeatureConfig


@dataclass(frozen=True)
class CascadeConfig:
    max_missed: float = 0.01      # share of held-out fakes (that the full detector flags) stage 1 may clear
    max_extra_fpr: float = 0.0    # share of held-out photos (that the full detector clears) stage 1 may flag
    decide_real: bool = True      # False: stage 1 only flags confident fakes, every other image is refined
    n_real: int = 600             # held-out train-split photos for stage 1's evidence and the band
    n_fake: int = 600             # held-out fresh samples (laundered like the fit's)
    reference_fraction: float = 1 / 3  # of those photos: the reference for stage 1's tail probabilities
    seed: int = 0


CASCADE_FAKE_SEED = 3_000_000_019  # held-out samples for the band: a stream neither fitting nor evaluation uses


def first_stage_config(cfg: FeatureConfig) -> FeatureConfig:
    """The full detector's feature config with no refinement step (the encoder's guess only)."""
    return dataclasses.replace(cfg, refine_steps=0, search_steps=None)


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


class FirstStage:
    """Serving side of a cascade spec (a detector file's "cascade")."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.feature_cfg = FeatureConfig.from_dict(spec["features"])
        self.classifier = JsonClassifier(spec["classifier"])
        self.evidence = EvidenceModel(spec["evidence"])
        self.lo, self.hi = float(spec["band"]["lo"]), float(spec["band"]["hi"])
        dom = spec.get("domain") or {}
        self.feature_lo = np.asarray(dom.get("feature_lo", []), dtype=np.float64)
        self.feature_hi = np.asarray(dom.get("feature_hi", []), dtype=np.float64)

    def decided(self, p1: np.ndarray, threshold: float) -> np.ndarray:
        """Which images stage 1 decides (the band always contains the threshold in use)."""
        lo, hi = min(self.lo, threshold), max(self.hi, threshold)
        return (p1 < lo) | (p1 > hi)


def fit_cascade(detector, reals, *, cfg: CascadeConfig = CascadeConfig(), cache_dir=None, progress: bool = True
                ) -> dict:
    """A copy of `detector`'s spec with a cascade: stage-1 classifier on the fit's own images (their stage-1
    features), stage-1 evidence and band on held-out images (module docstring). `reals` is the train split."""
    from gan_inversion.encoder import weights_fingerprint
    from gan_inversion.metrics import generate

    from . import laundering
    from .fit import FeatureCache, FitConfig, feature_context, features_for, fit_images, quantize, unused_reals

    if detector.evidence is None:
        raise ValueError("a cascade needs a detector with the real-photo model (refit without --no-real-model)")
    spec = json.loads(json.dumps(detector.spec))
    spec.pop("cascade", None)
    fit = {k: v for k, v in spec["fit"].items() if k in {f.name for f in dataclasses.fields(FitConfig)}}
    fit_cfg = FitConfig(**fit)
    clf_cfg = ClassifierConfig(**spec["classifier"]["config"])
    dev = detector.device
    cfg1 = first_stage_config(detector.feature_cfg)
    enc_fp = weights_fingerprint(detector.encoder) if detector.encoder is not None else None
    G_fp = weights_fingerprint(detector.G)

    def cache_for(fcfg: FeatureConfig, context: dict | None = None):
        ctx = context or {"features": fcfg.to_dict(), "G": G_fp, "encoder": enc_fp,
                          "perceptual": detector.perceptual.backend_id}
        return FeatureCache(cache_dir, ctx) if cache_dir else None

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
    g = torch.Generator().manual_seed(cfg.seed + 1)
    h_real = unused_reals(reals, fit_cfg, cfg.n_real)
    h_fake = quantize(generate(detector.G, cfg.n_fake, seed=CASCADE_FAKE_SEED + cfg.seed, device=dev))
    h_real, _ = laundering.random_launder(h_real, prob=fit_cfg.launder_prob, generator=g)
    h_fake, _ = laundering.random_launder(h_fake, prob=fit_cfg.launder_prob, generator=g)
    images = torch.cat([h_real, h_fake]).to(dev)
    yh = np.r_[np.zeros(len(h_real)), np.ones(len(h_fake))].astype(np.int64)
    H1, _ = features_for(images, feature_cfg=cfg1, cache=cache_for(cfg1), desc="held-out stage 1", **kw)
    H2, _ = features_for(images, feature_cfg=detector.feature_cfg,
                         cache=cache_for(detector.feature_cfg, feature_context(detector)), desc="held-out full", **kw)
    A = appearance_features(detector.perceptual, images)
    real_model = spec["evidence"]["real_model"]
    photo = RealPhotoModel(real_model).score(A)
    decision = JsonClassifier(clf1).decision(H1)
    rng = np.random.default_rng(cfg.seed)
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
    spec["cascade"]["id_suffix"] = "-cas" + hashlib.sha256(
        json.dumps(spec["cascade"], sort_keys=True).encode()).hexdigest()[:8]
    return spec
