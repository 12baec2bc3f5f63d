import pytest
import torch

from gan_inversion.projector import ProjectConfig, noise_regularization, project

from .conftest import make_G


@pytest.fixture(scope="module")
def G16():
    return make_G(seed=0)


def _own_samples(G, n=3, seed=0):
    with torch.no_grad():
        return G(torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)), noise_mode="const")


def test_projection_reduces_loss_in_W_and_Wplus(G16, perc):
    target = _own_samples(G16)
    for space in ("W", "W+"):
        res = project(G16, target, perceptual=perc, cfg=ProjectConfig(num_steps=40, space=space, w_std_samples=200))
        assert res.ws.shape == (3, G16.num_ws, G16.w_dim) and res.images.shape == target.shape
        assert res.loss_history.shape == (40, 3)
        assert (res.final_loss < res.loss_history[0]).all()
        if space == "W":
            assert torch.allclose(res.ws, res.ws[:, :1].expand_as(res.ws))
        assert res.timings["steps"] == 40


def test_batch_independence(G16, perc):
    target = _own_samples(G16, n=3, seed=1)
    cfg = ProjectConfig(num_steps=10, space="W+", optimize_noise=True, w_std_samples=200)
    together = project(G16, target, perceptual=perc, cfg=cfg, w_std=1.0)
    alone = project(G16, target[1:2], perceptual=perc, cfg=cfg, w_std=1.0)
    assert torch.allclose(together.ws[1], alone.ws[0], atol=1e-4)
    assert torch.allclose(together.images[1], alone.images[0], atol=1e-4)


def test_G_is_not_mutated(perc):
    G = make_G(seed=2)
    G.requires_grad_(True)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    project(G, _own_samples(G, 2), perceptual=perc, cfg=ProjectConfig(num_steps=3, optimize_noise=True,
                                                                      w_std_samples=100))
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert all(p.grad is None for p in G.parameters())


def test_noise_optimisation_keeps_noise_normalised(G16, perc):
    res = project(G16, _own_samples(G16, 2), perceptual=perc,
                  cfg=ProjectConfig(num_steps=5, optimize_noise=True, w_std_samples=100))
    assert len(res.noise) == G16.synthesis.num_layers
    for n in res.noise:
        assert torch.allclose(n.mean(dim=[1, 2, 3]), torch.zeros(2), atol=1e-4)
    smooth = [torch.ones(2, 1, 16, 16)]
    white = [torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))]
    assert (noise_regularization(smooth) > noise_regularization(white)).all()


def test_warm_start_and_errors(G16, perc):
    target = _own_samples(G16, 2)
    ws0 = G16.mapping(torch.randn(2, G16.z_dim))
    res = project(G16, target, perceptual=perc, cfg=ProjectConfig(num_steps=0, space="W+"), ws_init=ws0)
    assert torch.allclose(res.ws, ws0) and res.loss_history.shape == (0, 2)
    with pytest.raises(ValueError, match="targets must be"):
        project(G16, torch.zeros(2, 3, 16, 16), perceptual=perc)
    with pytest.raises(ValueError, match="ws_init"):
        project(G16, target, perceptual=perc, ws_init=ws0[:, :2])
    with pytest.raises(ValueError, match="space"):
        ProjectConfig(space="Z")
