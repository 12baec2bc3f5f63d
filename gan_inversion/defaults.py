"""Where the embedded default lives, and which device to use: defined here once for every command and service.

Core functions take paths and devices as arguments; only command-line defaults and the service's settings
read these.
"""

from __future__ import annotations

from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS = REPO_ROOT / "models"
DEFAULT_BUNDLE = MODELS / "fmnist32.pt"
DEFAULT_ENCODER = MODELS / "fmnist32_encoder.pt"
DEFAULT_DETECTOR = MODELS / "fmnist32_detector.json"
# the same generator with the distilled encoder and no refinement steps (resynth distill-encoder, issue #31)
DEFAULT_FAST_ENCODER = MODELS / "fmnist32_encoder_distilled.pt"
FAST_DETECTOR = MODELS / "fmnist32_fast_detector.json"
DEFAULT_FID_NET = MODELS / "fmnist_fid_net.pt"
DEFAULT_AUXILIARY = MODELS / "auxiliary" / "upsample_conv.pt"
# how detector files name it: relative to the repository (resolved against it when not found from the cwd)
EMBEDDED_AUXILIARY = "models/auxiliary/upsample_conv.pt"
DEFAULT_DATA = REPO_ROOT / "data"
DEFAULT_CACHE = REPO_ROOT / ".cache" / "features"


def pick_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA when present, else CPU), or any torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_repo_path(path: str | Path) -> Path:
    """A path as given when it exists (or is absolute), else the same path under the repository (how detector
    files name the embedded auxiliary generator)."""
    p = Path(path)
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p
