"""The artifact CNN (detector/components/artifact_cnn.py): training, its file, and its place among the detector's
evidence."""

import json

import numpy as np
import pytest
import torch

from detector.components.artifact_cnn import ArtifactCNN, artifact_logits, load_artifact_cnn
from detector.components.evidence import tail_probability
from detector.fitting.artifacts import ArtifactConfig, save_artifact_cnn, train_artifact_cnn

from .test_baselines import _sharp_and_smooth as sharp_and_smooth


def _sharp_and_smooth(n=40, seed=0):
    return sharp_and_smooth(n, seed, size=16)


@pytest.fixture(scope="module")
def trained():
    sharp, smooth = _sharp_and_smooth(seed=1)
    cfg = ArtifactConfig(width=4, max_epochs=6, min_epochs=2, patience=2, batch=16, augment_prob=0.0)
    net, history = train_artifact_cnn(sharp, smooth, cfg=cfg, progress=False)
    return net, history, cfg


def test_it_learns_a_separable_task_and_keeps_the_best_epoch(trained):
    net, history, _ = trained
    ts, tm = _sharp_and_smooth(seed=2)  # held out
    logits = artifact_logits(net, torch.cat([ts, tm]))
    assert logits.shape == (80,) and logits.dtype == np.float64
    wins = (logits[40:, None] > logits[None, :40]).mean()  # the held-out AUC
    assert wins > 0.95
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    # the best epoch's weights are kept: the validation AUC they reach is the history's best
    assert max(h[2] for h in history) >= history[-1][2]


def test_logits_do_not_depend_on_the_batch(trained):
    """Batch norm runs on its fitted statistics: an image scores the same alone or among others."""
    net, _, _ = trained
    x = _sharp_and_smooth(n=6, seed=3)[0]
    together = artifact_logits(net, x)
    alone = np.concatenate([artifact_logits(net, x[i:i + 1]) for i in range(6)])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(artifact_logits(net, x, batch=4), together, rtol=1e-5, atol=1e-5)


def test_the_file_round_trips_and_is_checked(trained, tmp_path):
    net, history, cfg = trained
    sha = save_artifact_cnn(tmp_path / "a.pt", net, cfg=cfg, history=history)
    back = load_artifact_cnn(tmp_path / "a.pt", sha256=sha)
    x = _sharp_and_smooth(n=5, seed=4)[0]
    np.testing.assert_array_equal(artifact_logits(back, x), artifact_logits(net, x))
    assert back.args == {"width": 4, "img_channels": 1}
    with pytest.raises(ValueError, match="fingerprint"):
        load_artifact_cnn(tmp_path / "a.pt", sha256="0" * 64)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="not a resynth-artifact-cnn file"):
        load_artifact_cnn(tmp_path / "b.pt")
    with pytest.raises(FileNotFoundError):
        load_artifact_cnn(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="eval mode"):
        artifact_logits(ArtifactCNN(width=4).train(), x)


def test_too_few_images_are_refused():
    sharp, smooth = _sharp_and_smooth(n=5)
    with pytest.raises(ValueError, match="too few images"):
        train_artifact_cnn(sharp, smooth, cfg=ArtifactConfig(width=4, max_epochs=1), progress=False)


