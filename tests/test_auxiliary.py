"""Auxiliary generators (gan_inversion/auxiliary.py) and the fit's use of their samples as the probe's fakes."""

import json

import pytest
import torch

from gan_inversion.auxiliary import (
    AuxTrainConfig,
    StridedConvDiscriminator,
    UpsampleConvGenerator,
    load_aux,
    sample_aux,
    save_aux,
    train_aux_gan,
)
from gan_inversion.data import ImageDataset


@pytest.mark.parametrize("res", [8, 16, 32])
def test_generator_and_discriminator_shapes(res):
    G = UpsampleConvGenerator(z_dim=8, width=8, img_resolution=res)
    D = StridedConvDiscriminator(width=8, img_resolution=res)
    x = G(torch.randn(3, 8))
    assert x.shape == (3, 1, res, res) and x.abs().max() <= 1
    assert D(x).shape == (3,)


def test_a_resolution_that_is_not_a_power_of_two_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        UpsampleConvGenerator(img_resolution=28)


@pytest.fixture(scope="module")
def aux_file(tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    photos = ImageDataset(images=torch.randint(0, 256, (64, 1, 16, 16), generator=g, dtype=torch.uint8), name="toy")
    G, info = train_aux_gan(photos, cfg=AuxTrainConfig(epochs=1, batch=16, width=8, z_dim=8), max_steps=3,
                            progress=False)
    path = tmp_path_factory.mktemp("aux") / "aux.pt"
    save_aux(path, G, info)
    return path, G, info


def test_training_runs_the_asked_steps_and_the_file_round_trips(aux_file):
    path, G, info = aux_file
    assert info["steps"] == 3 and info["data"] == "toy"
    loaded = load_aux(path)
    a, b = sample_aux(loaded, 5, seed=1), sample_aux(G, 5, seed=1)
    assert a.shape == (5, 1, 16, 16)
    torch.testing.assert_close(a, b, atol=2e-2, rtol=0)  # the file holds fp16 weights
    assert torch.equal(sample_aux(loaded, 5, seed=1), a)
    assert not torch.equal(sample_aux(loaded, 5, seed=2), a)


def test_an_unknown_family_and_a_foreign_file_are_refused(tmp_path, aux_file):
    photos = ImageDataset(images=torch.zeros(8, 1, 16, 16, dtype=torch.uint8), name="toy")
    with pytest.raises(ValueError, match="unknown auxiliary family"):
        train_aux_gan(photos, family="transposed", max_steps=1, progress=False)
    with pytest.raises(ValueError, match="8 photos are fewer than one batch"):
        train_aux_gan(photos, max_steps=1, progress=False)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(ValueError, match="not an auxiliary generator file"):
        load_aux(other)
    with pytest.raises(FileNotFoundError, match="no such auxiliary generator"):
        load_aux(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="positive"):
        sample_aux(aux_file[1], 0, seed=0)


def test_the_probe_images_come_from_unused_photos_or_the_fit_part(aux_file):
    from detector.fitting.config import FitConfig
    from detector.fitting.images import auxiliary_probe_images, unused_reals

    path = aux_file[0]
    g = torch.Generator().manual_seed(1)
    reals = ImageDataset(images=torch.randint(0, 256, (200, 1, 16, 16), generator=g, dtype=torch.uint8), name="toy")
    cfg = FitConfig(n_real=20, reference_offset=10, n_reference=10, n_artifact=10, n_reconstruction_train=10,
                    aux_generators=(str(path), str(path)), n_aux=30, launder_prob=0.0)
    fallback = torch.zeros(7, 1, 16, 16)
    out = auxiliary_probe_images(reals, cfg, photos_fallback=fallback)
    assert out["photos"].shape == out["fakes"].shape == (60, 1, 16, 16)
    torch.testing.assert_close(out["photos"], unused_reals(reals, cfg, 60, part="auxiliary"))
    s = out["summary"]
    assert s["n_photos"] == s["n_fakes"] == 60 and s["photos"] == "the data plan's 'auxiliary' photos"
    assert [e["seed"] for e in s["generators"]] == [s["generators"][0]["seed"], s["generators"][0]["seed"] + 1]
    assert len(s["generators"][0]["sha256"]) == 64
    assert not torch.equal(out["fakes"][:30], out["fakes"][30:])  # each file its own seed

    few = FitConfig(n_real=20, reference_offset=10, n_reference=10, n_artifact=10, n_reconstruction_train=200,
                    aux_generators=(str(path),), n_aux=30)
    out = auxiliary_probe_images(reals, few, photos_fallback=fallback)
    assert out["summary"]["photos"].startswith("the classifier's fit part") and len(out["photos"]) == 30


def test_a_generator_of_another_resolution_is_refused(tmp_path):
    from detector.fitting.config import FitConfig
    from detector.fitting.images import auxiliary_probe_images

    G = UpsampleConvGenerator(z_dim=8, width=8, img_resolution=8)
    save_aux(tmp_path / "a8.pt", G, {})
    reals = ImageDataset(images=torch.zeros(50, 1, 16, 16, dtype=torch.uint8), name="toy")
    with pytest.raises(ValueError, match="8px 1-channel images; the fit's photos are 16px"):
        auxiliary_probe_images(reals, FitConfig(aux_generators=(str(tmp_path / "a8.pt"),), n_aux=4),
                               photos_fallback=torch.zeros(3, 1, 16, 16))


def test_a_fit_with_an_auxiliary_generator_gives_its_samples_to_the_probe(tiny_detector, aux_file, tmp_path):
    """A refit of the tiny detector (its cached features) with the auxiliary generator: the probe holds the
    auxiliary photos and fakes on top of its own, and the detector file says where they came from."""
    from detector.features import FeatureConfig
    from detector.fitting.classifier import ClassifierConfig
    from detector.fitting.config import DetectorConfig, FitConfig
    from detector.fitting.fit import fit_detector
    from detector.runtime import Detector

    from .conftest import TINY_ARTIFACTS

    folder, det = tiny_detector
    base = json.loads((folder / "det.json").read_text())
    g = torch.Generator().manual_seed(0)
    reals = ImageDataset(images=torch.randint(0, 256, (120, 1, 16, 16), generator=g, dtype=torch.uint8), name="toy")
    cfg = FitConfig(n_real=96, n_fake=96, batch=24, launder_prob=0.5, latent_map=0, n_reference=24,
                    reference_offset=0, artifact_cnn=False, aux_generators=(str(aux_file[0]),), n_aux=40)
    spec = fit_detector(tmp_path / "det.json", G=det.G, D=det.D, encoder=det.encoder, perceptual=det.perceptual,
                        reals=reals, bundle_file=str(folder / "g.pt"), encoder_file=str(folder / "e.pt"),
                        cache_dir=folder / "cache", progress=False,
                            config=DetectorConfig(
                                features=FeatureConfig(refine_steps=2),
                                classifier=ClassifierConfig(cv_folds=3, target_fpr=0.05),
                                fit=cfg,
                                artifacts=TINY_ARTIFACTS))
    n_base, n_aux = base["evidence"]["probe"]["n"], spec["evidence"]["probe"]["n"]
    assert n_aux == {"real": n_base["real"] + 40, "fake": n_base["fake"] + 40}
    aux = spec["fit"]["auxiliary_fakes"]
    assert aux["n_fakes"] == 40 and aux["generators"][0]["file"] == str(aux_file[0])
    assert json.loads((tmp_path / "det.json").read_text())["config"]["fit"]["aux_generators"] == [str(aux_file[0])]
    scored = Detector.load(tmp_path / "det.json")
    assert scored.threshold is not None
    assert base["fit"].get("auxiliary_fakes") is None
