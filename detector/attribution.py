"""Attribution over several registered generators: which one explains an image best, or none of them.

An attribution detector file names a primary detector (a fitted single-generator detector: its bundle, encoder,
classifier and real-photo model) and further *members*: StyleGAN2 bundles, each with its encoder if it has one.
Scoring inverts the image into every registered generator (the primary's inversion is the primary detector's
own; each other member gets a hybrid inversion of the same length, without the degradation search) and
describes how well each one reproduced it (`MEMBER_FEATURES`). A multinomial logistic model over those
descriptions and the primary's two kinds of evidence gives one probability per class — `none` (a real photo, or
nothing registered explains it) and each registered generator — fitted on held-out train-split photos and fresh
samples of every member (clean and laundered). `p_fake = 1 - P(none)`, with its threshold set on held-out photos
at the primary's target false-positive rate.

Serving evaluates the stored JSON with numpy only.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gan_inversion.checkpoints import Bundle, BundleError, load_bundle
from gan_inversion.data import ImageDataset, to_float
from gan_inversion.encoder import Encoder, InvertConfig, invert, load_encoder, weights_fingerprint
from gan_inversion.metrics import generate
from gan_inversion.perceptual import PerceptualDistance

from . import laundering

ATTRIBUTION_FORMAT = "resynth-attribution-json"
NONE = "none"
MEMBER_FEATURES = ["log_pix_mse", "log_perc_total", "log_loss_first", "log_loss_last", "w_dist_avg"]
PRIMARY_COLUMNS = ["pix_mse", "perc_total", "loss_first", "loss_last", "w_dist_avg"]  # the same, from its features
ATTRIBUTION_FAKE_SEED = 3_000_000_019  # member samples for fitting; evaluation uses fit.EVAL_FAKE_SEED


class AttributionError(RuntimeError):
    """An attribution detector or its members are unusable."""


@dataclass(frozen=True)
class AttributionConfig:
    n_per_class: int = 400       # photos and samples of each member used to fit (train split / fresh seeds)
    launder_prob: float = 0.5    # share of them given one random laundering (JPEG, blur, resize)
    calibration_fraction: float = 0.4  # held out from the model's fit, to set the threshold
    C: float = 1.0               # inverse L2 strength of the multinomial logistic model
    batch: int = 50
    seed: int = 0
    real_offset: int | None = None  # photos start this far into the primary fit's seeded permutation of the
                                    # train split (None: past the primary's fit and its cascade's 1,000)


@dataclass
class Member:
    """A registered generator other than the primary: its bundle and (optional) encoder."""

    name: str
    bundle: Bundle
    encoder: Encoder | None
    encoder_path: str | None = None

    @property
    def G(self):
        return self.bundle.G_ema

    def spec(self, rel) -> dict:
        return {"name": self.name, "bundle": {"file": rel(self.bundle.path),
                                              "generator_fingerprint": weights_fingerprint(self.G)},
                "encoder": None if self.encoder is None else
                {"file": rel(self.encoder_path), "fingerprint": weights_fingerprint(self.encoder)}}


def load_member(name: str, bundle_file: str | Path, encoder_file: str | Path | None = None, *,
                device="cpu", expect: dict | None = None) -> Member:
    """A member from its files; `expect` (a stored member spec) checks the fingerprints."""
    try:
        bundle = load_bundle(bundle_file, device=device)
        encoder = None
        if encoder_file is not None:
            encoder, _ = load_encoder(encoder_file, G=bundle.G_ema, device=device)
    except BundleError as exc:
        raise AttributionError(f"member {name!r}: {exc}") from exc
    if expect is not None:
        if weights_fingerprint(bundle.G_ema) != expect["bundle"]["generator_fingerprint"]:
            raise AttributionError(f"member {name!r}: {bundle_file} is another generator than the one registered")
        if encoder is not None and weights_fingerprint(encoder) != expect["encoder"]["fingerprint"]:
            raise AttributionError(f"member {name!r}: {encoder_file} is another encoder than the one registered")
    return Member(name=name, bundle=bundle, encoder=encoder,
                  encoder_path=None if encoder_file is None else str(encoder_file))


@dataclass
class MemberInversion:
    features: np.ndarray        # [N, len(MEMBER_FEATURES)]
    ms_per_image: float


def member_features(member: Member, images: torch.Tensor, *, perceptual: PerceptualDistance,
                    cfg: InvertConfig) -> MemberInversion:
    """How well one registered generator reproduces images [N, C, H, W] in [-1, 1] (per-image independent)."""
    G = member.G
    if images.shape[1:] != (G.img_channels, G.img_resolution, G.img_resolution):
        raise AttributionError(f"member {member.name!r} makes {G.img_channels}x{G.img_resolution}x"
                               f"{G.img_resolution} images; got {list(images.shape[1:])}")
    t0 = time.perf_counter()
    res, _ = invert(G, images, encoder=member.encoder, perceptual=perceptual, cfg=cfg)
    with torch.no_grad():
        mse = (res.images - images).square().mean(dim=[1, 2, 3])
        perc = perceptual.compare(res.images, images)["total"]
        first = res.loss_history[0] if len(res.loss_history) else res.final_loss
        w_dist = (res.ws - G.w_avg.view(1, 1, -1)).norm(dim=2).mean(1)
        cols = [mse, perc, first.to(images.device), res.final_loss.to(images.device)]
        F = torch.stack([c.double().cpu().clamp_min(1e-10).log() for c in cols] + [w_dist.double().cpu()], dim=1)
    ms = 1000 * (time.perf_counter() - t0) / max(len(images), 1)
    return MemberInversion(features=F.numpy(), ms_per_image=ms)


def primary_member_features(X: np.ndarray, names: list[str]) -> np.ndarray:
    """The primary's MEMBER_FEATURES, read off its own feature rows [N, F]."""
    idx = [names.index(c) for c in PRIMARY_COLUMNS]
    V = np.asarray(X, dtype=np.float64)[:, idx]
    V[:, :4] = np.log(np.clip(V[:, :4], 1e-10, None))
    return V


