"""What the detector commands share."""

from __future__ import annotations

from gan_inversion.defaults import pick_device


def add_device(s) -> None:
    s.add_argument("--device", default="auto", help="torch device: auto (CUDA when present, else CPU), cpu, cuda:0…")


def device_of(args):
    return pick_device(args.device)
