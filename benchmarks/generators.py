"""Generators the detector never saw, trained here on the Fashion-MNIST train split for the ROC suite.

    python -m benchmarks.generators train dcgan   # Radford et al. 2016, ~3 epochs
    python -m benchmarks.generators train vae     # convolutional VAE (Kingma & Welling 2014)
    python -m benchmarks.generators train stylegan2-narrow   # a second StyleGAN2: other seed, narrower

Weights go to benchmarks/generators/*.pt (small, committed), each with its architecture as a plain dict
and loaded with torch.load(weights_only=True). `sample(name, n, seed)` draws float images in [-1, 1].
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from gan_inversion.auxiliary import StridedConvDiscriminator, gan_step
from gan_inversion.checkpoints import atomic_save, half_state, load_bundle, load_float_state, read_checkpoint
from gan_inversion.data import load_fashion_mnist, save_grid, to_float
from gan_inversion.defaults import DEFAULT_DATA
from gan_inversion.metrics import generate
from gan_inversion.presets import PRESETS

HERE = Path(__file__).resolve().parent / "generators"


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int = 64, width: int = 64, img_channels: int = 1):
        super().__init__()
        self.init_kwargs = dict(z_dim=z_dim, width=width, img_channels=img_channels)
        self.z_dim = z_dim
        w = width
        self.net = nn.Sequential(
            nn.ConvTranspose2d(z_dim, 4 * w, 4, 1, 0, bias=False), nn.BatchNorm2d(4 * w), nn.ReLU(True),   # 4x4
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(True),   # 8x8
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),           # 16x16
            nn.ConvTranspose2d(w, img_channels, 4, 2, 1), nn.Tanh())                                       # 32x32

    def forward(self, z):
        return self.net(z.view(-1, self.z_dim, 1, 1))


class VAE(nn.Module):
    def __init__(self, z_dim: int = 32, width: int = 32, img_channels: int = 1):
        super().__init__()
        self.init_kwargs = dict(z_dim=z_dim, width=width, img_channels=img_channels)
        self.z_dim, w = z_dim, width
        self.enc = nn.Sequential(
            nn.Conv2d(img_channels, w, 4, 2, 1), nn.ReLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * w * 16, 2 * z_dim))
        self.dec_in = nn.Linear(z_dim, 4 * w * 16)
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w, img_channels, 4, 2, 1), nn.Tanh())
        self.width = w

    def decode(self, z):
        return self.dec(self.dec_in(z).view(-1, 4 * self.width, 4, 4))

    def forward(self, x):
        mu, logvar = self.enc(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decode(z), mu, logvar


def _batches(ds, batch: int, epochs: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(ds), generator=g)
        for i in range(len(ds) // batch):
            yield to_float(ds.get_batch(perm[i * batch:(i + 1) * batch]))


def train_dcgan(*, epochs: int = 3, batch: int = 64, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    ds = load_fashion_mnist(DEFAULT_DATA, split="train")
    G, D = DCGANGenerator(), StridedConvDiscriminator(width=64)  # DCGAN's discriminator at 32x32
    opt_g = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
    steps = epochs * (len(ds) // batch)
    t0 = time.time()
    for real in tqdm(_batches(ds, batch, epochs, seed), total=steps, desc="dcgan"):
        gan_step(G, D, opt_g, opt_d, real, torch.randn(batch, G.z_dim))
    return _save("dcgan", G.eval(), {"epochs": epochs, "batch": batch, "seed": seed, "train_s": time.time() - t0})


def train_vae(*, epochs: int = 10, batch: int = 128, seed: int = 0, beta: float = 1.0) -> Path:
    torch.manual_seed(seed)
    ds = load_fashion_mnist(DEFAULT_DATA, split="train")
    vae = VAE()
    opt = torch.optim.Adam(vae.parameters(), 1e-3)
    steps = epochs * (len(ds) // batch)
    t0 = time.time()
    for x in tqdm(_batches(ds, batch, epochs, seed), total=steps, desc="vae"):
        rec, mu, logvar = vae(x)
        # Gaussian likelihood on [-1, 1] pixels (sigma 0.1) + KL, per image.
        nll = (rec - x).square().sum(dim=[1, 2, 3]) / (2 * 0.1**2)
        kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(1)
        loss = (nll + beta * kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return _save("vae", vae.eval(), {"epochs": epochs, "batch": batch, "seed": seed, "train_s": time.time() - t0})


def _save(name: str, net: nn.Module, info: dict) -> Path:
    path = HERE / f"{name}.pt"
    sd = half_state(net)
    atomic_save({"format": "resynth-benchmark-generator", "name": name, "arch": dict(net.init_kwargs),
                 "state_dict": sd, "info": info}, path)
    with torch.no_grad():
        save_grid(sample(name, 64, seed=0), HERE / f"{name}_samples.png", nrow=8)
    return path


def train_stylegan2_narrow(*, kimg: float = 100.0, seed: int = 1) -> Path:
    """A second StyleGAN2: other seed, half the channels; exported to benchmarks/generators/."""
    from gan_inversion.checkpoints import save_bundle
    from gan_inversion.training import TrainConfig, train

    arch = PRESETS["fmnist32-narrow"]
    ds = load_fashion_mnist(DEFAULT_DATA, split="train")
    run = Path("runs") / "stylegan2-narrow"
    ckpt = train(run, ds, G_kwargs=arch["G"], D_kwargs=arch["D"],
                 cfg=TrainConfig(total_kimg=kimg, seed=seed, checkpoint_kimg=10.0))
    b = load_bundle(ckpt)
    out = HERE / "stylegan2_narrow.pt"
    save_bundle(out, G_ema=b.G_ema, progress=b.progress, data=b.data, meta=b.meta, half=True)
    with torch.no_grad():
        save_grid(sample("stylegan2-narrow", 64, seed=0), HERE / "stylegan2-narrow_samples.png", nrow=8)
    return out


_CACHE: dict[str, nn.Module] = {}


def load_generator(name: str):
    """'dcgan', 'vae' or 'stylegan2-narrow' (committed weights)."""
    if name in _CACHE:
        return _CACHE[name]
    if name == "stylegan2-narrow":
        net = load_bundle(HERE / "stylegan2_narrow.pt").G_ema
    else:
        obj = read_checkpoint(HERE / f"{name}.pt")
        net = {"dcgan": DCGANGenerator, "vae": VAE}[name](**obj["arch"])
        load_float_state(net, obj["state_dict"])
        net.eval().requires_grad_(False)
    _CACHE[name] = net
    return net


@torch.no_grad()
def sample(name: str, n: int, *, seed: int, batch: int = 250) -> torch.Tensor:
    """n samples in [-1, 1], [n, 1, 32, 32], from seeded z."""
    net = load_generator(name)
    if name == "stylegan2-narrow":
        return generate(net, n, seed=seed)
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, batch):
        m = min(batch, n - i)
        z = torch.randn(m, net.z_dim, generator=g)
        out.append((net(z) if name == "dcgan" else net.decode(z)).clamp(-1, 1))
    return torch.cat(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("name", choices=("dcgan", "vae", "stylegan2-narrow"))
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--kimg", type=float, default=100.0)
    args = ap.parse_args(argv)
    if args.name == "dcgan":
        path = train_dcgan(epochs=args.epochs or 3)
    elif args.name == "vae":
        path = train_vae(epochs=args.epochs or 10)
    else:
        path = train_stylegan2_narrow(kimg=args.kimg)
    print(f"wrote {path} ({math.ceil(path.stat().st_size / 1024)} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
