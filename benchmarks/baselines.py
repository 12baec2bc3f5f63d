"""Baseline detectors for the ROC suite, run in the same harness on the same images as resynth.

1. `pixel_mse`: pixel-MSE inversion error alone (Albright & McCloskey 2019) — read off resynth's features.
2. `perceptual`: training-free perceptual reconstruction distance, no classifier (the idea of AEROBLADE).
3. `spectrum`: azimuthally averaged log power spectrum + logistic regression (Durall et al. 2020).
4. `cnn`: a small supervised CNN on real vs the embedded generator's fakes with blur + JPEG augmentation
   (Wang et al. 2020, CNNDetection-style), trained until its validation AUC stops improving.
5. `linear_probe`: logistic regression on frozen pretrained MobileNetV2 features (universal-detector style).
Scores: higher = more likely fake. The fitted baselines (3, 4, 5) are trained on the same fitting data as
resynth's classifier (train-split reals, fitting-seed fakes), never on evaluation images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from detector import laundering
from detector.evidence import cv_logistic


def radial_spectrum(images: torch.Tensor) -> np.ndarray:
    """images [N, C, H, W] in [-1, 1] -> azimuthally averaged log power spectrum [N, H // 2 + 1]."""
    x = images.mean(dim=1).double()  # gray
    spec = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1)).abs().square()
    H, W = x.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(H) - H // 2, torch.arange(W) - W // 2, indexing="ij")
    r = (yy.square() + xx.square()).double().sqrt().round().long().clamp(max=H // 2)
    flat = spec.flatten(1)
    sums = torch.zeros(len(x), H // 2 + 1, dtype=torch.float64).index_add_(1, r.flatten(), flat)
    counts = torch.bincount(r.flatten(), minlength=H // 2 + 1).double()
    return torch.log(sums / counts + 1e-10).numpy()


def spectrum_features(images: torch.Tensor) -> np.ndarray:
    """Features that suit small images: the radial spectrum, plus the whole log power spectrum of the half
    plane (at 32x32, 32 x 17 frequencies: upsampling leaves its traces at particular ones, not only radii)."""
    x = images.mean(dim=1).double()
    full = torch.log(torch.fft.rfft2(x).abs().square() + 1e-10).flatten(1).numpy()
    return np.concatenate([radial_spectrum(images), full], axis=1)


class SpectrumBaseline:
    """Logistic regression on spectrum features, its regularisation chosen by 5-fold CV AUC."""

    name = "spectrum"

    def fit(self, real: torch.Tensor, fake: torch.Tensor) -> SpectrumBaseline:
        X = np.concatenate([spectrum_features(real), spectrum_features(fake)])
        y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
        self.model = cv_logistic(X, y)
        self.C = float(self.model.best_params_["logisticregression__C"])
        return self

    def score(self, images: torch.Tensor) -> np.ndarray:
        return self.model.predict_proba(spectrum_features(images))[:, 1]


class LinearProbeBaseline:
    """A linear probe on frozen pretrained features (in the spirit of universal detectors, Ojha et al. 2023):
    MobileNetV2's ImageNet features (the offline weights the perceptual distance uses), average-pooled at each
    of its five stages, then logistic regression with CV-chosen regularisation."""

    name = "linear_probe"

    def __init__(self, backbone=None, batch: int = 200):
        from gan_inversion.perceptual import build_perceptual

        self.net = backbone if backbone is not None else build_perceptual("mobilenet_v2", input_size=64)
        self.batch = batch

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch):
            stages = self.net.stage_features(self.net._prepare(images[i:i + self.batch]))
            out.append(torch.cat([f.mean(dim=(2, 3)) for f in stages], dim=1))
        return torch.cat(out).double().numpy()

    def fit(self, real: torch.Tensor, fake: torch.Tensor) -> LinearProbeBaseline:
        X = np.concatenate([self.features(real), self.features(fake)])
        y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
        self.model = cv_logistic(X, y)
        return self

    def score(self, images: torch.Tensor) -> np.ndarray:
        return self.model.predict_proba(self.features(images))[:, 1]


class ResBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a skip connection (1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class SmallCNN(nn.Module):
    """A small ResNet for 32x32 inputs (CNNDetection-style classifier, sized for this data): a stem, three
    stages of residual blocks (32 -> 16 -> 8 pixels), global average pooling, one logit."""

    def __init__(self, width: int = 32, img_channels: int = 1):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(img_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            ResBlock(w, w), ResBlock(w, 2 * w, stride=2), ResBlock(2 * w, 4 * w, stride=2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)


@dataclass
class CNNBaseline:
    """Trained until its validation AUC stops improving (at most `max_epochs`, `patience` epochs without a new
    best), keeping the best epoch's weights; `history` holds (epoch, mean train loss, validation AUC)."""

    max_epochs: int = 60
    min_epochs: int = 10         # early stopping never before this (plateaus early in training are common)
    patience: int = 6
    val_fraction: float = 0.15   # of each class, held out from training (laundered like the training batches)
    batch: int = 64
    lr: float = 1e-3
    augment_prob: float = 0.5
    seed: int = 0
    name: str = "cnn"

    def fit(self, real: torch.Tensor, fake: torch.Tensor, progress: bool = True) -> CNNBaseline:
        from sklearn.metrics import roc_auc_score

        torch.manual_seed(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        n_vr, n_vf = max(1, int(self.val_fraction * len(real))), max(1, int(self.val_fraction * len(fake)))
        pr, pf = torch.randperm(len(real), generator=g), torch.randperm(len(fake), generator=g)
        val_x = torch.cat([real[pr[:n_vr]], fake[pf[:n_vf]]])
        val_x, _ = laundering.random_launder(val_x, prob=self.augment_prob, generator=g)
        val_y = np.r_[np.zeros(n_vr), np.ones(n_vf)]
        X = torch.cat([real[pr[n_vr:]], fake[pf[n_vf:]]])
        y = torch.cat([torch.zeros(len(real) - n_vr), torch.ones(len(fake) - n_vf)])
        self.net = SmallCNN(img_channels=X.shape[1])
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=1e-4)
        self.history, best, best_state, since = [], -1.0, None, 0
        bar = tqdm(total=self.max_epochs, disable=not progress, desc="cnn baseline (epochs)")
        for epoch in range(1, self.max_epochs + 1):
            perm, losses = torch.randperm(len(X), generator=g), []
            for i in range(max(1, len(X) // self.batch)):
                idx = perm[i * self.batch:(i + 1) * self.batch]
                xb, _ = laundering.random_launder(X[idx], prob=self.augment_prob, generator=g)  # blur/JPEG/resize
                loss = F.binary_cross_entropy_with_logits(self.net.train()(xb), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            self.net.eval()
            val_auc = float(roc_auc_score(val_y, self.score(val_x)))
            self.history.append((epoch, float(np.mean(losses)), val_auc))
            bar.update(1)
            bar.set_postfix(val_auc=f"{val_auc:.4f}")
            if val_auc > best:
                best, since = val_auc, 0
                best_state = {k: v.clone() for k, v in self.net.state_dict().items()}
            else:
                since += 1
                if since >= self.patience and epoch >= self.min_epochs:
                    break
        bar.close()
        self.net.load_state_dict(best_state)
        self.best_epoch, self.val_auc = max(self.history, key=lambda h: h[2])[0], best
        self.net.eval().requires_grad_(False)
        return self

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> np.ndarray:
        return torch.cat([torch.sigmoid(self.net(images[i:i + 500])) for i in range(0, len(images), 500)]).numpy()


def feature_baselines(X: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The two inversion-error baselines, read off resynth's feature matrix. A generator reproduces its own
    images better, so the fake score is the *negated* reconstruction error."""
    return {"pixel_mse": -X[:, names.index("pix_mse")], "perceptual": -X[:, names.index("perc_total")]}
