import argparse

import pytest
import torch

from gan_inversion.checkpoints import BundleError, load_bundle, save_bundle

from .conftest import make_D, make_G


@pytest.fixture
def bundle_path(tmp_path):
    G_ema, G, D = make_G(seed=1), make_G(seed=2), make_D(seed=3)
    path = tmp_path / "b.pt"
    data = {"name": "toy", "fingerprint": "abc", "framing": {"kind": "pad", "native_resolution": 12, "canvas": 16,
                                                              "offset": 2, "fill": 0}}
    save_bundle(path, G_ema=G_ema, G=G, D=D, progress={"kimg": 1.5, "step": 47}, data=data)
    return path, G_ema, G, D


def test_round_trip(bundle_path):
    path, G_ema, G, D = bundle_path
    b = load_bundle(path)
    z = torch.randn(2, 8)
    assert torch.equal(b.G_ema(z), G_ema(z))
    assert torch.equal(b.G(z), G(z))
    img = G(z)
    assert torch.equal(b.D(img), D(img))
    assert torch.equal(b.w_avg, G_ema.w_avg)
    assert b.progress == {"kimg": 1.5, "step": 47}
    assert b.framing["native_resolution"] == 12
    assert b.arch["G"]["channel_max"] == 8
    assert not any(p.requires_grad for p in b.G_ema.parameters())


def test_half_storage_is_close(tmp_path):
    G = make_G()
    save_bundle(tmp_path / "h.pt", G_ema=G, half=True)
    b = load_bundle(tmp_path / "h.pt")
    assert b.D is None and b.G is None
    z = torch.randn(2, 8)
    assert torch.allclose(b.G_ema(z), G(z), atol=2e-2)
    assert next(b.G_ema.parameters()).dtype == torch.float32


def test_missing_empty_truncated_foreign(tmp_path, bundle_path):
    path = bundle_path[0]
    with pytest.raises(BundleError, match="no such file"):
        load_bundle(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(BundleError, match="empty"):
        load_bundle(tmp_path / "empty.pt")
    data = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="corrupt or truncated"):
        load_bundle(tmp_path / "trunc.pt")
    (tmp_path / "text.pt").write_text("hello, not a checkpoint")
    with pytest.raises(BundleError, match="not a readable"):
        load_bundle(tmp_path / "text.pt")
    torch.save({"model": {"w": torch.zeros(2)}}, tmp_path / "foreign.pt")
    with pytest.raises(BundleError, match="not a resynth StyleGAN2 bundle"):
        load_bundle(tmp_path / "foreign.pt")
    torch.save({"g_ema": {}}, tmp_path / "ros.pt")
    with pytest.raises(BundleError, match="resynth convert"):
        load_bundle(tmp_path / "ros.pt")


def test_unsafe_pickle_is_refused(tmp_path):
    torch.save({"x": argparse.Namespace(cmd="rm -rf /")}, tmp_path / "evil.pt")  # arbitrary class: refused
    with pytest.raises(BundleError, match="weights_only"):
        load_bundle(tmp_path / "evil.pt")


def test_inconsistent_weights_and_version(tmp_path, bundle_path):
    obj = torch.load(bundle_path[0], weights_only=True)
    obj["G_ema"].pop("synthesis.const")
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(BundleError, match="do not match"):
        load_bundle(tmp_path / "bad.pt")
    obj = torch.load(bundle_path[0], weights_only=True)
    obj["format_version"] = 99
    torch.save(obj, tmp_path / "v99.pt")
    with pytest.raises(BundleError, match="version 99"):
        load_bundle(tmp_path / "v99.pt")
    obj = torch.load(bundle_path[0], weights_only=True)
    obj["D"] = None
    torch.save(obj, tmp_path / "noD.pt")
    with pytest.raises(BundleError, match="no discriminator"):
        load_bundle(tmp_path / "noD.pt", require_D=True)
