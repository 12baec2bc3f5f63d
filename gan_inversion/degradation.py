"""Degradation-aware inversion: explain an image as degrade(G(w)) instead of G(w).

A generator reproduces its own samples almost exactly, but a blurred or down-up resized sample of its own is
no longer in its range, so plain inversion makes it look like a photo. With a differentiable model of the
degradation inside the reconstruction loss, the generator explains a blurred sample of its own as blur(G(w));
a blurred photo it still cannot. Which degradation an image went through is not known: `invert_degraded`
tries a small grid of candidates and keeps, per image, the one whose inversion reconstructs it best.

The degradations mirror `detector.laundering` (Pillow): Gaussian blur of standard deviation `blur_sigma`
pixels (edges replicated), and down-up resize by `scale` (antialiased bilinear down, bilinear up).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .encoder import Encoder, InvertConfig, invert
from .networks import Generator
from .perceptual import PerceptualDistance
from .projector import ProjectionResult, reconstruction_loss, synthesize_start


@dataclass(frozen=True)
class Degradation:
    blur_sigma: float = 0.0   # Gaussian blur, pixels (0: none)
    scale: float = 1.0        # down-up resize factor in (0, 1] (1: none)

    def __post_init__(self):
        if self.blur_sigma < 0 or not 0 < self.scale <= 1:
            raise ValueError(f"blur_sigma must be >= 0 and scale in (0, 1], got {self}")

    @property
    def is_identity(self) -> bool:
        return self.blur_sigma == 0 and self.scale == 1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to images [N, C, H, W] (differentiable)."""
        if self.scale < 1:
            x = down_up(x, self.scale)
        if self.blur_sigma > 0:
            x = gaussian_blur(x, self.blur_sigma)
        return x

    def to_dict(self) -> dict:
        return {"blur_sigma": self.blur_sigma, "scale": self.scale}


# The candidates searched by default: none, blur, down-up resize (the laundering seen in practice).
DEFAULT_GRID = (Degradation(), Degradation(blur_sigma=0.6), Degradation(blur_sigma=1.0),
                Degradation(blur_sigma=1.5), Degradation(scale=0.75), Degradation(scale=0.5))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur [N, C, H, W], kernel radius ceil(3 sigma), replicated edges."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    C = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def down_up(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Down-scale by `scale` (antialiased bilinear, as Pillow does) and back up (bilinear) [N, C, H, W]."""
    H, W = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(H * scale)), max(1, round(W * scale))), mode="bilinear",
                          antialias=True, align_corners=False)
    return F.interpolate(small, size=(H, W), mode="bilinear", align_corners=False)


class PerImageDegradation:
    """A differentiable map that applies each image its own degradation ([N, C, H, W], one per image)."""

    def __init__(self, degradations: list[Degradation]):
        self.degradations = list(degradations)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.degradations) != x.shape[0]:
            raise ValueError(f"{len(self.degradations)} degradations for {x.shape[0]} images")
        out = [None] * x.shape[0]
        for d in dict.fromkeys(self.degradations):  # one call per distinct degradation, order kept
            idx = [i for i, di in enumerate(self.degradations) if di == d]
            y = d(x[idx])
            for k, i in enumerate(idx):
                out[i] = y[k]
        return torch.stack(out)


@dataclass
class DegradedInversion:
    result: ProjectionResult            # per image, the inversion under its chosen degradation
    ws_encoder: torch.Tensor            # [N, num_ws, w_dim] the encoder's guess
    degradations: list[Degradation]     # per image, the one chosen
    losses: torch.Tensor                # [N, len(grid)] final loss of each candidate
    degraded: torch.Tensor              # [N, C, H, W] degrade(G(w)): what the input is compared with


SCORE_PASS = 64  # images per perceptual pass when candidates are scored on the guess (measured, issue #31)


