"""What the detector commands share."""

from __future__ import annotations

import inspect

from gan_inversion.defaults import pick_device
from gan_inversion.ort import DEFAULT_CACHE, OrtConfig
from gan_inversion.photos import photos_for

from ..runtime.pipeline import RUNTIMES


def default_of(func, name: str):
    """The default of keyword argument `name` of `func`: the one source of a CLI default that a library function
    already has."""
    return inspect.signature(func).parameters[name].default


def add_device(s) -> None:
    s.add_argument("--device", default="auto", help="torch device: auto (CUDA when present, else CPU), cpu, cuda:0…")


def add_runtime(s) -> None:
    s.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="where network calls without gradients run: torch, onnx (ONNX Runtime), or auto (ONNX Runtime "
                        "for a detector without refinement steps on the CPU, torch otherwise)")
    s.add_argument("--onnx-cache", default=str(DEFAULT_CACHE),
                   help="folder keeping the exported ONNX graphs between runs ('none': a temporary folder)")


def runtime_of(args) -> dict:
    """Detector.load's runtime arguments from add_runtime's options."""
    cache = None if args.onnx_cache == "none" else args.onnx_cache
    return {"runtime": args.runtime, "onnx": OrtConfig(cache_dir=cache)}


def device_of(args):
    return pick_device(args.device)


def bundle_photos(args, bundle, split: str):
    """The photos a command reads for a generator bundle: `--real`'s (or `--test-real`'s) split, framed as the
    bundle frames an upload, else Fashion-MNIST's on the bundle's canvas (gan_inversion/photos.py)."""
    G = bundle.G_ema
    return photos_for(args, split=split, resolution=G.img_resolution, channels=G.img_channels, framing=bundle.framing)
