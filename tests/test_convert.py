import argparse

import pytest
import torch

from gan_inversion.checkpoints import BundleError, atomic_save, load_bundle
from gan_inversion.convert import convert, convert_rosinality

from .rosinality_ref import make_rosinality_state, reference_discriminator, reference_generator, reference_mapping


@pytest.fixture(params=[dict(size=16, base=128, cmax=16), dict(size=32, base=128, cmax=8)])
def ros_ckpt(tmp_path, request):
    p = request.param
    g, d = make_rosinality_state(p["size"], style_dim=12, n_mlp=3, base=p["base"], cmax=p["cmax"])
    latent_avg = torch.randn(12)
    path = tmp_path / "ros.pt"
    # As rosinality's train.py writes it: with an argparse.Namespace beside the weights.
    torch.save({"g_ema": g, "d": d, "latent_avg": latent_avg, "args": argparse.Namespace(size=p["size"])}, path)
    return path, g, d, latent_avg, p


def test_generator_matches_reference(ros_ckpt):
    path, g, _, latent_avg, p = ros_ckpt
    b = convert(path)
    G = b.G_ema
    assert G.img_resolution == p["size"] and G.img_channels == 3 and G.w_dim == 12
    assert len(G.mapping.layers) == 3
    assert torch.equal(G.w_avg, latent_avg)
    z = torch.randn(3, 12, generator=torch.Generator().manual_seed(0))
    w = reference_mapping(g, z)
    assert torch.allclose(G.mapping(z)[:, 0], w, atol=1e-5)
    ws = torch.randn(3, G.num_ws, 12, generator=torch.Generator().manual_seed(1))  # W+ with distinct rows
    ours = G.synthesis(ws, noise_mode="const")
    ref = reference_generator(g, ws)
    assert ours.shape == ref.shape == (3, 3, p["size"], p["size"])
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_discriminator_matches_reference(ros_ckpt):
    path, _, d, _, p = ros_ckpt
    D = convert(path).D
    img = torch.randn(4, 3, p["size"], p["size"], generator=torch.Generator().manual_seed(2))
    assert torch.allclose(D(img), reference_discriminator(d, img).squeeze(1), atol=1e-4, rtol=1e-4)


def test_converted_bundle_saves_and_loads(ros_ckpt, tmp_path):
    obj = convert_rosinality(ros_ckpt[0])
    atomic_save(obj, tmp_path / "conv.pt")
    b = load_bundle(tmp_path / "conv.pt", require_D=True)
    assert b.meta["source"] == "rosinality/stylegan2-pytorch"
    ws = torch.randn(2, b.G_ema.num_ws, 12)
    assert torch.allclose(b.G_ema.synthesis(ws), reference_generator(ros_ckpt[1], ws), atol=1e-4, rtol=1e-4)


def test_without_latent_avg_or_d(tmp_path):
    g, _ = make_rosinality_state(8, style_dim=4, n_mlp=2, base=32, cmax=4)
    torch.save({"g_ema": g}, tmp_path / "g.pt")
    b = convert(tmp_path / "g.pt", w_avg_samples=500)
    assert b.D is None
    assert "mean of 500" in b.meta["w_avg_source"]
    assert b.w_avg.abs().sum() > 0


def test_bad_inputs(tmp_path):
    with pytest.raises(BundleError, match="no such file"):
        convert(tmp_path / "missing.pt")
    torch.save({"state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(BundleError, match="no 'g_ema'"):
        convert(tmp_path / "x.pt")
    g, _ = make_rosinality_state(8, style_dim=4, n_mlp=2, base=32, cmax=4)
    g.pop("convs.1.conv.weight")
    torch.save({"g_ema": g}, tmp_path / "broken.pt")
    with pytest.raises(BundleError, match="lacks the tensor"):
        convert(tmp_path / "broken.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(BundleError, match=r"not a checkpoint resynth converts .*found bytes b'\\x00"):
        convert(tmp_path / "junk.pt")
    (tmp_path / "image.pt").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    with pytest.raises(BundleError, match="found a PNG image"):
        convert(tmp_path / "image.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(BundleError, match="found empty"):
        convert(tmp_path / "empty.pt")
    (tmp_path / "bad.pt").write_bytes(b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19." + b"\x00" * 20)
    with pytest.raises(BundleError, match="cannot be read"):  # torch's legacy header, then garbage
        convert(tmp_path / "bad.pt")


def test_every_serialization_is_told_apart_by_content(tmp_path):
    """rosinality checkpoints saved with torch's zip and its legacy serialization (what torch < 1.6 wrote, and
    `_use_new_zipfile_serialization=False` still writes) convert to the same bundle; a plain pickle is NVIDIA's."""
    import pickle

    from gan_inversion.convert import file_format

    g, d = make_rosinality_state(16, style_dim=12, n_mlp=3, base=128, cmax=16)
    obj = {"g_ema": g, "d": d, "latent_avg": torch.randn(12), "args": argparse.Namespace(size=16)}
    torch.save(obj, tmp_path / "zip.pt")
    torch.save(obj, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"G_ema": None}, f, protocol=2)  # a plain pickle, even of protocol 2
    assert [file_format(tmp_path / n) for n in ("zip.pt", "legacy.pt", "plain.pkl")] == \
        ["torch-zip", "torch-legacy", "pickle"]
    a, b = convert(tmp_path / "zip.pt"), convert(tmp_path / "legacy.pt")
    sa, sb = a.G_ema.state_dict(), b.G_ema.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(x, y) for x, y in zip(a.D.state_dict().values(), b.D.state_dict().values(), strict=True))
    with pytest.raises(BundleError, match="stylegan2-ada"):  # read as NVIDIA's, refused as not one
        convert(tmp_path / "plain.pkl")
