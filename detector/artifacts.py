"""The fourth evidence: a small CNN that recognises the registered generator's pixel-level traces.

The inversion compares an image with its re-synthesis; it weakens where a laundering (blur, a down-up resize)
erases the detail that tells a sample from a photo, and the photo model and the probe look at pooled features
only. A supervised CNN on the pixels (CNNDetection-style, Wang et al. 2020: a small ResNet, blur + JPEG +
resize + noise augmentation) keeps what survives there: the generator's upsampling and texture traces. It needs
no inversion, so it is trained on more images than the classifier: train-split photos that no other part of the
fit uses against fresh samples of the registered generator (detector/fit.py `artifact_images`), never on the
calibration or reference photos, and early-stopped on a validation share of its training images. Its logit is
one more score with a tail probability under the reference photos (detector/evidence.py).

Its weights live in a file beside the detector file (the architecture args as a plain dict inside, loaded with
`weights_only=True` and a strict `load_state_dict`), checked by SHA-256 when the detector loads.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gan_inversion.fileio import atomic_write_bytes

from . import laundering

ARTIFACTS_FORMAT = "resynth-artifact-cnn"


@dataclass(frozen=True)
class ArtifactConfig:
    width: int = 32              # channels of the first stage (doubled at each of the two later stages)
    max_epochs: int = 60         # training stops here at the latest
    min_epochs: int = 10         # early stopping never before this (plateaus early in training are common)
    patience: int = 6            # epochs without a new best validation AUC before stopping
    val_fraction: float = 0.15   # of each class, held out from training (laundered like the training batches)
    batch: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment_prob: float = 0.75   # each training image is laundered (blur, JPEG, resize, noise) with this probability
    augment_noise: tuple[float, float] | None = (0.005, 0.03)  # additive noise (std range) among the launderings
                                                                # too (None: not; measured: without it, noisy
                                                                # photos are flagged)
    seed: int = 0

    @property
    def ranges(self) -> dict[str, tuple[float, float]]:
        """The augmentation's launderings and their strength ranges (detector/laundering.py)."""
        extra = {"noise": tuple(self.augment_noise)} if self.augment_noise else {}
        return {**laundering.FIT_RANGES, **extra}


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


class ArtifactCNN(nn.Module):
    """A small ResNet for small inputs: a stem, three stages of residual blocks (full, 1/2, 1/4 resolution),
    global average pooling, one logit (higher: more like the generator's samples)."""

    def __init__(self, width: int = 32,      # channels of the first stage
                 img_channels: int = 1):     # 1 grayscale, 3 RGB
        super().__init__()
        self.args = {"width": width, "img_channels": img_channels}
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(img_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            ResBlock(w, w), ResBlock(w, 2 * w, stride=2), ResBlock(2 * w, 4 * w, stride=2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 1))

    def forward(self, x):                    # x [N, C, H, W] in [-1, 1]
        return self.net(x).squeeze(1)        # [N]


@torch.no_grad()
def artifact_logits(net: ArtifactCNN, images: torch.Tensor, *, batch: int = 500) -> np.ndarray:
    """images [N, C, H, W] in [-1, 1] -> [N] logits (float64), in eval mode (the net is not modified)."""
    if net.training:
        raise ValueError("artifact_logits needs the net in eval mode (batch norm's running statistics)")
    dev = next(net.parameters()).device
    out = [net(images[i:i + batch].to(dev)).double().cpu() for i in range(0, len(images), batch)]
    return torch.cat(out).numpy() if out else np.zeros(0)


def train_artifact_cnn(real: torch.Tensor, fake: torch.Tensor, *, cfg: ArtifactConfig = ArtifactConfig(),
                       device="cpu", progress: bool = True) -> tuple[ArtifactCNN, list[tuple[int, float, float]]]:
    """Train on real [N, C, H, W] against fake [M, C, H, W] (both in [-1, 1]) until the validation AUC stops
    improving; returns the best epoch's net (eval mode, frozen, on `device`) and the history (epoch, train loss,
    val AUC). Batches are laundered on the CPU, then moved to the device."""
    from sklearn.metrics import roc_auc_score

    if min(len(real), len(fake)) < 10:
        raise ValueError(f"too few images to train the artifact CNN ({len(real)} photos, {len(fake)} fakes; "
                         "at least 10 each)")
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    real, fake = real.cpu(), fake.cpu()
    n_vr, n_vf = max(1, int(cfg.val_fraction * len(real))), max(1, int(cfg.val_fraction * len(fake)))
    pr, pf = torch.randperm(len(real), generator=g), torch.randperm(len(fake), generator=g)
    val_x = torch.cat([real[pr[:n_vr]], fake[pf[:n_vf]]])
    val_x, _ = laundering.random_launder(val_x, prob=cfg.augment_prob, generator=g, ranges=cfg.ranges)
    val_y = np.r_[np.zeros(n_vr), np.ones(n_vf)]
    X = torch.cat([real[pr[n_vr:]], fake[pf[n_vf:]]])
    y = torch.cat([torch.zeros(len(real) - n_vr), torch.ones(len(fake) - n_vf)])
    net = ArtifactCNN(cfg.width, img_channels=X.shape[1]).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history, best, best_state, since = [], -1.0, None, 0
    bar = tqdm(total=cfg.max_epochs, disable=not progress, desc="artifact CNN (epochs)")
    for epoch in range(1, cfg.max_epochs + 1):
        perm, losses = torch.randperm(len(X), generator=g), []
        for i in range(max(1, len(X) // cfg.batch)):
            idx = perm[i * cfg.batch:(i + 1) * cfg.batch]
            xb, _ = laundering.random_launder(X[idx], prob=cfg.augment_prob, generator=g, ranges=cfg.ranges)
            loss = F.binary_cross_entropy_with_logits(net.train()(xb.to(device)), y[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        net.eval()
        val_auc = float(roc_auc_score(val_y, artifact_logits(net, val_x)))
        history.append((epoch, float(np.mean(losses)), val_auc))
        bar.update(1)
        bar.set_postfix(val_auc=f"{val_auc:.4f}")
        if val_auc > best:
            best, since = val_auc, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            since += 1
            if since >= cfg.patience and epoch >= cfg.min_epochs:
                break
    bar.close()
    net.load_state_dict(best_state)
    return net.eval().requires_grad_(False), history


def save_artifact_cnn(path: str | Path, net: ArtifactCNN, *, cfg: ArtifactConfig, history: list) -> str:
    """Write the net (its args and config as plain dicts inside) atomically; returns the file's SHA-256."""
    import io

    buf = io.BytesIO()
    torch.save({"format": ARTIFACTS_FORMAT, "args": dict(net.args), "config": asdict(cfg),
                "history": [list(h) for h in history], "state_dict": net.state_dict()}, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_artifact_cnn(path: str | Path, *, sha256: str | None = None, device="cpu") -> ArtifactCNN:
    """The net of a file written by `save_artifact_cnn` (eval mode, frozen); with `sha256`, the file must match."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"artifact CNN file not found: {path}")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"artifact CNN file {path} does not match the detector's fingerprint (refit or restore it)")
    import io

    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != ARTIFACTS_FORMAT:
        raise ValueError(f"{path} is not a {ARTIFACTS_FORMAT} file")
    net = ArtifactCNN(**ckpt["args"])
    net.load_state_dict(ckpt["state_dict"], strict=True)
    return net.to(device).eval().requires_grad_(False)
