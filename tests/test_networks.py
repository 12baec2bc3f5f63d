import pytest
import torch

from gan_inversion.networks import Generator, make_filter, style_mix, upfirdn2d

from .conftest import make_D, make_G


def test_shapes_and_counts(G, D):
    z = torch.randn(3, G.z_dim)
    ws = G.mapping(z)
    assert ws.shape == (3, G.num_ws, G.w_dim) == (3, 6, 8)
    img = G.synthesis(ws)
    assert img.shape == (3, 1, 16, 16)
    assert D(img).shape == (3,)
    assert len(G.synthesis.layers()) == G.synthesis.num_layers == 5


def test_rgb_and_other_resolutions():
    G = make_G(img_channels=3, img_resolution=32)
    D = make_D(img_channels=3, img_resolution=32)
    img = G(torch.randn(2, 8))
    assert img.shape == (2, 3, 32, 32)
    assert D(img).shape == (2,)
    with pytest.raises(ValueError, match="power of two"):
        Generator(img_resolution=24)


def test_w_and_wplus_agree(G):
    """A W code broadcast to every layer is the W+ code with identical rows."""
    z = torch.randn(2, G.z_dim)
    ws = G.mapping(z)
    assert torch.equal(ws[:, 0:1].expand_as(ws), ws)
    w = ws[:, 0]
    img_w = G.synthesis(w.unsqueeze(1).repeat(1, G.num_ws, 1))
    assert torch.allclose(img_w, G(z), atol=1e-6)
    # A W+ code with one different row changes the image (each layer really takes its own style).
    ws2 = ws.clone()
    ws2[:, 3] += 1.0
    assert not torch.allclose(G.synthesis(ws2), img_w, atol=1e-4)


def test_truncation(G):
    z = torch.randn(4, G.z_dim)
    ws = G.mapping(z)
    assert torch.allclose(G.mapping(z, psi=0.0), G.w_avg.expand_as(ws), atol=1e-6)
    half = G.mapping(z, psi=0.5)
    assert torch.allclose(half, G.w_avg + 0.5 * (ws - G.w_avg), atol=1e-5)
    cut = G.mapping(z, psi=0.0, truncation_cutoff=2)
    assert torch.allclose(cut[:, :2], G.w_avg.expand(4, 2, -1), atol=1e-6)
    assert torch.allclose(cut[:, 2:], ws[:, 2:])


def test_noise_modes(G):
    ws = G.mapping(torch.randn(2, G.z_dim))
    const1, const2 = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    assert torch.equal(const1, const2)
    r1 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1))
    r2 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(1))
    r3 = G.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(2))
    assert torch.equal(r1, r2) and not torch.allclose(r1, r3)
    none = G.synthesis(ws, noise_mode="none")
    zeros = [torch.zeros(1, 1, layer.resolution, layer.resolution) for layer in G.synthesis.layers()]
    assert torch.allclose(none, G.synthesis(ws, noise=zeros))
    explicit = [layer.noise_const[None, None] for layer in G.synthesis.layers()]
    assert torch.allclose(G.synthesis(ws, noise=explicit), const1)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="bogus")
    with pytest.raises(ValueError, match="noise tensors"):
        G.synthesis(ws, noise=explicit[:2])


def test_forward_does_not_mutate_state(G):
    before = {k: v.clone() for k, v in G.state_dict().items()}
    w_avg = G.w_avg.clone()
    G(torch.randn(3, G.z_dim), noise_mode="random", psi=0.7)
    G.train()(torch.randn(3, G.z_dim))
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert torch.equal(w_avg, G.w_avg)


def test_discriminator_per_image_mode(D):
    torch.manual_seed(0)
    x = torch.randn(8, 1, 16, 16)
    others = torch.randn(8, 1, 16, 16)
    batch_a = torch.cat([x[:1], x[1:4]])
    batch_b = torch.cat([x[:1], others[:3]])
    # Default group size 4: the first image's logit depends on its batch mates ...
    assert not torch.allclose(D(batch_a)[0], D(batch_b)[0], atol=1e-5)
    # ... with mbstd_group=1 it does not, and equals evaluating it alone.
    la, lb, alone = D(batch_a, mbstd_group=1)[0], D(batch_b, mbstd_group=1)[0], D(x[:1], mbstd_group=1)[0]
    assert torch.allclose(la, lb, atol=1e-6) and torch.allclose(la, alone, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        D(x[:6])


def test_discriminator_features(D):
    logits, feats = D(torch.randn(4, 1, 16, 16), return_features=True)
    assert logits.shape == (4,)
    assert set(feats) == {"b16", "b8", "conv4", "fc"}
    assert feats["b16"].shape == (4, 8, 8, 8) and feats["fc"].shape == (4, 8)


def test_style_mix():
    a, b = torch.zeros(64, 6, 2), torch.ones(64, 6, 2)
    mixed = style_mix(a, b, prob=1.0, generator=torch.Generator().manual_seed(0))
    rows = mixed[:, :, 0]
    assert (rows[:, 0] == 0).all() and (rows[:, -1] == 1).all()  # crossover strictly inside
    assert (rows.diff(dim=1) >= 0).all()  # one crossover point per sample
    assert torch.equal(style_mix(a, b, prob=0.0), a)


def test_upfirdn_upsample_is_bilinear_interior():
    """Zero-insert + [1,3,3,1] FIR is bilinear interpolation (half-pixel centres) away from the border."""
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    up = upfirdn2d(x, make_filter().double(), up=2, pad=(2, 1), gain=4.0)
    ref = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert up.shape == ref.shape
    assert torch.allclose(up[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])


def test_determinism():
    a, b = make_G(seed=3), make_G(seed=3)
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a(z), b(z))
    assert torch.equal(make_D(seed=1)(a(z)), make_D(seed=1)(b(z)))
    assert not torch.equal(make_G(seed=4)(z), a(z))


def test_backward_reaches_every_parameter(G, D):
    G.train().requires_grad_(True)
    img = G.synthesis(G.mapping(torch.randn(4, G.z_dim)), noise_mode="random")
    D(img).sum().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_discriminator_input_check(D):
    with pytest.raises(ValueError, match="expects"):
        D(torch.randn(2, 3, 16, 16))