def attribution_rows(X: np.ndarray, names: list[str], decision: np.ndarray, photo: np.ndarray | None,
                     members: list[np.ndarray]) -> np.ndarray:
    """[N, 2 + 5 * (1 + len(members))]: the primary's evidence (its classifier decision, its photo score or 0
    without a real-photo model), its description read off its feature rows X, then each member's."""
    photo = np.zeros(len(X)) if photo is None else np.nan_to_num(np.asarray(photo, dtype=np.float64), nan=0.0)
    return np.column_stack([decision, photo, primary_member_features(X, names), *members])


def row_names(classes: list[str]) -> list[str]:
    gens = [c for c in classes if c != NONE]
    return ["primary_decision", "primary_photo_score"] + [f"{g}:{f}" for g in gens for f in MEMBER_FEATURES]


class AttributionModel:
    """The stored multinomial logistic model: rows -> class probabilities (numpy only)."""

    def __init__(self, spec: dict):
        if spec.get("format") != ATTRIBUTION_FORMAT:
            raise AttributionError("not a resynth attribution model")
        self.spec = spec
        self.classes: list[str] = list(spec["classes"])
        self.mean, self.scale = np.asarray(spec["mean"]), np.asarray(spec["scale"])
        self.coef, self.intercept = np.asarray(spec["coef"]), np.asarray(spec["intercept"])
        self.threshold: float = float(spec["threshold"])

    def probabilities(self, R: np.ndarray) -> np.ndarray:
        z = ((np.asarray(R, dtype=np.float64) - self.mean) / self.scale) @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)  # [N, K]

    def p_fake(self, P: np.ndarray) -> np.ndarray:
        return 1.0 - P[:, self.classes.index(NONE)]

    def as_dicts(self, P: np.ndarray) -> list[dict[str, float]]:
        return [{c: round(float(p), 4) for c, p in zip(self.classes, row, strict=True)} for row in P]


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


# --------------------------------------------------------------------------- fitting an attribution detector

