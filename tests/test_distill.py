"""The distilled encoder: teacher targets are the detector's own refined codes, computed once and resumably; the
student learns them, resumes, and refuses to mix targets."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from detector.features import extract_features
from detector.fitting.distill import TargetPlan, chunk_images, load_targets, teacher_targets
from gan_inversion.checkpoints import read_checkpoint
from gan_inversion.data import ImageDataset, to_float, to_uint8
from gan_inversion.distill import DistillConfig, evaluate_student, train_distilled
from gan_inversion.encoder import EncoderTrainConfig, load_encoder, train_encoder

from .conftest import make_G


@pytest.fixture
def reals():
    g = torch.Generator().manual_seed(1)
    return ImageDataset(images=torch.randint(0, 256, (64, 1, 16, 16), generator=g, dtype=torch.uint8), name="toy")


@pytest.fixture
def start(tmp_path, reals, perc):
    """A tiny generator and a briefly trained encoder for it (the student's starting point)."""
    G = make_G(seed=3)
    train_encoder(tmp_path / "e0.pt", G, reals, perceptual=perc, progress=False,
                  cfg=EncoderTrainConfig(steps=3, batch_fake=4, batch_real=4, checkpoint_every=3))
    return G, tmp_path / "e0.pt"


def _targets(G, n: int, seed: int):
    """Images and the codes that made them (as a refinement that found them exactly would return)."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ws = G.mapping(z)  # [n, num_ws, w_dim], rows equal: a code in W
        images = to_uint8(G.synthesis(ws, noise_mode="const"))
    return images, ws


def test_student_learns_the_refined_codes(tmp_path, start, perc):
    G, e0 = start
    images, ws = _targets(G, 96, seed=0)
    E0, _ = load_encoder(e0, G=G)
    before = evaluate_student(E0, G, images, ws, space="W")
    cfg = DistillConfig(steps=160, batch=16, lr=3e-3, checkpoint_every=80, val_fraction=0.0)
    train_distilled(tmp_path / "s.pt", G, images, ws, perceptual=perc, init_from=e0, cfg=cfg,
                    source={"what": "codes of the test"}, progress=False)
    E, info = load_encoder(tmp_path / "s.pt", G=G)
    after = evaluate_student(E, G, images, ws, space="W")
    assert after["latent"] < 0.5 * before["latent"], (before, after)
    assert after["synthesis_mse"] < before["synthesis_mse"]
    assert info["step"] == 160 and info["distilled_from"] == {"what": "codes of the test"}
    assert info["init_from"]["path"] == str(e0)


def test_distillation_resumes_and_refuses_other_targets(tmp_path, start, perc):
    G, e0 = start
    images, ws = _targets(G, 32, seed=1)
    cfg = DistillConfig(steps=6, batch=8, checkpoint_every=100)
    out = tmp_path / "s.pt"
    train_distilled(out, G, images, ws, perceptual=perc, init_from=e0, cfg=cfg, source={"n": 32, "grid": (0.5, 1.0)},
                    max_seconds=0.0, progress=False)
    assert load_encoder(out, G=G)[1]["step"] == 1  # stopped after one step, saved resumably
    assert "opt" in read_checkpoint(out)
    # a run cut short and accepted as it is: resumed with the step count it reached, it is stored slim
    cut = tmp_path / "cut.pt"
    shutil.copy(out, cut)
    train_distilled(cut, G, images, ws, perceptual=perc, init_from=e0, cfg=dataclasses.replace(cfg, steps=1),
                    source={"n": 32, "grid": (0.5, 1.0)}, progress=False)
    slim = read_checkpoint(cut)
    assert "opt" not in slim and slim["step"] == 1
    assert all(v.dtype == torch.float16 for v in slim["state_dict"].values() if v.is_floating_point())
    assert load_encoder(cut, G=G)[1]["metrics"] == read_checkpoint(out)["metrics"]
    # the same targets described as JSON would (a manifest read back: lists for tuples) resume the run
    train_distilled(out, G, images, ws, perceptual=perc, init_from=e0, cfg=cfg, source={"n": 32, "grid": [0.5, 1.0]},
                    progress=False)
    assert load_encoder(out, G=G)[1]["step"] == 6
    with pytest.raises(ValueError, match="other targets"):
        train_distilled(out, G, images, ws, perceptual=perc, init_from=e0, cfg=cfg, source={"n": 33},
                        progress=False)
    with pytest.raises(ValueError, match="targets must be"):
        train_distilled(tmp_path / "t.pt", G, images, ws[:5], perceptual=perc, init_from=e0, cfg=cfg,
                        progress=False)


def test_teacher_targets_are_the_detectors_refined_codes(tmp_path, tiny_detector):
    _, det = tiny_detector
    g = torch.Generator().manual_seed(2)
    reals = ImageDataset(images=torch.randint(0, 256, (40, 1, 16, 16), generator=g, dtype=torch.uint8), name="toy")
    tp = TargetPlan(n_photos=8, n_samples=8, chunk=8, launder_prob=0.5)
    work = tmp_path / "targets"
    teacher_targets(det, reals, work, tp=tp, batch=4, progress=False)
    images, ws, X, names, what = load_targets(work)
    assert images.dtype == torch.uint8 and len(images) == 16 == len(ws) == len(X) == len(what)
    assert sum(w.startswith("photo:") for w in what) == 8
    # chunk 1 again, from its seeds: the same images, and the refined codes extract_features gives them
    again, _ = chunk_images(det, reals, tp, 1)
    assert torch.equal(again, images[8:])
    fb = extract_features(det.G, det.D, det.encoder, det.perceptual, to_float(again), cfg=det.feature_cfg)
    assert torch.allclose(fb.ws.float(), ws[8:], atol=1e-5)
    assert names == fb.names
    # a second call finds every chunk and computes nothing; another plan is refused, naming what differs
    stamps = {p.name: p.stat().st_mtime_ns for p in work.glob("chunk_*.pt")}
    teacher_targets(det, reals, work, tp=tp, progress=False)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in work.glob("chunk_*.pt")}
    with pytest.raises(ValueError, match="plan"):
        teacher_targets(det, reals, work, tp=dataclasses.replace(tp, launder_prob=0.0), progress=False)


def test_target_plan_refuses_uneven_sizes():
    with pytest.raises(ValueError, match="multiples"):
        TargetPlan(n_photos=10, n_samples=10, chunk=8)
    with pytest.raises(ValueError, match="even"):
        TargetPlan(n_photos=9, n_samples=9, chunk=9)
