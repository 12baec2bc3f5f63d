"""Self-describing StyleGAN2 bundle files.

A bundle is one `torch.save`d dict of plain data (loadable with `weights_only=True`):

    format, format_version   "resynth-stylegan2", 1
    arch                     {"G": Generator kwargs, "D": Discriminator kwargs or None}
    G, G_ema, D              state dicts (G and D may be None, e.g. for an imported generator)
    w_avg                    running mean of w, [w_dim]
    progress                 {"kimg": float, "step": int}
    data                     {"name", "fingerprint", "framing", "resolution", "channels", "num_images"}
    meta                     free-form provenance (source, created, training config, ...)

A training checkpoint is a bundle plus a `train_state` entry (optimizers, regulariser state).
Third-party formats are converted in `convert/`, one module a format, never here.
"""

from __future__ import annotations

import copy
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .fileio import atomic_write
from .networks import Discriminator, Generator

FORMAT = "resynth-stylegan2"
FORMAT_VERSION = 1


class BundleError(RuntimeError):
    """A bundle file is missing, corrupt, truncated, foreign or inconsistent."""


@dataclass
class Bundle:
    G_ema: Generator
    G: Generator | None = None
    D: Discriminator | None = None
    arch: dict = field(default_factory=dict)
    progress: dict = field(default_factory=lambda: {"kimg": 0.0, "step": 0})
    data: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    path: str | None = None

    @property
    def w_avg(self) -> torch.Tensor:
        return self.G_ema.mapping.w_avg

    @property
    def framing(self) -> dict:
        return dict(self.data.get("framing") or {})

    def to(self, device) -> Bundle:
        for net in (self.G_ema, self.G, self.D):
            if net is not None:
                net.to(device)
        return self


def arch_of(G: Generator, D: Discriminator | None) -> dict:
    return {"G": dict(G.init_kwargs), "D": dict(D.init_kwargs) if D is not None else None}


def _cast_sd(sd: dict, dtype: torch.dtype | None) -> dict:
    """A state dict on the CPU, its floating-point tensors cast to `dtype` (fp16 for slim files) if given."""
    return {k: (v.detach().to("cpu", dtype) if dtype is not None and v.is_floating_point() else v.detach().cpu())
            for k, v in sd.items()}


def half_state(net: torch.nn.Module) -> dict:
    return _cast_sd(net.state_dict(), torch.float16)


def load_float_state(net: torch.nn.Module, sd: dict, *, strict: bool = True) -> torch.nn.Module:
    """Load a state dict stored in any float precision (fp16 files included) into a float32 network."""
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=strict)
    return net


def bundle_dict(*, G_ema: Generator, G: Generator | None = None, D: Discriminator | None = None,
                progress: dict | None = None, data: dict | None = None, meta: dict | None = None,
                half: bool = False) -> dict:
    dtype = torch.float16 if half else None
    sd = lambda net: None if net is None else _cast_sd(net.state_dict(), dtype)  # noqa: E731
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch_of(G_ema, D),
        "G": sd(G),
        "G_ema": sd(G_ema),
        "D": sd(D),
        "w_avg": G_ema.mapping.w_avg.detach().cpu().float().clone(),
        "progress": dict(progress or {"kimg": 0.0, "step": 0}),
        "data": copy.deepcopy(data or {}),
        "meta": copy.deepcopy(meta or {}),
    }


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def atomic_save(obj, path: str | Path) -> None:
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves a half file.

    Tensors are stored on the CPU (a file written on a GPU machine loads anywhere)."""
    obj = _to_cpu(obj)
    atomic_write(path, lambda f: torch.save(obj, f))


def save_bundle(path: str | Path, **kwargs) -> None:
    atomic_save(bundle_dict(**kwargs), path)


def read_checkpoint(path: str | Path) -> dict:
    """torch.load(weights_only=True) with errors that say what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise BundleError(f"{path}: the file is empty")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # zip (torch.save) or legacy pickle
        raise BundleError(f"{path}: not a readable PyTorch checkpoint (unrecognised header {head!r})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, EOFError, RuntimeError, OSError) as exc:
        raise BundleError(f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): {exc}") from exc
    except Exception as exc:  # pickle.UnpicklingError for foreign pickles and non-weights objects
        raise BundleError(f"{path}: cannot be loaded safely (weights_only=True): {exc}") from exc
    if not isinstance(obj, dict):
        raise BundleError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def _build(cls, kwargs: dict, sd: dict, what: str, path) -> torch.nn.Module:
    try:
        net = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{path}: invalid {what} architecture {kwargs}: {exc}") from exc
    try:
        load_float_state(net, sd)
    except RuntimeError as exc:
        raise BundleError(f"{path}: {what} weights do not match its architecture: {exc}") from exc
    return net.eval().requires_grad_(False)


def bundle_from_dict(obj: dict, *, path=None, require_D: bool = False) -> Bundle:
    if obj.get("format") != FORMAT:
        hint = ""
        if "g_ema" in obj:
            hint = " (it looks like a rosinality/stylegan2-pytorch checkpoint: convert it with `resynth convert`)"
        raise BundleError(f"{path}: not a resynth StyleGAN2 bundle; top-level keys {sorted(obj)[:8]}{hint}")
    if obj.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {obj.get('format_version')} is not supported "
                          f"(this resynth reads version {FORMAT_VERSION})")
    missing = [k for k in ("arch", "G_ema", "w_avg") if obj.get(k) is None]
    if missing:
        raise BundleError(f"{path}: bundle lacks {missing}")
    arch = obj["arch"]
    G_ema = _build(Generator, arch["G"], obj["G_ema"], "G_ema", path)
    w_avg = obj["w_avg"].float()
    if w_avg.shape != (G_ema.w_dim,):
        raise BundleError(f"{path}: w_avg has shape {list(w_avg.shape)}, expected [{G_ema.w_dim}]")
    G_ema.mapping.w_avg.copy_(w_avg)
    G = None
    if obj.get("G") is not None:
        G = _build(Generator, arch["G"], obj["G"], "G", path)
        G.mapping.w_avg.copy_(w_avg)
    D = None
    if obj.get("D") is not None:
        if arch.get("D") is None:
            raise BundleError(f"{path}: D weights present but no D architecture")
        D = _build(Discriminator, arch["D"], obj["D"], "D", path)
    elif require_D:
        raise BundleError(f"{path}: this bundle has no discriminator, which is required here")
    return Bundle(G_ema=G_ema, G=G, D=D, arch=copy.deepcopy(arch), progress=dict(obj.get("progress") or {}),
                  data=copy.deepcopy(obj.get("data") or {}), meta=copy.deepcopy(obj.get("meta") or {}),
                  path=None if path is None else str(path))


def load_bundle(path: str | Path, *, device: str | torch.device = "cpu", require_D: bool = False) -> Bundle:
    """Load a bundle (or training checkpoint) for inference: eval mode, no grads, float32 on `device`."""
    obj = read_checkpoint(path)
    bundle = bundle_from_dict(obj, path=path, require_D=require_D)
    return bundle.to(device)
