"""Tiny seeded components shared by the tests (a few thousand parameters, milliseconds per forward)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from detector.fitting.artifacts import ArtifactConfig
from detector.fitting.reconstructions import ReconstructionConfig
from gan_inversion.networks import Discriminator, Generator

torch.set_num_threads(1)
# Hypothesis (under schemathesis) keeps its example database in the working directory unless told otherwise.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", tempfile.mkdtemp(prefix="resynth-hypothesis-"))

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


@pytest.fixture(scope="session")
def perc():
    """Random-weight MobileNetV2 perceptual distance (tests only), 32px input."""
    from gan_inversion.perceptual import build_perceptual

    return build_perceptual("mobilenet_v2", pretrained=False, input_size=32)


@pytest.fixture
def D():
    return make_D()


TINY_FRAMING = {"kind": "pad", "native_resolution": 12, "canvas": 16, "offset": 2, "fill": 0}


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory):
    """A whole tiny detector: 16px generator, encoder, random-weight perceptual net, fitted classifier.

    Returns (folder, Detector); the folder holds g.pt, e.pt, det.json and the feature cache.
    """
    from detector.features import FeatureConfig
    from detector.fitting.classifier import ClassifierConfig
    from detector.fitting.config import DetectorConfig, FitConfig
    from detector.fitting.fit import fit_detector
    from detector.runtime import Detector
    from gan_inversion.checkpoints import save_bundle
    from gan_inversion.data import ImageDataset
    from gan_inversion.encoder import EncoderTrainConfig, load_encoder, train_encoder
    from gan_inversion.perceptual import build_perceptual

    d = tmp_path_factory.mktemp("det")
    G, D = make_G(seed=0), make_D(seed=0)
    save_bundle(d / "g.pt", G_ema=G, D=D, data={"name": "toy", "framing": TINY_FRAMING})
    perc = build_perceptual("mobilenet_v2-random", input_size=32)
    g = torch.Generator().manual_seed(0)
    reals = ImageDataset(images=torch.randint(0, 256, (120, 1, 16, 16), generator=g, dtype=torch.uint8), name="toy")
    train_encoder(d / "e.pt", G, reals, perceptual=perc, progress=False,
                  cfg=EncoderTrainConfig(steps=5, batch_fake=4, batch_real=4, checkpoint_every=5))
    E, _ = load_encoder(d / "e.pt", G=G)
    config = DetectorConfig(
        features=FeatureConfig(refine_steps=2), classifier=ClassifierConfig(cv_folds=3, target_fpr=0.05),
        fit=FitConfig(n_real=96, n_fake=96, batch=24, launder_prob=0.5, latent_map=24, n_reference=24,
                      reference_offset=0, reconstruction_fakes=True),
        artifacts=TINY_ARTIFACTS, reconstruction=TINY_RECONSTRUCTIONS)
    fit_detector(d / "det.json", G=G, D=D, encoder=E, perceptual=perc, reals=reals, bundle_file="g.pt",
                 encoder_file="e.pt", cache_dir=d / "cache", progress=False, config=config)
    return d, Detector.load(d / "det.json")


# the artifact CNN of the tiny detectors: a few channels, a few epochs
TINY_ARTIFACTS = ArtifactConfig(width=4, max_epochs=3, min_epochs=1, patience=1, batch=16)
# and the autoencoders whose reconstructions join its fakes: a few channels, a few steps
TINY_RECONSTRUCTIONS = ReconstructionConfig(width=4, latent_channels=2, steps=10, batch=8)


def pytest_addoption(parser):
    parser.addoption("--fuzz-examples", type=int, default=300,
                     help="schemathesis cases (all operations, positive and negative) in tests/test_fuzz.py")


# ------------------------------------------------------------------------------ tests leave no trace in the repo
REPO = Path(__file__).resolve().parent.parent
NOT_OURS = {".git", ".venv", "data", ".cache", "__pycache__", ".ruff_cache", ".pytest_cache"}  # set-up and tools


def _repo_files() -> dict[str, tuple[int, int]]:
    out = {}
    for d, dirs, files in os.walk(REPO):
        dirs[:] = [x for x in dirs if x not in NOT_OURS and not x.endswith(".egg-info")]
        for f in files:
            st = os.lstat(os.path.join(d, f))
            out[os.path.relpath(os.path.join(d, f), REPO)] = (st.st_mtime_ns, st.st_size)
    return out


def pytest_sessionstart(session):
    session.config._repo_before = _repo_files()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_repo_before", None)
    if before is None:
        return
    after = _repo_files()
    changed = sorted(k for k in after.keys() | before.keys() if after.get(k) != before.get(k))
    if changed:
        print(f"\nthe tests wrote into the repository: {changed[:20]}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Relative paths a test (or the code under test) writes land in its own temporary folder."""
    monkeypatch.chdir(tmp_path)
