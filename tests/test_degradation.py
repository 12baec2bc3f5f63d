"""Degradation-aware inversion: the differentiable degradations match the laundering, and the search finds
the degradation a generator's own sample went through."""

import pytest
import torch

from detector import laundering
from gan_inversion.data import to_float, to_uint8
from gan_inversion.degradation import Degradation, down_up, gaussian_blur, invert_degraded
from gan_inversion.encoder import InvertConfig, invert


def _images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(n, 1, 32, 32, generator=g), 2) * 2 - 1  # smooth-ish 16px
    return to_float(to_uint8(x))


@pytest.mark.parametrize("kind,strength,model", [("blur", 1.0, Degradation(blur_sigma=1.0)),
                                                  ("blur", 0.6, Degradation(blur_sigma=0.6)),
                                                  ("resize", 0.5, Degradation(scale=0.5))])
def test_differentiable_degradations_match_the_laundering(kind, strength, model):
    x = _images()
    pil = laundering.apply(x, kind, strength)
    ours = to_float(to_uint8(model(x)))
    err = (ours - pil).abs().mean()
    assert err < 0.5 * (pil - x).abs().mean(), (kind, float(err))  # much closer to Pillow than doing nothing


def test_degradations_are_differentiable_and_shape_preserving():
    x = _images().requires_grad_(True)
    y = Degradation(blur_sigma=0.8, scale=0.5)(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(Degradation()(x), x)
    assert torch.allclose(gaussian_blur(torch.ones(1, 1, 8, 8), 1.5), torch.ones(1, 1, 8, 8), atol=1e-6)
    assert torch.allclose(down_up(torch.ones(1, 1, 8, 8), 0.5), torch.ones(1, 1, 8, 8), atol=1e-6)
    with pytest.raises(ValueError):
        Degradation(scale=0)


def _own_blurred(G, n=2, sigma=1.2):
    with torch.no_grad():
        x = G(torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(7)), noise_mode="const")
    return gaussian_blur(x, sigma)


def test_blur_model_explains_a_blurred_sample_better(G, perc):
    target = _own_blurred(G)
    cfg = InvertConfig(refine_steps=30, space="W+", initial_lr=0.1)
    plain, _ = invert(G, target, encoder=None, perceptual=perc, cfg=cfg)
    modelled, _ = invert(G, target, encoder=None, perceptual=perc, cfg=cfg, degradation=Degradation(blur_sigma=1.2))
    assert (modelled.final_loss < plain.final_loss).all()


class PerfectGuess:
    """An 'encoder' that knows the latents the targets were made from (the search is tested, not the encoder)."""

    def __init__(self, targets, ws):
        self.targets, self.ws = targets, ws

    def __call__(self, x):
        rows = [int((self.targets - img).abs().flatten(1).sum(1).argmin()) for img in x]
        return self.ws[rows] + 0.05  # near, not at, the answer


def test_search_picks_the_degradation_and_is_batch_independent(G, perc):
    with torch.no_grad():
        ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(7)))
        target = gaussian_blur(G.synthesis(ws, noise_mode="const"), 1.2)
    enc = PerfectGuess(target, ws)
    grid = (Degradation(), Degradation(blur_sigma=1.2), Degradation(scale=0.5))
    cfg = InvertConfig(refine_steps=10, space="W+", initial_lr=0.01)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    out = invert_degraded(G, target, encoder=enc, perceptual=perc, cfg=cfg, grid=grid)
    assert [d.blur_sigma for d in out.degradations] == [1.2] * 3
    assert out.losses.shape == (3, 3) and torch.allclose(out.result.final_loss, out.losses.min(dim=1).values)
    assert torch.allclose(out.degraded, gaussian_blur(out.result.images, 1.2))
    alone = invert_degraded(G, target[1:2], encoder=enc, perceptual=perc, cfg=cfg, grid=grid)
    assert torch.allclose(alone.losses[0], out.losses[1], atol=1e-5)
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in before.items())  # G never modified
