"""Baseline detectors for the ROC suite, run in the same harness on the same images as resynth.

1. `pixel_mse`: pixel-MSE inversion error alone (Albright & McCloskey 2019) — read off resynth's features.
2. `perceptual`: training-free perceptual reconstruction distance, no classifier (the idea of AEROBLADE).
3. `spectrum`: azimuthally averaged log power spectrum + logistic regression (Durall et al. 2020).
4. `cnn`: a small supervised CNN on real vs the embedded generator's fakes with blur + JPEG augmentation
   (Wang et al. 2020, CNNDetection-style), trained until its validation AUC stops improving: the network of
   resynth's artifact evidence (detector/components/artifact_cnn.py), here alone and trained on the baselines'
   own images.
5. `linear_probe`: logistic regression on frozen pretrained MobileNetV2 features (universal-detector style).
Scores: higher = more likely fake. The fitted baselines (3, 4, 5) are trained on the same fitting data as
resynth's classifier (train-split reals, fitting-seed fakes), never on evaluation images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from detector.components.artifact_cnn import artifact_logits
from detector.fitting.artifacts import ArtifactConfig, train_artifact_cnn
from detector.fitting.evidence import cv_logistic


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


@dataclass
class CNNBaseline:
    """The artifact CNN (detector/components/artifact_cnn.py) alone, as a detector of its own: trained on its own
    fitting images until its validation AUC stops improving (at most `max_epochs`, `patience` epochs without a new
    best), keeping the best epoch's weights; `history` holds (epoch, mean train loss, validation AUC)."""

    max_epochs: int = 60
    min_epochs: int = 10
    patience: int = 6
    val_fraction: float = 0.15
    batch: int = 64
    lr: float = 1e-3
    augment_prob: float = 0.5
    seed: int = 0
    name: str = "cnn"

    def fit(self, real: torch.Tensor, fake: torch.Tensor, progress: bool = True) -> CNNBaseline:
        cfg = ArtifactConfig(max_epochs=self.max_epochs, min_epochs=self.min_epochs, patience=self.patience,
                             val_fraction=self.val_fraction, batch=self.batch, lr=self.lr,
                             augment_prob=self.augment_prob, augment_noise=None, seed=self.seed)
        self.net, self.history = train_artifact_cnn(real, fake, cfg=cfg, progress=progress)
        best = max(self.history, key=lambda h: h[2])
        self.best_epoch, self.val_auc = best[0], best[2]
        return self

    def score(self, images: torch.Tensor) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-artifact_logits(self.net, images)))


def feature_baselines(X: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The two inversion-error baselines, read off resynth's feature matrix. A generator reproduces its own
    images better, so the fake score is the *negated* reconstruction error."""
    return {"pixel_mse": -X[:, names.index("pix_mse")], "perceptual": -X[:, names.index("perc_total")]}
