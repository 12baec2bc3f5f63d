"""Attribution over several registered generators (serving side): which one explains an image best, or none.

An attribution detector inverts an image into every registered generator and describes how well each reproduced
it (`MEMBER_FEATURES`); a multinomial logistic model over those descriptions and the primary detector's evidence
gives one probability per class: `none` and each generator. `p_fake = 1 - P(none)`.
detector/fitting/attribution.py fits the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gan_inversion.checkpoints import Bundle, BundleError, load_bundle
from gan_inversion.encoder import Encoder, InvertConfig, invert, load_encoder, weights_fingerprint
from gan_inversion.perceptual import PerceptualDistance

ATTRIBUTION_FORMAT = "resynth-attribution-json"
NONE = "none"
MEMBER_FEATURES = ["log_pix_mse", "log_perc_total", "log_loss_first", "log_loss_last", "w_dist_avg"]
PRIMARY_COLUMNS = ["pix_mse", "perc_total", "loss_first", "loss_last", "w_dist_avg"]  # the same, from its features


class AttributionError(RuntimeError):
    """An attribution detector or its members are unusable."""


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


def member_invert_config(feature_cfg) -> InvertConfig:
    """The members' inversion: the primary's refinement settings, without its degradation search."""
    return InvertConfig(refine_steps=feature_cfg.refine_steps, space=feature_cfg.space,
                        initial_lr=feature_cfg.initial_lr, pixel_weight=feature_cfg.pixel_weight,
                        seed=feature_cfg.seed)


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
