"""Auxiliary generators: small GANs of a family other than StyleGAN2 (and other than every benchmark generator),
trained here on the same photos. Their samples can join the fakes of the detector's linear probe, so that it
learns what generated images share beyond one generator's traces (the benchmark generators stay unseen).

The family here, `upsample-conv`: a linear layer to 4x4, then nearest-neighbour upsampling ×2 followed by a 3x3
convolution up to the resolution (no transposed convolutions, no style modulation), against a plain strided-conv
discriminator with the non-saturating loss. Files are self-describing: {"format", "family", "arch", "state_dict"
(fp16), "info"}, loaded with torch.load(weights_only=True) and a strict load_state_dict.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .checkpoints import atomic_save, half_state, load_float_state
from .data import ImageDataset, to_float

AUX_FORMAT = "resynth-auxiliary-generator"
FAMILIES = ("upsample-conv",)


class UpsampleConvGenerator(nn.Module):
    def __init__(self,
                 z_dim: int = 64,           # input latent (z) dimensionality
                 width: int = 48,           # channels at the last upsampling; ×2 per stage towards 4x4, ×½ after it
                 img_resolution: int = 32,  # output resolution, a power of two >= 8
                 img_channels: int = 1,     # number of output colour channels
                 ):
        super().__init__()
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 8, got {img_resolution}")
        self.init_kwargs = dict(z_dim=z_dim, width=width, img_resolution=img_resolution, img_channels=img_channels)
        self.z_dim = z_dim
        n_up = int(math.log2(img_resolution)) - 2
        chans = [width * 2 ** (n_up - 1 - i) for i in range(n_up)] + [max(width // 2, 1)]  # 4x4 … full resolution
        self.c0 = chans[0]
        self.fc = nn.Linear(z_dim, self.c0 * 16)
        layers: list[nn.Module] = [nn.BatchNorm2d(self.c0), nn.ReLU(True)]
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(True)]
        self.net = nn.Sequential(*layers, nn.Conv2d(chans[-1], img_channels, 3, 1, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # [N, z_dim] -> [N, C, H, W] in [-1, 1]
        return self.net(self.fc(z).view(-1, self.c0, 4, 4))


class StridedConvDiscriminator(nn.Module):
    def __init__(self,
                 width: int = 48,           # channels of the first conv; ×2 per halving
                 img_resolution: int = 32,  # input resolution, a power of two >= 8
                 img_channels: int = 1,     # number of input colour channels
                 ):
        super().__init__()
        layers, c = [nn.Conv2d(img_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)], width
        for _ in range(int(math.log2(img_resolution)) - 3):  # halve down to 4x4, batch-normalised (DCGAN style)
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2, True)]
            c *= 2
        self.net = nn.Sequential(*layers, nn.Conv2d(c, 1, 4, 1, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N] logits
        return self.net(x).flatten()


@dataclass(frozen=True)
class AuxTrainConfig:
    epochs: int = 3
    batch: int = 64
    lr: float = 2e-4
    seed: int = 2
    width: int = 48
    z_dim: int = 64


def gan_step(G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
             real: torch.Tensor, z: torch.Tensor) -> tuple[float, float]:
    """One step of the non-saturating GAN loss: D on real [N, C, H, W] against G(z), then G. Returns the losses."""
    fake = G(z)
    loss_d = F.softplus(D(fake.detach())).mean() + F.softplus(-D(real)).mean()
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    loss_g = F.softplus(-D(fake)).mean()
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    return float(loss_d), float(loss_g)


def train_aux_gan(photos: ImageDataset, *, family: str = "upsample-conv", cfg: AuxTrainConfig = AuxTrainConfig(),
                  max_steps: int | None = None, progress: bool = True) -> tuple[UpsampleConvGenerator, dict]:
    """Train an auxiliary generator on `photos` (non-saturating GAN loss, Adam β1 0.5). Returns (G in eval mode,
    info). `max_steps` cuts the run short (tests)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown auxiliary family {family!r} (known: {', '.join(FAMILIES)})")
    if len(photos) < cfg.batch:
        raise ValueError(f"{len(photos)} photos are fewer than one batch ({cfg.batch}) of the auxiliary GAN")
    res, ch = photos.resolution, photos.channels
    torch.manual_seed(cfg.seed)
    G = UpsampleConvGenerator(z_dim=cfg.z_dim, width=cfg.width, img_resolution=res, img_channels=ch)
    D = StridedConvDiscriminator(width=cfg.width, img_resolution=res, img_channels=ch)
    opt_g = torch.optim.Adam(G.parameters(), cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), cfg.lr, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(cfg.seed)
    per_epoch = len(photos) // cfg.batch
    steps = cfg.epochs * per_epoch if max_steps is None else min(max_steps, cfg.epochs * per_epoch)
    t0, step = time.time(), 0
    with tqdm(total=steps, disable=not progress, desc=f"auxiliary {family}") as bar:
        while step < steps:
            perm = torch.randperm(len(photos), generator=g)
            for i in range(per_epoch):
                if step >= steps:
                    break
                real = to_float(photos.get_batch(perm[i * cfg.batch:(i + 1) * cfg.batch]))
                gan_step(G, D, opt_g, opt_d, real, torch.randn(cfg.batch, cfg.z_dim))
                step += 1
                bar.update(1)
    info = {"config": asdict(cfg), "steps": step, "train_s": time.time() - t0, "data": photos.name,
            "data_fingerprint": photos.fingerprint()}
    return G.eval().requires_grad_(False), info


def save_aux(path: str | Path, G: UpsampleConvGenerator, info: dict, *, family: str = "upsample-conv") -> None:
    atomic_save({"format": AUX_FORMAT, "family": family, "arch": dict(G.init_kwargs), "state_dict": half_state(G),
                 "info": info}, path)


def load_aux(path: str | Path) -> UpsampleConvGenerator:
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such auxiliary generator file") from None
    if not isinstance(obj, dict) or obj.get("format") != AUX_FORMAT:
        raise ValueError(f"{path}: not an auxiliary generator file (format {AUX_FORMAT!r})")
    if obj.get("family") not in FAMILIES:
        raise ValueError(f"{path}: unknown auxiliary family {obj.get('family')!r}")
    G = UpsampleConvGenerator(**obj["arch"])
    load_float_state(G, obj["state_dict"])
    return G.eval().requires_grad_(False)


@torch.no_grad()
def sample_aux(G: UpsampleConvGenerator, n: int, *, seed: int, batch: int = 250) -> torch.Tensor:
    """n samples in [-1, 1], [n, C, H, W], from seeded z."""
    g = torch.Generator().manual_seed(seed)
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    return torch.cat([G(torch.randn(min(batch, n - i), G.z_dim, generator=g)).clamp(-1, 1) for i in range(0, n, batch)])
