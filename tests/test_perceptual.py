import pytest
import torch

from gan_inversion.perceptual import (
    PerceptualUnavailable,
    build_perceptual,
    hub_checkpoint,
    parse_backend_id,
)


@pytest.fixture(scope="module")
def rand_mobilenet():
    return build_perceptual("mobilenet_v2", pretrained=False, input_size=32)


def _images(n=4, c=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, 16, 16, generator=g) * 2 - 1


def test_basic_properties(rand_mobilenet):
    p = rand_mobilenet
    assert p.backend_id == "mobilenet_v2-random@32" and parse_backend_id(p.backend_id) == ("mobilenet_v2-random", 32)
    x, y = _images(seed=0), _images(seed=1)
    assert torch.allclose(p(x, x), torch.zeros(4), atol=1e-6)
    assert torch.allclose(p(x, y), p(y, x), atol=1e-6)
    small = (x + 0.05 * torch.randn_like(x)).clamp(-1, 1)
    big = (x + 0.5 * torch.randn_like(x)).clamp(-1, 1)
    assert (p(x, small) < p(x, big)).all()


def test_stages_map_and_batch_independence(rand_mobilenet):
    p = rand_mobilenet
    x, y = _images(seed=2), _images(seed=3)
    out = p.compare(x, y, spatial=True)
    assert out["stages"].shape == (4, p.num_stages) and out["map"].shape == (4, 1, 16, 16)
    assert torch.allclose(out["stages"].sum(1), out["total"])
    assert torch.allclose(out["map"].mean(dim=[1, 2, 3]), out["total"], rtol=0.1)
    alone = p.compare(x[1:2], y[1:2])["total"]
    assert torch.allclose(alone, out["total"][1:2], atol=1e-6)


def test_rgb_and_shape_errors(rand_mobilenet):
    p = rand_mobilenet
    x, y = _images(c=3, seed=4), _images(c=3, seed=5)
    assert p(x, y).shape == (4,)
    with pytest.raises(ValueError, match="differ in shape"):
        p(x, y[:, :1])
    with pytest.raises(ValueError, match="1\\|3"):
        p(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="unknown perceptual backend"):
        build_perceptual("resnet")


def test_lpips_code_path_with_random_backbone():
    p = build_perceptual("lpips-alex-random", input_size=64)
    x, y = _images(seed=6), _images(seed=7)
    out = p.compare(x, y, spatial=True)
    assert p.backend == "lpips-alex-random" and out["stages"].shape == (4, 5)
    assert (out["total"] > 0).all() and torch.allclose(p(x, x), torch.zeros(4), atol=1e-6)


def test_lpips_without_imagenet_weights_is_refused():
    if hub_checkpoint("alexnet-owt-7be5be79.pth").is_file():
        pytest.skip("AlexNet weights are installed here")
    with pytest.raises(PerceptualUnavailable, match="not installed"):
        build_perceptual("lpips-alex")


def test_offline_mobilenet_weights_installed_by_setup():
    """`make setup` installs the real ImageNet MobileNetV2 file; torchvision verifies its hash on load."""
    assert hub_checkpoint("mobilenet_v2-b0353104.pth").is_file()
    p = build_perceptual("mobilenet_v2")
    assert p.backend_id == "mobilenet_v2@64"
    x = _images(seed=8)
    other = _images(seed=9)
    g = torch.Generator().manual_seed(0)
    small = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    big = (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert p(x, x).abs().max() < 1e-6 and torch.allclose(p(x, other), p(other, x))  # zero on itself, symmetric
    assert (p(x, small) < p(x, big)).all() and (p(x, big) < p(x, other)).all()  # grows with the distortion


def test_folded_batch_norm_and_cached_target_features_give_the_same_distances():
    from torch import nn

    from gan_inversion.perceptual import MobileNetPerceptual

    def build(fuse):
        p = MobileNetPerceptual(pretrained=False, input_size=32, seed=3, fuse=False)
        g = torch.Generator().manual_seed(9)
        for m in p.modules():  # non-trivial running statistics and affine parameters, the same in both copies
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        if fuse:
            from gan_inversion.perceptual import fuse_conv_bn

            fuse_conv_bn(p)
        return p

    plain, fused = build(False), build(True)
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x, y = _images(seed=4), _images(seed=5)
    a, b = plain.compare(x, y), fused.compare(x, y)
    assert torch.allclose(a["total"], b["total"], rtol=1e-4, atol=1e-6)
    assert torch.allclose(a["stages"], b["stages"], rtol=1e-4, atol=1e-6)
    # the target's side computed once and passed in gives the same distance
    assert torch.equal(fused(x, y, y_features=fused.target_features(y)), fused(x, y))
