"""GAN quality metric for the embedded domain: FID in the feature space of a small Fashion-MNIST classifier.

ImageNet Inception weights are not available offline, so the Fréchet distance is computed on the
penultimate features of a compact CNN trained here on the Fashion-MNIST train split only (the test
split stays unseen by training). Its test accuracy is reported with every FID so the feature space can
be judged; FID(train vs test) on equally many images is the floor a perfect generator would reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn
from tqdm import tqdm

from .checkpoints import BundleError, atomic_save, read_checkpoint
from .data import ImageDataset, to_float

FID_NET_FORMAT = "resynth-fid-net"


class FeatureNet(nn.Module):
    def __init__(
        self,
        img_channels: int = 1,   # Input colour channels.
        width: int = 16,         # Channels of the first stage (doubled twice).
        feature_dim: int = 128,  # Dimensionality of the embedding used for FID.
        num_classes: int = 10,   # Classifier outputs.
    ):
        super().__init__()
        self.init_kwargs = dict(img_channels=img_channels, width=width, feature_dim=feature_dim,
                                num_classes=num_classes)
        c = [width, width * 2, width * 4]

        def stage(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.stages = nn.Sequential(stage(img_channels, c[0]), stage(c[0], c[1]), stage(c[1], c[2]))
        self.embed = nn.Linear(c[2], feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C, 32, 32] in [-1, 1] -> [N, feature_dim]."""
        h = self.stages(x).mean(dim=[2, 3])
        return F.relu(self.embed(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class FeatureNetConfig:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0


def train_feature_net(train: ImageDataset, test: ImageDataset, *, cfg: FeatureNetConfig = FeatureNetConfig(),
                      device="cpu", progress: bool = True) -> tuple[FeatureNet, dict]:
    """Fit the classifier on `train` (labels required); report accuracy on `test`."""
    if train.labels is None or test.labels is None:
        raise ValueError("the feature network needs labelled data")
    torch.manual_seed(cfg.seed)
    net = FeatureNet(img_channels=train.channels).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    steps = cfg.epochs * (len(train) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    g = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(total=steps, disable=not progress, desc="fid-net")
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(train), generator=g)
        for i in range(len(train) // cfg.batch_size):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            x, y = to_float(train.get_batch(idx)).to(device), train.labels[idx].to(device)
            loss = F.cross_entropy(net.train()(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    net.eval().requires_grad_(False)
    pred = predict(net, test.images, device=device)
    acc = float((pred == test.labels).float().mean())
    return net, {"test_accuracy": acc, "train_fingerprint": train.fingerprint(), "epochs": cfg.epochs}


@torch.no_grad()
def predict(net: FeatureNet, images_u8: torch.Tensor, *, device="cpu", batch: int = 500) -> torch.Tensor:
    return torch.cat([net(to_float(images_u8[i:i + batch]).to(device)).argmax(1).cpu()
                      for i in range(0, len(images_u8), batch)])


def save_feature_net(path: str | Path, net: FeatureNet, info: dict) -> None:
    atomic_save({"format": FID_NET_FORMAT, "arch": dict(net.init_kwargs), "state_dict": net.state_dict(),
                 "info": dict(info)}, path)


def load_feature_net(path: str | Path, device="cpu") -> tuple[FeatureNet, dict]:
    obj = read_checkpoint(path)
    if obj.get("format") != FID_NET_FORMAT:
        raise BundleError(f"{path}: not a resynth FID feature network")
    net = FeatureNet(**obj["arch"])
    net.load_state_dict(obj["state_dict"], strict=True)
    return net.to(device).eval().requires_grad_(False), dict(obj["info"])


@torch.no_grad()
def embed(features, images: torch.Tensor, *, device="cpu", batch: int = 500) -> np.ndarray:
    """images: float [N, C, H, W] in [-1, 1] (or uint8) -> features(images) [N, D] as float64, in batches;
    `features`: the FID network's `FeatureNet.features`, or a pretrained backbone's `pooled_features`
    (gan_inversion.perceptual) for a folder that has no network of its own."""
    out = []
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        x = to_float(x) if x.dtype == torch.uint8 else x
        out.append(features(x.to(device)).double().cpu())
    return torch.cat(out).numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets [N, D]."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    return float(np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@torch.no_grad()
def generate(G, n: int, *, seed: int = 0, psi: float = 1.0, batch: int = 250, device="cpu",
             progress: bool = False) -> torch.Tensor:
    """n samples of G with seeded z and noise, float [-1, 1] on the CPU."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in tqdm(range(0, n, batch), disable=not progress, desc="sampling"):
        m = min(batch, n - i)
        z = torch.randn(m, G.z_dim, generator=g).to(device)
        noise = [x.to(device) for x in G.synthesis.make_noise(m, generator=g, device="cpu")]
        out.append(G.synthesis(G.mapping(z, psi=psi), noise=noise).clamp(-1, 1).cpu())
    return torch.cat(out)


def class_histogram(pred: torch.Tensor, num_classes: int = 10) -> list[float]:
    counts = torch.bincount(pred, minlength=num_classes).double()
    return (counts / counts.sum()).tolist()
