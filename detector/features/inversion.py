"""Per-image features of how well the generator re-synthesises an image.

After hybrid inversion (encoder guess + K projector steps): pixel MSE/MAE/PSNR; perceptual distance,
total and per stage; the discriminator's logit and per-block feature summaries for the input, the
reconstruction and their difference; latent statistics (distance from w_avg, encoder-to-refined shift,
loss over the refinement). Every feature depends on its own image only: the projector is per-image
independent and the discriminator runs in per-image mode (minibatch-stddev group 1).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch

from gan_inversion.degradation import Degradation, invert_degraded
from gan_inversion.encoder import Encoder, InvertConfig, invert
from gan_inversion.networks import Discriminator, Generator
from gan_inversion.perceptual import PerceptualDistance

FEATURE_VERSION = 1


@dataclass(frozen=True)
class FeatureConfig(InvertConfig):
    """The hybrid inversion the features are computed after (its settings: InvertConfig), as stored in a
    detector file. With `degradations` (pairs of blur sigma and resize scale), the inversion is
    degradation-aware (gan_inversion.degradation): the best candidate per image, the input compared with the
    degraded re-synthesis, and three more features (its blur sigma, its scale, the loss it gained).
    `search_steps` (None: every candidate refined fully) makes the search cheaper: every candidate gets that many
    steps, only the best continues (gan_inversion.degradation.invert_degraded)."""

    degradations: tuple[tuple[float, float], ...] = ()
    search_steps: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "degradations", tuple((float(b), float(s)) for b, s in self.degradations))

    @property
    def grid(self) -> tuple[Degradation, ...]:
        return tuple(Degradation(blur_sigma=b, scale=s) for b, s in self.degradations)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "version": FEATURE_VERSION}

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        """As stored by to_dict (in a detector file)."""
        return cls(**{k: v for k, v in d.items() if k != "version"})


DEGRADATION_FEATURES = ["deg_blur_sigma", "deg_scale", "deg_gain"]


def feature_names(perceptual_stages: int, d_blocks: list[str], degradation: bool = False) -> list[str]:
    names = ["pix_mse", "pix_mae", "psnr", "perc_total"]
    names += [f"perc_stage{i}" for i in range(perceptual_stages)]
    names += ["d_logit_in", "d_logit_rec", "d_logit_diff"]
    for b in d_blocks:
        names += [f"d_{b}_in", f"d_{b}_rec", f"d_{b}_dist"]
    names += ["w_dist_avg", "enc_shift", "loss_first", "loss_last", "loss_drop", "loss_drop_rel"]
    return names + (DEGRADATION_FEATURES if degradation else [])


@dataclass
class FeatureBatch:
    values: torch.Tensor                 # [N, F] float64
    names: list[str]
    reconstructions: torch.Tensor        # [N, C, H, W] in [-1, 1]: what the input was compared with
    degradations: list[dict] | None = None      # per image, the degradation chosen (degradation-aware only)
    pixel_map: torch.Tensor | None = None       # [N, 1, H, W] mean |input - reconstruction| over channels
    perceptual_map: torch.Tensor | None = None  # [N, 1, H, W]
    timings_ms: dict = field(default_factory=dict)  # per image, per stage
    ws: torch.Tensor | None = None              # [N, num_ws, w_dim] the refined codes the features came from


def _summary(f: torch.Tensor) -> torch.Tensor:
    return f.abs().flatten(1).mean(1)


@torch.no_grad()
def _d_features(D: Discriminator, x: torch.Tensor, rec: torch.Tensor) -> tuple[list[str], list[torch.Tensor]]:
    logit_in, f_in = D(x, mbstd_group=1, return_features=True)
    logit_rec, f_rec = D(rec, mbstd_group=1, return_features=True)
    cols = [logit_in, logit_rec, logit_in - logit_rec]
    for b in f_in:
        a, r = f_in[b].flatten(1), f_rec[b].flatten(1)
        cols += [_summary(a), _summary(r), (a - r).norm(dim=1) / (a.norm(dim=1) + 1e-8)]
    return list(f_in), cols


def extract_features(G: Generator, D: Discriminator, encoder: Encoder | None, perceptual: PerceptualDistance,
                     images: torch.Tensor, *, cfg: FeatureConfig = FeatureConfig(),
                     explain: bool = False) -> FeatureBatch:
    """images [N, C, H, W] in [-1, 1] -> features [N, F] (float64) with their names."""
    N = images.shape[0]
    t0 = time.perf_counter()
    chosen, extra = None, []
    if cfg.degradations:
        out = invert_degraded(G, images, encoder=encoder, perceptual=perceptual, cfg=cfg, grid=cfg.grid,
                              search_steps=cfg.search_steps)
        res, ws0, rec = out.result, out.ws_encoder, out.degraded  # the input is compared with degrade(G(w))
        chosen = [d.to_dict() for d in out.degradations]
        plain = [i for i, d in enumerate(cfg.grid) if d.is_identity]
        gain = (out.losses[:, plain[0]] - res.final_loss) if plain else torch.zeros(N)
        extra = [torch.tensor([d["blur_sigma"] for d in chosen]), torch.tensor([d["scale"] for d in chosen]), gain]
    else:
        res, ws0 = invert(G, images, encoder=encoder, perceptual=perceptual, cfg=cfg)
        rec = res.images
    t2 = time.perf_counter()
    t1 = t2 - res.timings["total_s"]  # the encoder's guess took the rest
    with torch.no_grad():
        diff = rec - images
        mse = diff.square().mean(dim=[1, 2, 3])
        mae = diff.abs().mean(dim=[1, 2, 3])
        psnr = 10 * torch.log10(4.0 / mse.clamp_min(1e-10))
        # the input's side of the distance as the inversion computed it (the same images, the same net)
        pc = perceptual.compare(rec, images, spatial=explain, y_features=res.target_features)
        blocks, d_cols = _d_features(D, images, rec)
        w_avg = G.w_avg.view(1, 1, -1)
        w_dist = (res.ws - w_avg).norm(dim=2).mean(1)
        shift = (res.ws - ws0).norm(dim=2).mean(1)
        first = res.loss_history[0] if len(res.loss_history) else res.final_loss
        last = res.final_loss
        cols = [mse, mae, psnr, pc["total"], *pc["stages"].T, *d_cols, w_dist, shift,
                first.to(images.device), last.to(images.device)]
        cols += [cols[-2] - cols[-1], (cols[-2] - cols[-1]) / cols[-2].clamp_min(1e-8)]
        cols += [c.to(images.device) for c in extra]
        values = torch.stack([c.double().cpu() for c in cols], dim=1)
    t3 = time.perf_counter()
    names = feature_names(perceptual.num_stages, blocks, degradation=bool(cfg.degradations))
    assert values.shape[1] == len(names), (values.shape, len(names))
    per = 1000.0 / max(N, 1)
    return FeatureBatch(
        values=values, names=names, reconstructions=rec.detach(), degradations=chosen,
        pixel_map=diff.abs().mean(dim=1, keepdim=True) if explain else None,
        perceptual_map=pc.get("map"),
        timings_ms={"encode": (t1 - t0) * per, "refine": (t2 - t1) * per, "features": (t3 - t2) * per},
        ws=res.ws.detach(),
    )


def is_finite(values: torch.Tensor) -> bool:
    return bool(torch.isfinite(values).all()) and not math.isnan(float(values.sum()))
