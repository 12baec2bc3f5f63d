"""Tiny seeded components shared by the tests (a few thousand parameters, milliseconds per forward)."""

from __future__ import annotations

import pytest
import torch

from gan_inversion.networks import Discriminator, Generator

torch.set_num_threads(1)

TINY_G = dict(z_dim=8, w_dim=8, img_resolution=16, img_channels=1, mapping_layers=2, channel_base=64, channel_max=8)
TINY_D = dict(img_resolution=16, img_channels=1, channel_base=64, channel_max=8)


def make_G(seed: int = 0, **overrides) -> Generator:
    torch.manual_seed(seed)
    G = Generator(**{**TINY_G, **overrides}).eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        for layer in G.synthesis.layers():
            layer.noise_strength.fill_(0.5)  # so noise actually matters in the tests
    return G


def make_D(seed: int = 0, **overrides) -> Discriminator:
    torch.manual_seed(seed)
    return Discriminator(**{**TINY_D, **overrides}).eval()


@pytest.fixture
def G():
    return make_G()


@pytest.fixture
def D():
    return make_D()