def attribution_images(primary_G, members: list[Member], reals: ImageDataset, *, n: int, seed: int,
                       launder_prob: float, real_offset: int, perm_seed: int = 0, device="cpu"
                       ) -> tuple[torch.Tensor, np.ndarray]:
    """n photos (train split, past the first `real_offset` of the seeded permutation the primary's fit used)
    and n samples of each generator, with the same random laundering for all; labels 0 (none), 1, 2, ..."""
    from .fit import quantize

    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(reals), generator=torch.Generator().manual_seed(perm_seed))
    idx = perm[real_offset: real_offset + n]
    if len(idx) < n:
        raise AttributionError(f"only {len(idx)} unused train-split photos for attribution (need {n})")
    parts = [to_float(reals.get_batch(idx))]
    for k, G in enumerate([primary_G] + [m.G for m in members]):
        parts.append(quantize(generate(G, n, seed=ATTRIBUTION_FAKE_SEED + 7919 * k + seed, device=device)))
    images = torch.cat(parts)
    images, _ = laundering.random_launder(images, prob=launder_prob, generator=g)
    labels = np.repeat(np.arange(len(parts)), n)
    return images, labels


def rows_for(detector, members: list[Member], images: torch.Tensor, *, batch: int = 50, progress: bool = True,
             cache_dir: str | Path | None = None) -> np.ndarray:
    """Attribution rows of images through the primary detector and every member (the primary's features go
    through the feature cache when one is given)."""
    from .evidence import appearance_features
    from .fit import FeatureCache, cached_rows, feature_context, features_for

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


def member_invert_config(feature_cfg) -> InvertConfig:
    """The members' inversion: the primary's refinement settings, without its degradation search."""
    return InvertConfig(refine_steps=feature_cfg.refine_steps, space=feature_cfg.space,
                        initial_lr=feature_cfg.initial_lr, pixel_weight=feature_cfg.pixel_weight,
                        seed=feature_cfg.seed)


def fit_attribution(out_path: str | Path, *, primary_path: str | Path, primary_name: str, members: list[Member],
                    reals: ImageDataset, cfg: AttributionConfig = AttributionConfig(), device="cpu",
                    cache_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Fit attribution over the primary detector's generator and `members`; write the attribution detector."""
    from .fit import FitConfig, write_spec
    from .scoring import DETECTOR_FORMAT, DETECTOR_VERSION, Detector

    out_path, primary_path = Path(out_path), Path(primary_path)
    names = [primary_name] + [m.name for m in members]
    if len(set(names)) != len(names) or NONE in names:
        raise AttributionError(f"generator names must be distinct and not {NONE!r}: {names}")
    det = Detector.load(primary_path, device=device)
    for m in members:
        if (m.G.img_channels, m.G.img_resolution) != (det.G.img_channels, det.G.img_resolution):
            raise AttributionError(f"member {m.name!r} makes {m.G.img_channels}x{m.G.img_resolution}px images, "
                                   f"the primary {det.G.img_channels}x{det.G.img_resolution}px")
    fit = det.spec.get("fit") or {}
    offset = cfg.real_offset if cfg.real_offset is not None else int(fit.get("n_real", FitConfig().n_real)) + 1000
    images, labels = attribution_images(det.G, members, reals, n=cfg.n_per_class, seed=cfg.seed,
                                        launder_prob=cfg.launder_prob, real_offset=offset,
                                        perm_seed=int(fit.get("seed", 0)), device=device)
    R = rows_for(det, members, images, batch=cfg.batch, progress=progress, cache_dir=cache_dir)
    target_fpr = (det.spec.get("evidence") or det.spec["classifier"]).get("target_fpr", 0.01)
    model = fit_attribution_model(R, labels, [NONE] + names, target_fpr=target_fpr, cfg=cfg)
    rel = lambda p: os.path.relpath(Path(p).resolve(), out_path.resolve().parent)  # noqa: E731
    members_spec = [m.spec(rel) for m in members]
    fp = hashlib.sha256(json.dumps([model, members_spec]).encode()).hexdigest()
    spec = {"format": DETECTOR_FORMAT, "format_version": DETECTOR_VERSION,
            "model_id": f"{det.spec['model_id']}+attr{len(members) + 1}-{fp[:8]}",
            "attribution_of": {"file": rel(primary_path), "model_id": det.spec["model_id"], "name": primary_name},
            "members": members_spec, "attribution": model,
            "fit": {**asdict(cfg), "real_data": reals.name, "real_offset": offset,
                    "fake_seed": ATTRIBUTION_FAKE_SEED}, "metrics": {}}
    write_spec(out_path, spec)
    return spec
