"""The artifact CNN: a small ResNet on the pixels that recognises the registered generator's traces.

Its logit is one of the evidences (detector/components/evidence.py). Its weights live in a file beside the
detector file, with the architecture args as a plain dict inside, loaded with `weights_only=True` and a strict
`load_state_dict`, and checked by SHA-256 when the detector loads. detector/fitting/artifacts.py trains it.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ARTIFACTS_FORMAT = "resynth-artifact-cnn"


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


def load_artifact_cnn(path: str | Path, *, sha256: str | None = None, device="cpu") -> ArtifactCNN:
    """The net of a file written by `save_artifact_cnn` (eval mode, frozen); with `sha256`, the file must match."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"artifact CNN file not found: {path}")
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"artifact CNN file {path} does not match the detector's fingerprint (refit or restore it)")
    ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != ARTIFACTS_FORMAT:
        raise ValueError(f"{path} is not a {ARTIFACTS_FORMAT} file")
    net = ArtifactCNN(**ckpt["args"])
    net.load_state_dict(ckpt["state_dict"], strict=True)
    return net.to(device).eval().requires_grad_(False)
