"""Optimisation-based projection of images into a StyleGAN2 latent space (as NVIDIA's StyleGAN2 projector).

`project(G, target, perceptual=..., cfg=...)` is a pure function: Adam on the latents (W: one w per
image; W+: one w per layer), learning-rate ramp-up/ramp-down, decaying latent noise, loss = perceptual
distance + pixel_weight * pixel MSE, optional noise-map optimisation with the multi-scale
autocorrelation regulariser. It never mutates G (gradients are taken w.r.t. the latents only).

Batched targets are independent: the loss is a sum of per-image losses, Adam is element-wise, and every
image draws its random numbers from its own identically seeded generator, so an image's result does not
depend on its batch mates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .networks import Generator
from .perceptual import PerceptualDistance

SPACES = ("W", "W+")


@dataclass(frozen=True)
class ProjectConfig:
    num_steps: int = 100
    space: str = "W"                    # 'W' (one w broadcast to all layers) or 'W+' (one w per layer)
    initial_lr: float = 0.1
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    initial_noise_factor: float = 0.05  # latent noise, as a fraction of w's spread, decaying to 0
    noise_ramp_length: float = 0.75
    pixel_weight: float = 1.0           # lambda in perceptual + lambda * MSE
    optimize_noise: bool = False        # also fit the per-layer noise maps
    regularize_noise_weight: float = 1e5
    w_std_samples: int = 2000
    seed: int = 0

    def __post_init__(self):
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if self.num_steps < 0:
            raise ValueError("num_steps must be >= 0")


@dataclass
class ProjectionResult:
    ws: torch.Tensor               # [N, num_ws, w_dim] final latents (no latent noise)
    images: torch.Tensor           # [N, C, H, W] re-synthesis at ws
    loss_history: torch.Tensor     # [num_steps, N] per-image loss at each step (before its update)
    final_loss: torch.Tensor       # [N] loss of the returned reconstruction
    noise: list[torch.Tensor] | None = None  # optimised noise maps, if any
    timings: dict = field(default_factory=dict)
    target_features: list[torch.Tensor] | None = None  # perceptual.target_features(target), as the loss used them


@torch.no_grad()
def w_spread(G: Generator, *, num_samples: int = 2000, seed: int = 123) -> float:
    """Root-mean-square distance of mapped w from w_avg (scales the latent noise)."""
    device = G.w_avg.device
    z = torch.randn(num_samples, G.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    w = G.mapping(z)[:, 0]
    return float((w - G.w_avg).square().sum(1).mean().sqrt())


def noise_regularization(noise: list[torch.Tensor]) -> torch.Tensor:
    """Per-image multi-scale autocorrelation of the noise maps: [N]."""
    reg = 0.0
    for n in noise:
        while True:
            reg = reg + (n * torch.roll(n, 1, dims=3)).mean(dim=[1, 2, 3]).square()
            reg = reg + (n * torch.roll(n, 1, dims=2)).mean(dim=[1, 2, 3]).square()
            if n.shape[-1] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return reg


def _per_image_randn(gens: list[torch.Generator], shape: tuple[int, ...], device) -> torch.Tensor:
    return torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device)


def reconstruction_loss(perceptual: PerceptualDistance, synth: torch.Tensor, target: torch.Tensor,
                        pixel_weight: float, *, target_features: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Per-image loss [N]: perceptual distance + pixel_weight * MSE (target_features: the target's side of the
    perceptual distance, computed once by perceptual.target_features(target))."""
    return (perceptual(synth, target, y_features=target_features)
            + pixel_weight * (synth - target).square().mean(dim=[1, 2, 3]))


def schedule(cfg: ProjectConfig, step: int) -> tuple[float, float]:
    """(learning rate, latent-noise strength) at `step`: a cosine ramp-down and an optional ramp-up of the rate,
    the noise decaying quadratically over `noise_ramp_length`."""
    t = step / cfg.num_steps
    noise_strength = cfg.initial_noise_factor * max(0.0, 1.0 - t / cfg.noise_ramp_length) ** 2
    lr_ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown_length)
    lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
    lr_ramp = lr_ramp * min(1.0, t / cfg.lr_rampup_length) if cfg.lr_rampup_length > 0 else lr_ramp
    return cfg.initial_lr * lr_ramp, noise_strength


def _initial_latent(G: Generator, target: torch.Tensor, cfg: ProjectConfig, ws_init: torch.Tensor | None
                    ) -> torch.Tensor:
    """The optimised latent: [N, w_dim] in W (the mean of ws_init over layers), [N, num_ws, w_dim] in W+."""
    syn, N = G.synthesis, target.shape[0]
    if target.ndim != 4 or target.shape[1:] != (syn.img_channels, syn.img_resolution, syn.img_resolution):
        raise ValueError(f"targets must be [N, {syn.img_channels}, {syn.img_resolution}, {syn.img_resolution}], "
                         f"got {list(target.shape)}")
    if ws_init is None:
        ws_init = G.w_avg.detach().view(1, 1, -1).expand(N, G.num_ws, -1)
    if ws_init.shape != (N, G.num_ws, G.w_dim):
        raise ValueError(f"ws_init must be [{N}, {G.num_ws}, {G.w_dim}], got {list(ws_init.shape)}")
    latent = (ws_init.mean(dim=1) if cfg.space == "W" else ws_init).detach().clone().to(target.device)
    return latent.requires_grad_(True)


