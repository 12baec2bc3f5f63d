"""The reconstruction autoencoders (detector/fitting/reconstructions.py) whose outputs join the artifact CNN's fakes."""

import json

import pytest
import torch

from detector.fitting.reconstructions import (
    UPSAMPLERS,
    ReconstructionAE,
    ReconstructionConfig,
    Upsample,
    reconstruct,
    train_autoencoders,
)
from gan_inversion.data import to_float, to_uint8

from .test_baselines import _sharp_and_smooth as sharp_and_smooth


@pytest.mark.parametrize("kind", UPSAMPLERS)
def test_each_upsampler_doubles_the_size_and_the_autoencoder_keeps_the_shape(kind):
    torch.manual_seed(0)
    assert Upsample(kind, 3, 5)(torch.randn(2, 3, 4, 6)).shape == (2, 5, 8, 12)
    y = ReconstructionAE(kind, width=4, latent_channels=2, img_channels=3)(torch.randn(2, 3, 16, 16))
    assert y.shape == (2, 3, 16, 16) and y.abs().max() <= 1


def test_an_unknown_upsampler_or_an_odd_size_is_refused():
    with pytest.raises(ValueError, match="unknown upsampler 'deconv'"):
        Upsample("deconv", 2, 2)
    with pytest.raises(ValueError, match="not divisible by 4"):
        train_autoencoders(torch.zeros(4, 1, 18, 18), cfg=ReconstructionConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="too few photos"):
        train_autoencoders(torch.zeros(1, 1, 16, 16), progress=False)


@pytest.fixture(scope="module")
def bank():
    smooth = sharp_and_smooth(n=64, seed=3, size=16)[1]
    cfg = ReconstructionConfig(width=8, latent_channels=4, steps=150, batch=16)
    nets, errors = train_autoencoders(smooth, cfg=cfg, progress=False)
    return smooth, nets, errors


def test_the_autoencoders_learn_to_reconstruct_photos(bank):
    smooth, nets, errors = bank
    assert len(nets) == len(errors) == len(UPSAMPLERS)
    spread = (smooth - smooth.mean(0)).abs().mean()   # the error of the best constant guess per pixel, about
    for net, err in zip(nets, errors, strict=True):
        with torch.no_grad():
            rec_err = (net(smooth) - smooth).abs().mean()
        assert rec_err < 0.5 * spread, (net.decoder[2].kind, float(rec_err), float(spread))
        assert err < 0.5 * spread


def test_reconstruct_is_per_image_balanced_and_8_bit(bank):
    smooth, nets, _ = bank
    rec = reconstruct(nets, smooth, seed=0)
    assert rec.shape == smooth.shape and torch.equal(to_float(to_uint8(rec)), rec)
    # batching does not matter (up to one 8-bit step where float rounding lands on the other side)
    assert (reconstruct(nets, smooth, seed=0, batch=3) - rec).abs().max() <= 2 / 255 + 1e-6
    with torch.no_grad():
        each = torch.stack([net(smooth) for net in nets])                     # [K, N, C, H, W]
    which = (each - rec).abs().amax(dim=(2, 3, 4)).argmin(0).tolist()         # the net each image went through
    assert (each - rec).abs().amax(dim=(2, 3, 4)).min(0).values.max() <= 1.01 / 255
    counts = [which.count(k) for k in range(len(nets))]
    assert max(counts) - min(counts) <= 1, counts                              # a balanced assignment
    assert not torch.equal(reconstruct(nets, smooth, seed=1), rec)            # seeded


def test_the_fit_trains_the_artifact_cnn_on_samples_and_reconstructions(tiny_detector):
    """The tiny detector's artifact CNN saw as many reconstructions as photos; the autoencoders train on photos
    past its own, or on its own when too few are left."""
    from detector.fitting.config import FitConfig
    from detector.fitting.images import reconstruction_fakes
    from gan_inversion.data import ImageDataset

    folder, _ = tiny_detector
    trained_on = json.loads((folder / "det.json").read_text())["evidence"]["artifacts"]["trained_on"]
    rec = trained_on["reconstructions"]
    assert trained_on["fake"] == trained_on["real"] + rec["n"] and rec["n"] == trained_on["real"]
    assert sorted(rec["mean_abs_error"]) == sorted(UPSAMPLERS)

    reals = ImageDataset(images=to_uint8(sharp_and_smooth(n=80, seed=4, size=16)[1]), name="smooth")
    photos = to_float(reals.images[:6])
    tiny = ReconstructionConfig(upsamplers=("nearest", "transposed"), width=4, latent_channels=2, steps=3, batch=4)
    cfg = FitConfig(n_real=20, reference_offset=10, n_reference=10, n_artifact=6, n_reconstruction_train=30)
    out = reconstruction_fakes(reals, photos, cfg, tiny, progress=False)
    assert out["images"].shape == photos.shape and out["summary"]["autoencoders_trained_on"].startswith("30 ")
    many = FitConfig(n_real=20, reference_offset=10, n_reference=10, n_artifact=6, n_reconstruction_train=60)
    out = reconstruction_fakes(reals, photos, many, tiny, progress=False)
    assert out["summary"]["autoencoders_trained_on"] == "the artifact CNN's photos"
