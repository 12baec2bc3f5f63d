"""Third-party StyleGAN2 checkpoints converted into resynth bundles, one module per format.

- `rosinality`: rosinality/stylegan2-pytorch `.pt` files (`g_ema`, `d`, `g`, `latent_avg`), read with
  `torch.load(weights_only=True)`;
- `nvidia`: NVIDIA stylegan2-ada-pytorch `.pkl` network pickles, read as data (nothing in the file is run).

`convert_any` tells them apart by the file's content, not its name; anything else is refused with what was
found.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ..checkpoints import Bundle, BundleError, bundle_from_dict
from .nvidia import NvidiaPickleRefused, PersistentRecord, convert_nvidia, read_nvidia_pickle
from .rosinality import convert_rosinality

FORMATS = {"rosinality": "rosinality/stylegan2-pytorch .pt (torch.save zip: g_ema, optionally d, g, latent_avg)",
           "nvidia": "NVIDIA stylegan2-ada-pytorch .pkl network pickle (G_ema, optionally G, D), read as data"}

__all__ = ["FORMATS", "NvidiaPickleRefused", "PersistentRecord", "convert", "convert_any", "convert_nvidia",
           "convert_rosinality", "is_pickle", "read_nvidia_pickle"]


def is_pickle(path: str | Path) -> bool:
    """A plain pickle (NVIDIA's format) rather than torch.save's zip file."""
    with open(path, "rb") as f:
        return f.read(1) == b"\x80" and not zipfile.is_zipfile(path)


def convert_any(path: str | Path, **kwargs) -> dict:
    """A resynth bundle dict from a rosinality `.pt` or an NVIDIA stylegan2-ada `.pkl` (told apart by content)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    if is_pickle(path):
        return convert_nvidia(path)
    return convert_rosinality(path, **kwargs)


def convert(path: str | Path, **kwargs) -> Bundle:
    """Convert any supported third-party checkpoint into a loaded Bundle."""
    return bundle_from_dict(convert_any(path, **kwargs), path=path)
