"""Encoder image -> W+ (offsets from w_avg), its training, and hybrid inversion (encoder + a few projector steps).

The encoder is a compact residual CNN without batch statistics (each image's code depends on that image
only). It is trained on generator samples, whose latents are known (latent loss + image losses), and on
real train-split images (pixel + perceptual reconstruction loss, plus a regulariser that keeps codes in
the generator's domain: close to w_avg and with little spread across layers, as e4e does).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .checkpoints import BundleError, atomic_save, half_state, load_float_state, read_checkpoint
from .data import ImageDataset, to_float
from .networks import Generator, channels_at, style_mix
from .perceptual import PerceptualDistance
from .projector import ProjectConfig, ProjectionResult, project, reconstruction_loss

ENCODER_FORMAT = "resynth-encoder"


def weights_fingerprint(module: nn.Module) -> str:
    """Content hash of a network's weights (a generator's, an encoder's), independent of the file they came
    from and of the precision they were stored in."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class EncoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, stride=2)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x):
        y = self.conv1(F.leaky_relu(self.conv0(F.leaky_relu(x, 0.2)), 0.2))
        return (y + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


class Encoder(nn.Module):
    def __init__(
        self,
        img_resolution: int = 32,   # Input resolution (a power of two).
        img_channels: int = 1,      # Input colour channels.
        num_ws: int = 8,            # Number of W+ rows to predict (the generator's num_ws).
        w_dim: int = 128,           # Dimensionality of each w.
        channel_base: int = 2048,   # Channels at resolution res: min(channel_base / res, channel_max).
        channel_max: int = 128,
        hidden: int = 512,          # Width of the fully connected head.
    ):
        super().__init__()
        self.init_kwargs = dict(img_resolution=img_resolution, img_channels=img_channels, num_ws=num_ws, w_dim=w_dim,
                                channel_base=channel_base, channel_max=channel_max, hidden=hidden)
        self.img_resolution, self.img_channels, self.num_ws, self.w_dim = img_resolution, img_channels, num_ws, w_dim
        ch = lambda r: channels_at(r, channel_base, channel_max)  # noqa: E731
        self.fromimg = nn.Conv2d(img_channels, ch(img_resolution), 3, padding=1)
        blocks, res = [], img_resolution
        while res > 4:
            blocks.append(EncoderBlock(ch(res), ch(res // 2)))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(ch(4) * 16, hidden)
        self.out = nn.Linear(hidden, num_ws * w_dim)
        nn.init.zeros_(self.out.weight)  # start at w_avg
        nn.init.zeros_(self.out.bias)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img [N, C, H, W] in [-1, 1] -> ws [N, num_ws, w_dim]."""
        if img.ndim != 4 or img.shape[1:] != (self.img_channels, self.img_resolution, self.img_resolution):
            raise ValueError(f"encoder expects [N, {self.img_channels}, {self.img_resolution}, "
                             f"{self.img_resolution}], got {list(img.shape)}")
        x = self.blocks(self.fromimg(img))
        x = F.leaky_relu(self.fc(F.leaky_relu(x, 0.2).flatten(1)), 0.2)
        return self.w_avg + self.out(x).view(-1, self.num_ws, self.w_dim)


def encoder_for(G: Generator, **kwargs) -> Encoder:
    E = Encoder(img_resolution=G.img_resolution, img_channels=G.img_channels, num_ws=G.num_ws, w_dim=G.w_dim,
                **kwargs)
    with torch.no_grad():
        E.w_avg.copy_(G.w_avg)
    return E


@dataclass(frozen=True)
class EncoderTrainConfig:
    steps: int = 3000
    batch_fake: int = 16
    batch_real: int = 16
    lr: float = 2e-4
    latent_weight: float = 1.0     # MSE to the known ws of generator samples
    pixel_weight: float = 1.0      # image loss = perceptual + pixel_weight * MSE
    reg_weight: float = 0.05       # real images: mean |ws - w_avg|^2 + layer spread
    mixing_prob: float = 0.5       # style-mixed samples teach W+ codes that stay in-domain
    checkpoint_every: int = 250
    seed: int = 0


def _save_encoder(path: Path, E: Encoder, *, G_fp: str, backend: str, cfg: EncoderTrainConfig, step: int,
                  opt: torch.optim.Optimizer | None, elapsed_s: float, metrics: dict,
                  init_from: dict | None = None, extra: dict | None = None) -> None:
    finished = step >= cfg.steps
    # A finished encoder is stored slim (fp16, no optimizer state); a run extended later restarts Adam.
    sd = half_state(E) if finished else E.state_dict()
    obj = {"format": ENCODER_FORMAT, "arch": dict(E.init_kwargs), "state_dict": sd,
           "generator_fingerprint": G_fp, "perceptual": backend, "config": dataclasses.asdict(cfg),
           "step": step, "elapsed_s": elapsed_s, "metrics": dict(metrics)}
    if init_from is not None:
        obj["init_from"] = dict(init_from)
    obj.update(extra or {})  # e.g. a distilled student's `distilled_from` (gan_inversion/distill.py)
    if opt is not None and not finished:
        obj["opt"] = opt.state_dict()
    atomic_save(obj, path)


def load_encoder(path: str | Path, *, G: Generator | None = None, device="cpu") -> tuple[Encoder, dict]:
    """Load an encoder; with G given, refuse one trained for another generator."""
    obj = read_checkpoint(path)
    if obj.get("format") != ENCODER_FORMAT:
        raise BundleError(f"{path}: not a resynth encoder file")
    if G is not None and obj["generator_fingerprint"] != weights_fingerprint(G):
        raise BundleError(f"{path}: this encoder was trained for another generator "
                          f"(fingerprint {obj['generator_fingerprint'][:12]}…)")
    E = Encoder(**obj["arch"])
    try:
        load_float_state(E, obj["state_dict"])
    except RuntimeError as exc:
        raise BundleError(f"{path}: encoder weights do not match its architecture: {exc}") from exc
    info = {k: obj[k] for k in ("generator_fingerprint", "perceptual", "config", "step", "elapsed_s", "metrics")}
    info["init_from"] = obj.get("init_from")
    info["distilled_from"] = obj.get("distilled_from")
    return E.to(device).eval().requires_grad_(False), info


def _start_encoder(path: Path, E: Encoder, opt: torch.optim.Optimizer, G: Generator, *, G_fp: str,
                   cfg: EncoderTrainConfig, backend: str, init_from: str | Path | None
                   ) -> tuple[int, float, dict | None]:
    """Resume E and its optimizer from `path`, or start from `init_from`'s weights; (step, elapsed s, init info)."""
    if path.exists():
        obj = read_checkpoint(path)
        if obj.get("generator_fingerprint") != G_fp:
            raise BundleError(f"{path}: existing encoder was trained for another generator; use a new path")
        same = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "steps"}
        if {k: v for k, v in (obj.get("config") or {}).items() if k != "steps"} != same \
                or obj.get("perceptual") != backend:
            raise BundleError(f"{path}: existing encoder used another config or perceptual backend; use a new path")
        load_float_state(E, obj["state_dict"])
        if "opt" in obj:
            opt.load_state_dict(obj["opt"])
        return obj["step"], obj.get("elapsed_s", 0.0), obj.get("init_from")
    if init_from is None:
        return 0, 0.0, None
    E0, info0 = load_encoder(init_from)
    if E0.init_kwargs != E.init_kwargs:
        raise BundleError(f"{init_from}: encoder shape {E0.init_kwargs} does not fit this generator's {E.init_kwargs}")
    E.load_state_dict(E0.state_dict())
    with torch.no_grad():
        E.w_avg.copy_(G.w_avg)
    return 0, 0.0, {"path": str(init_from), "generator_fingerprint": info0["generator_fingerprint"],
                    "steps": info0["step"], "perceptual": info0["perceptual"]}


def open_encoder_run(path: Path, G: Generator, cfg, *, backend: str, init_from: str | Path | None, device):
    """What a training run of an encoder for G starts from (cfg: its dataclass, with `seed` and `lr`): G frozen on
    the device and its fingerprint, the encoder and its Adam, resumed from `path` or started from `init_from`
    (_start_encoder); returns (G, G fingerprint, E, optimizer, step, elapsed s, init info)."""
    G = G.eval().requires_grad_(False).to(device)
    G_fp = weights_fingerprint(G)
    torch.manual_seed(cfg.seed)
    E = encoder_for(G).to(device).train()
    opt = torch.optim.Adam(E.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    step, elapsed0, init_info = _start_encoder(path, E, opt, G, G_fp=G_fp, cfg=cfg, backend=backend,
                                               init_from=init_from)
    return G, G_fp, E, opt, step, elapsed0, init_info


def _encoder_step(E: Encoder, opt: torch.optim.Optimizer, G: Generator, reals: ImageDataset, *,
                  perceptual: PerceptualDistance, cfg: EncoderTrainConfig, step: int, device) -> dict:
    """One step on generator samples (their latents known) and real photos; the step's losses (on the device)."""
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    z = torch.randn(cfg.batch_fake, G.z_dim, generator=gen).to(device)
    z2 = torch.randn(cfg.batch_fake, G.z_dim, generator=gen).to(device)
    with torch.no_grad():
        ws = style_mix(G.mapping(z), G.mapping(z2), prob=cfg.mixing_prob, generator=gen)
        noise = [n.to(device) for n in G.synthesis.make_noise(cfg.batch_fake, generator=gen, device="cpu")]
        fakes = G.synthesis(ws, noise=noise)
    idx = torch.randint(len(reals), (cfg.batch_real,), generator=gen)
    real = to_float(reals.get_batch(idx)).to(device)
    target = torch.cat([fakes, real])
    pred = E(target)  # [Bf + Br, num_ws, w_dim]
    recon = G.synthesis(pred, noise_mode="const")
    img_loss = reconstruction_loss(perceptual, recon, target, cfg.pixel_weight)
    lat_loss = (pred[: cfg.batch_fake] - ws).square().mean()
    pr = pred[cfg.batch_fake:]
    reg = (pr - E.w_avg).square().mean() + (pr - pr.mean(dim=1, keepdim=True)).square().mean()
    loss = img_loss.mean() + cfg.latent_weight * lat_loss + cfg.reg_weight * reg
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"loss": loss, "img_fake": img_loss[: cfg.batch_fake].mean(), "img_real": img_loss[cfg.batch_fake:].mean(),
            "latent": lat_loss, "reg": reg}


def train_encoder(
    path: str | Path,
    G: Generator,
    reals: ImageDataset,
    *,
    perceptual: PerceptualDistance,
    cfg: EncoderTrainConfig = EncoderTrainConfig(),
    device="cpu",
    max_steps: int | None = None,
    max_seconds: float | None = None,
    init_from: str | Path | None = None,
    progress: bool = True,
    log_path: str | Path | None = None,
) -> Path:
    """Train (or resume) an encoder for G, saved at `path`. Resumable: reruns continue from the last save.

    `init_from`: a new run starts from the weights of an encoder trained for another (e.g. an earlier
    snapshot of the same) generator of the same shape instead of from scratch; `w_avg` is taken from G and the
    starting point is recorded in the file. Ignored when resuming.

    `max_steps` / `max_seconds` end this call early (after that many steps / the first step past that much
    wall-clock time) on a saved, resumable state.
    """
    path = Path(path)
    G, G_fp, E, opt, step, elapsed0, init_info = open_encoder_run(path, G, cfg, backend=perceptual.backend_id,
                                                                  init_from=init_from, device=device)
    end = cfg.steps if max_steps is None else min(cfg.steps, step + max_steps)
    t0 = time.time()
    sums: dict[str, torch.Tensor] = {}  # running sums kept on the device (no host sync per step)
    n_sum = 0
    bar = tqdm(total=end, initial=step, disable=not progress, desc="encoder", unit="step", dynamic_ncols=True)
    while step < end:
        losses = _encoder_step(E, opt, G, reals, perceptual=perceptual, cfg=cfg, step=step, device=device)
        step += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float()
        n_sum += 1
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{sums['loss'].item() / n_sum:.4f}")
        out_of_time = max_seconds is not None and time.time() - t0 >= max_seconds
        if step % cfg.checkpoint_every == 0 or step == end or out_of_time:
            metrics = {k: round(v.item() / n_sum, 6) for k, v in sums.items()}
            _save_encoder(path, E, G_fp=G_fp, backend=perceptual.backend_id, cfg=cfg, step=step, opt=opt,
                          elapsed_s=elapsed0 + time.time() - t0, metrics=metrics, init_from=init_info)
            if log_path is not None:
                with open(log_path, "a") as f:
                    f.write(json.dumps({"step": step, **metrics}) + "\n")
            sums, n_sum = {}, 0
        if out_of_time:
            break
    bar.close()
    return path


@dataclass(frozen=True)
class InvertConfig:
    """The refinement settings of hybrid inversion, defined here once (the detector's features, the benchmarks
    and the tests all use them): short, so no latent noise and no learning-rate ramp-up."""

    refine_steps: int = 25       # K projector steps after the encoder's guess (0: encoder only)
    space: str = "W"             # refinement space: W or W+ (W+ fits photos well too, which hides the difference)
    initial_lr: float = 0.05
    pixel_weight: float = 1.0    # loss = perceptual + pixel_weight * MSE
    seed: int = 0

    def project_config(self) -> ProjectConfig:
        return ProjectConfig(num_steps=self.refine_steps, space=self.space, initial_lr=self.initial_lr,
                             initial_noise_factor=0.0, lr_rampup_length=0.0, pixel_weight=self.pixel_weight,
                             seed=self.seed)


def invert(G: Generator, target: torch.Tensor, *, encoder: Encoder | None, perceptual: PerceptualDistance,
           cfg: InvertConfig = InvertConfig(), degradation=None,
           ws_init: torch.Tensor | None = None) -> tuple[ProjectionResult, torch.Tensor]:
    """Hybrid inversion: the encoder's first guess, then `cfg.refine_steps` projector steps (with an optional
    degradation model in the loss: gan_inversion.degradation).

    Returns (result, ws of the first guess [N, num_ws, w_dim]); without an encoder the guess is w_avg.
    ws_init [N, num_ws, w_dim], when given, is the first guess instead (continuing an earlier inversion).
    """
    with torch.no_grad():
        if ws_init is not None:
            ws0 = ws_init.detach()
        elif encoder is not None:
            ws0 = encoder(target)
        else:
            ws0 = G.w_avg.view(1, 1, -1).expand(target.shape[0], G.num_ws, -1).clone()
    return project(G, target, perceptual=perceptual, cfg=cfg.project_config(), ws_init=ws0,
                   degradation=degradation), ws0