def _score_on_guess(G: Generator, target: torch.Tensor, *, perceptual: PerceptualDistance, cfg: InvertConfig,
                    grid: tuple[Degradation, ...], ws_init: torch.Tensor | None
                    ) -> list[tuple[ProjectionResult, torch.Tensor]]:
    """Every candidate without a refinement step: one synthesis from the first guess, one pass of the target
    through the perceptual net, then each candidate's loss on degrade(G(w)) (what `invert` with 0 steps gives
    per candidate, without recomputing the shared parts)."""
    t0 = time.perf_counter()
    N, k = target.shape[0], len(grid)
    ws, images = synthesize_start(G, target, space=cfg.space, ws_init=ws_init)  # [N, num_ws, w_dim], [N, C, H, W]
    ws0 = ws_init.detach() if ws_init is not None else G.w_avg.view(1, 1, -1).expand(N, G.num_ws, -1).clone()
    tf = perceptual.target_features(target)
    base = ProjectionResult(ws=ws, images=images, loss_history=torch.zeros(0, N), final_loss=torch.zeros(N),
                            target_features=tf)
    # Candidates go through the perceptual net together, about SCORE_PASS images a pass: a small batch's
    # candidates in one pass (batch-1 convolutions take slow kernels), a large batch's one candidate at a time
    # (larger passes measured slower on CPU). Per-image results do not depend on the grouping.
    per_pass = max(1, SCORE_PASS // max(N, 1))
    finals = []
    with torch.no_grad():
        for a in range(0, k, per_pass):
            group = grid[a:a + per_pass]
            m = len(group)
            degraded = torch.cat([d(base.images) for d in group])  # [m*N, C, H, W], candidate-major
            losses = reconstruction_loss(perceptual, degraded, target.repeat(m, 1, 1, 1), cfg.pixel_weight,
                                         target_features=[f.repeat(m, *([1] * (f.ndim - 1))) for f in tf])
            finals += list(losses.cpu().view(m, N))
    runs = [(dataclasses.replace(base, final_loss=f, timings={"total_s": 0.0}), ws0) for f in finals]
    runs[0][0].timings["total_s"] = time.perf_counter() - t0
    return runs


def invert_degraded(G: Generator, target: torch.Tensor, *, encoder: Encoder | None, perceptual: PerceptualDistance,
                    cfg: InvertConfig = InvertConfig(),
                    grid: tuple[Degradation, ...] = DEFAULT_GRID, search_steps: int | None = None
                    ) -> DegradedInversion:
    """Hybrid inversion under each candidate degradation; per image, the candidate with the lowest loss.

    search_steps=None: every candidate gets the full `cfg.refine_steps` (cost: len(grid) inversions).
    search_steps=k (0 <= k < refine_steps): every candidate gets k steps, the best per image is kept and
    refined for the remaining refine_steps - k steps under its own degradation (cost: len(grid) * k +
    refine_steps - k steps). Every step is per-image independent, so the choice for one image does not depend
    on the others in the batch.
    """
    if not grid:
        raise ValueError("the degradation grid is empty")
    K = cfg.refine_steps
    if search_steps is not None and not 0 <= search_steps < K:
        raise ValueError(f"search_steps must be in [0, {K}) (refine_steps), got {search_steps}")
    search_cfg = cfg if search_steps is None else dataclasses.replace(cfg, refine_steps=search_steps)
    ws0 = None
    if encoder is not None:  # the encoder's guess, once for every candidate
        with torch.no_grad():
            ws0 = encoder(target)  # [N, num_ws, w_dim]
    if search_cfg.refine_steps == 0:
        runs = _score_on_guess(G, target, perceptual=perceptual, cfg=search_cfg, grid=grid, ws_init=ws0)
    else:
        runs = [invert(G, target, encoder=None, perceptual=perceptual, cfg=search_cfg, degradation=d,
                       ws_init=ws0) for d in grid]
    losses = torch.stack([r.final_loss for r, _ in runs], dim=1)  # [N, len(grid)]
    best = losses.argmin(dim=1)
    pick = lambda field: torch.stack([getattr(runs[int(j)][0], field)[i] for i, j in enumerate(best)])  # noqa: E731
    chosen = [grid[int(j)] for j in best]
    history = torch.stack([runs[int(j)][0].loss_history[:, i] for i, j in enumerate(best)], dim=1)  # [k, N]
    total_s = sum(r.timings["total_s"] for r, _ in runs)
    if search_steps is None:
        ws, images, final = pick("ws"), pick("images"), losses.gather(1, best[:, None])[:, 0]
    else:  # continue the chosen candidates (ws [N, num_ws, w_dim] are their latents after the search)
        rest = dataclasses.replace(cfg, refine_steps=K - search_steps)
        cont, _ = invert(G, target, encoder=None, perceptual=perceptual, cfg=rest,
                         degradation=PerImageDegradation(chosen), ws_init=pick("ws"))
        ws, images, final = cont.ws, cont.images, cont.final_loss
        history = torch.cat([history, cont.loss_history])
        total_s += cont.timings["total_s"]
    result = ProjectionResult(ws=ws, images=images, final_loss=final, loss_history=history,
                              timings={"total_s": total_s, "candidates": len(grid), "search_steps": search_steps},
                              target_features=runs[0][0].target_features)  # the same target in every run
    with torch.no_grad():
        degraded = torch.cat([d(images[i:i + 1]) for i, d in enumerate(chosen)])
    return DegradedInversion(result=result, ws_encoder=runs[0][1], degradations=chosen, losses=losses,
                             degraded=degraded)
