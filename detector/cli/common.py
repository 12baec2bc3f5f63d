"""What the detector commands share."""

from __future__ import annotations

import inspect

from gan_inversion.defaults import pick_device


def default_of(func, name: str):
    """The default of keyword argument `name` of `func`: the one source of a CLI default that a library function
    already has."""
    return inspect.signature(func).parameters[name].default


def add_device(s) -> None:
    s.add_argument("--device", default="auto", help="torch device: auto (CUDA when present, else CPU), cpu, cuda:0…")


def device_of(args):
    return pick_device(args.device)
