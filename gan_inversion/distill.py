"""Distilling the refinement into the encoder: a guess that lands where the projector's steps would end.

The hybrid inversion (encoder guess + K projector steps) spends nearly all of its time in the K steps. A student
encoder trained to predict the refined codes themselves (teacher targets: the refined ws of photos and samples,
computed once by whoever owns the refinement's settings, e.g. detector/fitting/distill.py) needs few or no steps
afterwards. Its loss, per image: the squared distance of its guess to the refined code (averaged over layers in
W, as the refinement in W does) plus the image loss between their two syntheses (perceptual + pixel MSE, as the
projector's), so that it also reconstructs like the refinement where the code space is flat.

`train_distilled` is resumable (the encoder file is saved every `checkpoint_every` steps with its optimizer) and
writes an ordinary encoder file (gan_inversion.encoder.load_encoder reads it), which records what it was distilled
from.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoints import read_checkpoint
from .data import to_float
from .encoder import Encoder, _save_encoder, open_encoder_run
from .networks import Generator
from .perceptual import PerceptualDistance
from .projector import reconstruction_loss


@dataclass(frozen=True)
class DistillConfig:
    steps: int = 2000
    batch: int = 64
    lr: float = 1e-4
    latent_weight: float = 1.0   # squared distance to the refined code, per w dimension
    image_weight: float = 1.0    # perceptual + pixel MSE between G(guess) and G(refined code)
    pixel_weight: float = 1.0    # the image loss's lambda (as the projector's)
    space: str = "W"             # the refinement's space: in W the guess is compared after its mean over layers
    val_fraction: float = 0.05   # targets held out to report the latent error on
    checkpoint_every: int = 250
    seed: int = 0


def latent_error(pred: torch.Tensor, target: torch.Tensor, space: str) -> torch.Tensor:
    """Per image mean squared difference of guess and refined code, [N] (in W: the guess's mean over layers)."""
    if space == "W":
        pred, target = pred.mean(dim=1), target.mean(dim=1)
    return (pred - target).square().flatten(1).mean(1)


def _as_ws(pred: torch.Tensor, space: str) -> torch.Tensor:
    """What the refinement would start from: in W, the guess's mean over layers broadcast to every layer."""
    return pred.mean(dim=1, keepdim=True).expand_as(pred) if space == "W" else pred


def _plain(d: dict) -> dict:
    """As JSON would hold it (tuples as lists), to compare what a file records with what a caller gives."""
    return json.loads(json.dumps(d))


def split_targets(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices) of n targets, by a seeded permutation."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction))
    return perm[n_val:], perm[:n_val]


@torch.no_grad()
def evaluate_student(E: Encoder, G: Generator, images_u8: torch.Tensor, targets: torch.Tensor, *, space: str,
                     batch: int = 256, device="cpu") -> dict:
    """Mean latent error of E's guesses against the refined codes, and of the same images' syntheses (pixel MSE)."""
    lat, pix = [], []
    for i in range(0, len(images_u8), batch):
        x = to_float(images_u8[i:i + batch]).to(device)
        t = targets[i:i + batch].to(device)
        pred = E(x)
        lat.append(latent_error(pred, t, space).cpu())
        a = G.synthesis(_as_ws(pred, space), noise_mode="const")
        b = G.synthesis(t, noise_mode="const")
        pix.append((a - b).square().mean(dim=[1, 2, 3]).cpu())
    return {"latent": float(torch.cat(lat).mean()), "synthesis_mse": float(torch.cat(pix).mean())}


def _distill_step(E: Encoder, opt: torch.optim.Optimizer, G: Generator, x: torch.Tensor, t: torch.Tensor, *,
                  perceptual: PerceptualDistance, cfg: DistillConfig) -> dict[str, float]:
    """One step on images x [B, C, H, W] and their refined codes t [B, num_ws, w_dim]; the step's losses."""
    pred = E(x)  # [B, num_ws, w_dim]
    lat = latent_error(pred, t, cfg.space).mean()
    loss, out = cfg.latent_weight * lat, {}
    if cfg.image_weight > 0:
        with torch.no_grad():
            teacher_img = G.synthesis(t, noise_mode="const")
        img = reconstruction_loss(perceptual, G.synthesis(_as_ws(pred, cfg.space), noise_mode="const"), teacher_img,
                                  cfg.pixel_weight).mean()
        loss = loss + cfg.image_weight * img
        out["image"] = float(img.detach())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {**out, "latent": float(lat.detach()), "loss": float(loss.detach())}


def train_distilled(
    path: str | Path,
    G: Generator,
    images_u8: torch.Tensor,     # [N, C, H, W] uint8: the images the targets were refined from
    targets: torch.Tensor,       # [N, num_ws, w_dim] their refined codes
    *,
    perceptual: PerceptualDistance,
    init_from: str | Path,
    cfg: DistillConfig = DistillConfig(),
    source: dict | None = None,
    device="cpu",
    max_seconds: float | None = None,
    progress: bool = True,
    log_path: str | Path | None = None,
) -> Path:
    """Train (or resume) a student encoder at `path`, starting from the encoder at `init_from`, to predict the
    refined codes `targets` of `images_u8`. `source` (what the targets came from: the refinement's settings, the
    image set) is recorded in the file. `max_seconds` ends this call early on a saved, resumable state."""
    if images_u8.dtype != torch.uint8 or images_u8.ndim != 4:
        raise ValueError(f"images must be uint8 [N, C, H, W], got {images_u8.dtype} {list(images_u8.shape)}")
    if targets.shape != (len(images_u8), G.num_ws, G.w_dim):
        raise ValueError(f"targets must be [{len(images_u8)}, {G.num_ws}, {G.w_dim}], got {list(targets.shape)}")
    path = Path(path)
    G, G_fp, E, opt, step, elapsed0, init_info = open_encoder_run(path, G, cfg, backend=perceptual.backend_id,
                                                                  init_from=init_from, device=device)
    recorded = read_checkpoint(path).get("distilled_from", source) if path.exists() and source is not None else source
    if _plain(recorded or {}) != _plain(source or {}):
        raise ValueError(f"{path}: this student was distilled from other targets; use a new path")
    train_idx, val_idx = split_targets(len(images_u8), cfg.val_fraction, cfg.seed)
    targets = targets.float()
    t0 = time.time()
    sums: dict[str, float] = {}
    n_sum = 0
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="distil", unit="step", dynamic_ncols=True)
    while step < cfg.steps:
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = train_idx[torch.randint(len(train_idx), (cfg.batch,), generator=gen)]
        losses = _distill_step(E, opt, G, to_float(images_u8[idx]).to(device), targets[idx].to(device),
                               perceptual=perceptual, cfg=cfg)
        step += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v
        n_sum += 1
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(latent=f"{sums['latent'] / n_sum:.4f}")
        out_of_time = max_seconds is not None and time.time() - t0 >= max_seconds
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
            metrics = {k: round(v / n_sum, 6) for k, v in sums.items()}
            if len(val_idx):
                E.eval()
                val = evaluate_student(E, G, images_u8[val_idx], targets[val_idx], space=cfg.space, device=device)
                E.train()
                metrics.update({f"val_{k}": round(v, 6) for k, v in val.items()})
            _save_encoder(path, E, G_fp=G_fp, backend=perceptual.backend_id, cfg=cfg, step=step, opt=opt,
                          elapsed_s=elapsed0 + time.time() - t0, metrics=metrics, init_from=init_info,
                          extra={"distilled_from": dict(source or {})})
            if log_path is not None:
                with open(log_path, "a") as f:
                    f.write(json.dumps({"step": step, **metrics}) + "\n")
            sums, n_sum = {}, 0
        if out_of_time:
            break
    bar.close()
    ckpt = read_checkpoint(path) if step >= cfg.steps else {}
    if "opt" in ckpt:
        # resumed with a step count it had already reached (a run cut short and accepted as it is): stored slim,
        # as a run that ends on its last step is, with the metrics of its last save
        _save_encoder(path, E, G_fp=G_fp, backend=perceptual.backend_id, cfg=cfg, step=step, opt=None,
                      elapsed_s=ckpt["elapsed_s"], metrics=ckpt["metrics"], init_from=init_info,
                      extra={"distilled_from": dict(source or {})})
    return path