@torch.no_grad()
def synthesize_start(G: Generator, target: torch.Tensor, *, space: str = "W", ws_init: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where `project` starts, without a step: the latents ws [N, num_ws, w_dim] (ws_init, or w_avg; averaged over
    layers in W) and their synthesis [N, C, H, W] with constant noise: what project(..., num_steps=0) returns as ws
    and images, without its loss (scoring a guess under several degradations computes those itself)."""
    latent = _initial_latent(G, target, ProjectConfig(num_steps=0, space=space), ws_init).detach()
    ws = latent.unsqueeze(1).repeat(1, G.num_ws, 1) if space == "W" else latent
    return ws, G.synthesis(ws, noise_mode="const")


def project(
    G: Generator,
    target: torch.Tensor,
    *,
    perceptual: PerceptualDistance,
    cfg: ProjectConfig = ProjectConfig(),
    ws_init: torch.Tensor | None = None,
    w_std: float | None = None,
    degradation: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ProjectionResult:
    """Project target images [N, C, H, W] in [-1, 1] into G's latent space.

    ws_init: starting latents [N, num_ws, w_dim] (e.g. from the encoder); default w_avg. In W space the
    start is their mean over layers. w_std: spread of w, which scales the latent noise (computed from G when
    the config asks for latent noise and it is not given). degradation: a differentiable image -> image map
    (gan_inversion.degradation) applied to the synthesis before the loss, so the target is explained as
    degradation(G(w)); the returned images stay G(w).
    """
    degrade = degradation if degradation is not None else (lambda x: x)
    t0 = time.perf_counter()
    syn = G.synthesis
    N, device = target.shape[0], target.device
    latent = _initial_latent(G, target, cfg, ws_init)
    target = target.detach()
    if w_std is None and cfg.initial_noise_factor > 0:
        w_std = w_spread(G, num_samples=cfg.w_std_samples)
    gens = [torch.Generator().manual_seed(cfg.seed) for _ in range(N)]

    noise = None
    if cfg.optimize_noise:  # per-image noise maps, optimised with the latent
        noise = [_per_image_randn(gens, (1, layer.resolution, layer.resolution), device).requires_grad_(True)
                 for layer in syn.layers()]
    params = [latent] + (noise or [])
    opt = torch.optim.Adam(params, betas=(0.9, 0.999), lr=cfg.initial_lr)

    def to_ws(lat: torch.Tensor) -> torch.Tensor:
        return lat.unsqueeze(1).repeat(1, G.num_ws, 1) if cfg.space == "W" else lat  # [N, num_ws, w_dim]

    def synth(ws: torch.Tensor) -> torch.Tensor:
        return syn(ws, noise=noise) if noise is not None else syn(ws, noise_mode="const")

    target_features = perceptual.target_features(target)  # the target's side, computed once
    history = []
    for step in range(cfg.num_steps):
        lr, noise_strength = schedule(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr

        if noise_strength > 0:  # latent noise (optimisation from w_avg); none in the hybrid refinement
            latent_in = latent + _per_image_randn(gens, tuple(latent.shape[1:]), device) * (w_std * noise_strength)
        else:
            latent_in = latent
        img = synth(to_ws(latent_in))
        per_image = reconstruction_loss(perceptual, degrade(img), target, cfg.pixel_weight,
                                        target_features=target_features)
        history.append(per_image.detach().cpu())
        total = per_image
        if noise is not None:
            total = total + cfg.regularize_noise_weight * noise_regularization(noise)
        grads = torch.autograd.grad(total.sum(), params)  # latents (and noise) only: G is never touched
        opt.zero_grad(set_to_none=True)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt.step()
        if noise is not None:
            with torch.no_grad():
                for n in noise:
                    n.sub_(n.mean(dim=[1, 2, 3], keepdim=True)).div_(n.std(dim=[1, 2, 3], keepdim=True) + 1e-8)
    with torch.no_grad():
        ws = to_ws(latent.detach())
        images = synth(ws)
        final = reconstruction_loss(perceptual, degrade(images), target, cfg.pixel_weight,
                                    target_features=target_features)
    elapsed = time.perf_counter() - t0
    return ProjectionResult(
        ws=ws, images=images, final_loss=final.cpu(), target_features=target_features,
        loss_history=torch.stack(history) if history else torch.zeros(0, N),
        noise=[n.detach() for n in noise] if noise is not None else None,
        timings={"total_s": elapsed, "ms_per_image": 1000 * elapsed / max(N, 1), "steps": cfg.num_steps},
    )