def test_the_detector_weighs_it_and_checks_its_file(tiny_detector, tmp_path):
    from detector.runtime import Detector, DetectorError

    folder, det = tiny_detector
    entry = det.spec["evidence"]["artifacts"]
    assert (folder / entry["file"]).is_file() and entry["file"] == "det.artifacts.pt"
    assert "artifacts" in det.evidence.names and det.artifact_net is not None
    photos = torch.randint(0, 256, (3, 1, 16, 16), generator=torch.Generator().manual_seed(5)).float() / 127.5 - 1
    res = det.score_tensors(photos)
    L = det.artifact_scores(photos)
    # the tail probability is the share of reference photos at least as extreme as the image's logit (the tiny
    # detector estimates no degradation: every image is compared with the sharp stratum, or the only one)
    ev = det.evidence
    stratum = "sharp" if "sharp" in ev.refs else "all"
    np.testing.assert_allclose([r.tail_probabilities["artifacts"] for r in res],
                               tail_probability(ev.refs[stratum]["artifacts"], L))
    # its logits are needed: asked without them or the images, the evidence says so
    with pytest.raises(ValueError, match="artifact CNN"):
        ev.evaluate(np.zeros(2), np.zeros((2, len(ev.real_model.mean))))
    # a changed weights file is refused by name
    spec = json.loads((folder / "det.json").read_text())
    blob = bytearray((folder / entry["file"]).read_bytes())
    blob[-10] ^= 0xFF
    (tmp_path / "det.artifacts.pt").write_bytes(bytes(blob))
    for f in ("g.pt", "e.pt"):
        (tmp_path / f).write_bytes((folder / f).read_bytes())
    (tmp_path / "det.json").write_text(json.dumps(spec))
    with pytest.raises(DetectorError, match="artifact CNN"):
        Detector.load(tmp_path / "det.json", perceptual=det.perceptual)
    # a detector fitted without the artifact CNN (--no-artifact-cnn: three evidences) loads and scores without it
    ev_spec = dict(spec["evidence"])
    ev_spec.pop("artifacts")
    ev_spec["evidences"] = ["generator", "photos", "probe"]
    (tmp_path / "det.artifacts.pt").unlink()
    contents = [c for c in spec["contents"] if c != "artifacts"]
    (tmp_path / "old.json").write_text(json.dumps({**spec, "evidence": ev_spec, "contents": contents}))
    old = Detector.load(tmp_path / "old.json", perceptual=det.perceptual)
    assert old.artifact_net is None and old.artifact_scores(photos) is None
    assert set(old.score_tensors(photos)[0].tail_probabilities) == {"generator", "photos", "probe"}


def test_its_training_images_are_no_other_part_of_the_fit(tiny_detector):
    """Photos past the fit's and the reference photos, and fresh samples; with too few photos, the classifier's
    fit part (never its calibration part)."""
    from detector.fitting.classifier import ClassifierConfig, split_indices
    from detector.fitting.config import FitConfig
    from detector.fitting.images import artifact_images, fit_images, unused_reals
    from gan_inversion.data import ImageDataset, to_uint8

    _, det = tiny_detector
    imgs = torch.arange(80, dtype=torch.uint8).view(80, 1, 1, 1).expand(80, 1, 16, 16).contiguous()
    reals = ImageDataset(images=imgs, name="numbered")  # each photo's value says which one it is
    cfg = FitConfig(n_real=20, n_fake=20, reference_offset=10, n_reference=10, n_artifact=30)
    clf_cfg = ClassifierConfig(cv_folds=3)
    y = np.r_[np.zeros(20), np.ones(20)].astype(int)

    def ids(x):
        return set(to_uint8(x)[:, 0, 0, 0].tolist())

    photos, samples, source = artifact_images(det.G, reals, cfg, y, clf_cfg)
    assert len(photos) == len(samples) == 30 and "'artifact'" in source
    fit_real = ids(fit_images(det.G, reals, FitConfig(n_real=20, n_fake=20, launder_prob=0.0))[0])
    reference = ids(unused_reals(reals, cfg, 10, part="reference"))
    assert ids(photos).isdisjoint(fit_real | reference) and len(ids(photos)) == 30
    small = FitConfig(n_real=20, n_fake=20, reference_offset=10, n_reference=10, n_artifact=60)
    photos, samples, source = artifact_images(det.G, reals, small, y, clf_cfg)
    fit_idx, cal_idx = split_indices(y, clf_cfg)
    assert source == "the classifier's fit part" and len(photos) == (y[fit_idx] == 0).sum()
    clean = fit_images(det.G, reals, FitConfig(n_real=20, n_fake=20, launder_prob=0.0))[0]
    assert ids(photos) == ids(clean[fit_idx[y[fit_idx] == 0]])
    assert ids(photos).isdisjoint(ids(clean[cal_idx[y[cal_idx] == 0]]))


def test_chained_copies_are_a_laundering_then_jpeg_and_reproducible():
    from detector.fitting.images import chained_copies

    x = _sharp_and_smooth(n=12, seed=6)[0]
    a, what = chained_copies(x, seed=0)
    b, _ = chained_copies(x, seed=0)
    assert torch.equal(a, b) and a.shape == x.shape and len(what) == 12
    assert all(w.split(":")[0] in ("blur", "resize", "noise") and "+jpeg:" in w for w in what), what
    assert not torch.equal(chained_copies(x, seed=1)[0], a)
