"""Training the artifact CNN (detector/components/artifact_cnn.py) on photos against the generator's samples.

Each batch is laundered (blur, JPEG, resize, noise) with `augment_prob`; training stops early on the validation
share's AUC. The file it writes holds the architecture args and the training config as plain dicts.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from gan_inversion.fileio import atomic_write_bytes

from .. import laundering
from ..components.artifact_cnn import ARTIFACTS_FORMAT, ArtifactCNN, artifact_logits


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
                                                                # too, so noisy photos are not flagged (None: not)
    seed: int = 0

    @property
    def ranges(self) -> dict[str, tuple[float, float]]:
        """The augmentation's launderings and their strength ranges (detector/laundering.py)."""
        extra = {"noise": tuple(self.augment_noise)} if self.augment_noise else {}
        return {**laundering.FIT_RANGES, **extra}


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
    buf = io.BytesIO()
    torch.save({"format": ARTIFACTS_FORMAT, "args": dict(net.args), "config": asdict(cfg),
                "history": [list(h) for h in history], "state_dict": net.state_dict()}, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()
