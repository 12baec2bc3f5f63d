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

FORMATS = {"rosinality": "rosinality/stylegan2-pytorch .pt (torch.save, zip or legacy serialization: g_ema, "
                         "optionally d, g, latent_avg)",
           "nvidia": "NVIDIA stylegan2-ada-pytorch .pkl network pickle (G_ema, optionally G, D), read as data"}

__all__ = ["FORMATS", "NvidiaPickleRefused", "PersistentRecord", "convert", "convert_any", "convert_nvidia",
           "convert_rosinality", "file_format", "read_nvidia_pickle"]


# torch.save(..., _use_new_zipfile_serialization=False) (every torch before 1.6) starts with the pickle of torch's
# legacy magic number; a plain pickle (NVIDIA's networks) starts with its own protocol byte and a container.
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
KNOWN_HEADS = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"\x1f\x8b": "a gzip file",
               b"GIF8": "a GIF image", b"{": "JSON or text", b"<": "HTML or XML"}


def file_format(path: str | Path) -> str:
    """What a checkpoint file really is, by its content: 'torch-zip' (torch.save since 1.6), 'torch-legacy'
    (torch.save with the legacy serialization) or 'pickle' (a plain pickle: NVIDIA's network pickles); anything
    else is refused with what was found."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        return "torch-zip"
    with open(path, "rb") as f:
        head = f.read(32)
    if head.startswith(TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    if head[:1] == b"\x80":
        return "pickle"
    found = next((what for magic, what in KNOWN_HEADS.items() if head.startswith(magic)),
                 "empty" if not head else f"bytes {head[:8]!r}")
    raise BundleError(f"{path}: not a checkpoint resynth converts (a torch.save file, zip or legacy, or an NVIDIA "
                      f"network pickle); found {found}")


def convert_any(path: str | Path, **kwargs) -> dict:
    """A resynth bundle dict from a rosinality `.pt` (torch's zip or legacy serialization) or an NVIDIA
    stylegan2-ada `.pkl`, told apart by what the file is, not by its name."""
    path = Path(path)
    if file_format(path) == "pickle":
        return convert_nvidia(path)
    return convert_rosinality(path, **kwargs)


def convert(path: str | Path, **kwargs) -> Bundle:
    """Convert any supported third-party checkpoint into a loaded Bundle."""
    return bundle_from_dict(convert_any(path, **kwargs), path=path)
