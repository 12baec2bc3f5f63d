"""Aligned fakes for the artifact CNN: photos passed through small autoencoders whose decoders upsample the way
generators do.

A CNN trained only on the registered generator's samples learns that generator's traces and little else. Every
convolutional generator ends in upsampling layers (transposed convolution, nearest or bilinear interpolation
followed by a convolution, pixel shuffle), and each leaves its own periodic pattern in the pixels. A photo passed
through an autoencoder with such a decoder keeps its content and gains the decoder's pattern, so a CNN trained on
photos against their reconstructions can only learn the pattern (Rajan et al. 2025, "Aligned datasets improve
detection of latent diffusion-generated images", did this with the autoencoder of a latent diffusion model). Here
a small bank of autoencoders, one per kind of upsampler, is trained on train-split photos; their reconstructions
of the artifact CNN's own training photos join the registered generator's samples as its fakes. The autoencoders
serve the fit only; nothing of them is needed to score. Small autoencoders also lose detail, which a down-up
resize imitates, so the option trades the registered generator's resized samples for unseen generators
(`benchmarks/RESULTS.md`); it is off by default (`resynth fit --reconstruction-fakes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gan_inversion.data import to_float, to_uint8

UPSAMPLERS = ("transposed", "nearest", "bilinear", "pixelshuffle")


@dataclass(frozen=True)
class ReconstructionConfig:
    upsamplers: tuple[str, ...] = UPSAMPLERS  # one autoencoder per kind (see Upsample)
    width: int = 32              # channels of the autoencoders' hidden layers
    latent_channels: int = 8     # channels of the code at 1/4 resolution (8 x 8 x 8 for a 32 x 32 image)
    steps: int = 1500            # training steps of each autoencoder
    batch: int = 64
    lr: float = 2e-3
    seed: int = 0


class Upsample(nn.Module):
    """A x2 upsampling layer of one kind, from cin to cout channels."""

    def __init__(self, kind: str,   # "transposed" (4x4, stride 2, as in DCGAN), "nearest" or "bilinear" (then a
                                    # 3x3 convolution), "pixelshuffle" (a 3x3 convolution to 4x the channels)
                 cin: int, cout: int):
        super().__init__()
        if kind not in UPSAMPLERS:
            raise ValueError(f"unknown upsampler {kind!r} (one of {', '.join(UPSAMPLERS)})")
        self.kind = kind
        if kind == "transposed":
            self.conv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
        elif kind == "pixelshuffle":
            self.conv = nn.Conv2d(cin, 4 * cout, 3, padding=1)
        else:
            self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        if self.kind == "transposed":
            return self.conv(x)
        if self.kind == "pixelshuffle":
            return F.pixel_shuffle(self.conv(x), 2)
        mode = dict(mode="bilinear", align_corners=False) if self.kind == "bilinear" else dict(mode="nearest")
        return self.conv(F.interpolate(x, scale_factor=2, **mode))


class ReconstructionAE(nn.Module):
    """Two stride-2 convolutions down to a code at 1/4 resolution, two upsampling layers of one kind back up (the
    last straight to pixels, as a generator's last layer)."""

    def __init__(self, upsampler: str,        # the decoder's kind of upsampling layer (UPSAMPLERS)
                 width: int = 32,             # hidden channels
                 latent_channels: int = 8,    # channels of the code
                 img_channels: int = 1):      # 1 grayscale, 3 RGB
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            nn.Conv2d(img_channels, w, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, w, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(w, latent_channels, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, w, 3, padding=1), nn.LeakyReLU(0.2),
            Upsample(upsampler, w, w), nn.LeakyReLU(0.2),
            Upsample(upsampler, w, img_channels), nn.Tanh())

    def forward(self, x):                     # x [N, C, H, W] in [-1, 1], H and W divisible by 4
        return self.decoder(self.encoder(x))  # [N, C, H, W]


def train_autoencoders(photos: torch.Tensor, *, cfg: ReconstructionConfig = ReconstructionConfig(), device="cpu",
                       progress: bool = True) -> tuple[list[ReconstructionAE], list[float]]:
    """One autoencoder per `cfg.upsamplers`, each trained on photos [N, C, H, W] in [-1, 1] (L1 + MSE) for
    `cfg.steps` steps; returns them (eval mode, frozen) and each one's final mean absolute error on its batches."""
    if len(photos) < 2:
        raise ValueError(f"too few photos to train the reconstruction autoencoders ({len(photos)}; at least 2)")
    if photos.shape[-1] % 4 or photos.shape[-2] % 4:
        raise ValueError(f"image size {tuple(photos.shape[-2:])} is not divisible by 4")
    nets, errors = [], []
    for k, kind in enumerate(cfg.upsamplers):
        torch.manual_seed(cfg.seed + k)
        g = torch.Generator().manual_seed(cfg.seed + k)
        net = ReconstructionAE(kind, cfg.width, cfg.latent_channels, photos.shape[1]).to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
        recent = []
        for _ in tqdm(range(cfg.steps), disable=not progress, desc=f"autoencoder ({kind})"):
            x = photos[torch.randint(len(photos), (min(cfg.batch, len(photos)),), generator=g)].to(device)
            err = net(x) - x
            loss = err.abs().mean() + err.square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            recent = (recent + [float(err.detach().abs().mean())])[-50:]
        nets.append(net.eval().requires_grad_(False))
        errors.append(sum(recent) / len(recent))
    return nets, errors


@torch.no_grad()
def reconstruct(nets: list[ReconstructionAE], photos: torch.Tensor, *, seed: int = 0, batch: int = 500
                ) -> torch.Tensor:
    """Each photo [N, C, H, W] through one of the autoencoders (a seeded, balanced assignment), quantised to 8-bit
    values like any stored image: [N, C, H, W] in [-1, 1]."""
    if not nets:
        raise ValueError("no autoencoders to reconstruct with")
    g = torch.Generator().manual_seed(seed)
    which = torch.randperm(len(photos), generator=g) % len(nets)
    dev = next(nets[0].parameters()).device
    out = torch.empty_like(photos)
    for k, net in enumerate(nets):
        idx = (which == k).nonzero().flatten()
        for i in range(0, len(idx), batch):
            j = idx[i:i + batch]
            out[j] = net(photos[j].to(dev)).cpu()
    return to_float(to_uint8(out))  # as saved to an 8-bit file and read back
