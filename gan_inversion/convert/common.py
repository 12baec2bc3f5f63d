"""What the converters share: the channel layout read off tensor shapes, and a strict load into our networks."""

from __future__ import annotations

import torch

from ..checkpoints import BundleError
from ..networks import channels_at


def infer_channel_layout(channels: dict[int, int], what: str) -> tuple[int, int]:
    """Find (channel_base, channel_max) with min(base // res, max) == channels[res] for every res."""
    channel_max = max(channels.values())
    below = [res * c for res, c in channels.items() if c < channel_max]
    channel_base = min(below) if below else channel_max * max(channels)
    if any(channels_at(res, channel_base, channel_max) != c for res, c in channels.items()):
        raise BundleError(f"{what}: channel layout {channels} is not of the form min(base / res, max)")
    return channel_base, channel_max


def strict_load(net: torch.nn.Module, sd: dict, what: str) -> torch.nn.Module:
    try:
        net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{what}: converted weights do not fit: {exc}") from exc
    return net.eval().requires_grad_(False)
