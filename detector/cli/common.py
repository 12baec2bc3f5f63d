"""What the detector commands share."""

from __future__ import annotations

import inspect

from gan_inversion.defaults import pick_device
from gan_inversion.photos import photos_for


def default_of(func, name: str):
    """The default of keyword argument `name` of `func`: the one source of a CLI default that a library function
    already has."""
    return inspect.signature(func).parameters[name].default


def add_device(s) -> None:
    s.add_argument("--device", default="auto", help="torch device: auto (CUDA when present, else CPU), cpu, cuda:0…")


def device_of(args):
    return pick_device(args.device)


def bundle_photos(args, bundle, split: str):
    """The photos a command reads for a generator bundle: `--real`'s (or `--test-real`'s) split, framed as the
    bundle frames an upload, else Fashion-MNIST's on the bundle's canvas (gan_inversion/photos.py)."""
    G = bundle.G_ema
    return photos_for(args, split=split, resolution=G.img_resolution, channels=G.img_channels, framing=bundle.framing)
