"""Appearance features: the perceptual network's pretrained activations, average-pooled at each stage.

They are the input of the photo model and of the linear probe (detector/components/evidence.py) and need no
inversion.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def appearance_features(perceptual, images: torch.Tensor, *, batch: int = 200) -> np.ndarray:
    """images [N, C, H, W] in [-1, 1] -> [N, sum of stage channels] (float64): stage-wise mean activations."""
    out = []
    for i in range(0, len(images), batch):
        stages = perceptual.stage_features(perceptual._prepare(images[i:i + batch]))
        out.append(torch.cat([f.mean(dim=(2, 3)) for f in stages], dim=1).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))
