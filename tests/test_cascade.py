"""The two-stage cascade (detector/runtime/cascade.py): band choice, fitting, and serving through both stages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detector.fitting.cascade import CascadeConfig, choose_band, fit_cascade
from detector.runtime import Detector


def test_band_keeps_within_its_budgets_and_around_the_threshold():
    rng = np.random.default_rng(0)
    n = 1000
    y = np.r_[np.zeros(n), np.ones(n)].astype(int)
    p2 = np.r_[rng.beta(1, 8, n), rng.beta(8, 1, n)]             # the full detector: good
    p1 = np.clip(p2 + rng.normal(0, 0.15, 2 * n), 0, 1)           # stage 1: the same, noisier
    t = 0.6
    lo, hi = choose_band(p1, p2, y, t, max_missed=0.02, max_extra_fpr=0.005)
    assert lo <= t <= hi
    missed = ((y == 1) & (p2 > t) & (p1 < lo)).sum()
    extra = ((y == 0) & (p2 <= t) & (p1 > hi)).sum()
    assert missed <= 0.02 * n and extra <= 0.005 * n
    assert missed >= 0.02 * n - 2  # and it uses the budget (a band wider than needed decides less)
    # no budget: nothing the full detector catches is cleared, nothing it clears is flagged
    lo0, hi0 = choose_band(p1, p2, y, t, max_missed=0.0, max_extra_fpr=0.0)
    assert ((y == 1) & (p2 > t) & (p1 < lo0)).sum() == 0 and ((y == 0) & (p2 <= t) & (p1 > hi0)).sum() == 0
    assert lo0 <= lo and hi0 >= hi


@pytest.fixture(scope="module")
def cascaded(tmp_path_factory):
    """A tiny detector fitted on half of 96 photos, and its cascade on the other half."""
    from detector.features import FeatureConfig
    from detector.fitting.classifier import ClassifierConfig
    from detector.fitting.config import DetectorConfig, FitConfig
    from detector.fitting.fit import fit_detector
    from detector.spec import write_spec
    from gan_inversion.checkpoints import save_bundle
    from gan_inversion.data import ImageDataset
    from gan_inversion.encoder import EncoderTrainConfig, load_encoder, train_encoder
    from gan_inversion.perceptual import build_perceptual

    from .conftest import TINY_ARTIFACTS, TINY_FRAMING, make_D, make_G

    d = tmp_path_factory.mktemp("cascade")
    G, D = make_G(seed=0), make_D(seed=0)
    save_bundle(d / "g.pt", G_ema=G, D=D, data={"name": "toy", "framing": TINY_FRAMING})
    perc = build_perceptual("mobilenet_v2-random", input_size=32)
    g = torch.Generator().manual_seed(1)
    reals = ImageDataset(images=torch.randint(0, 256, (120, 1, 16, 16), generator=g, dtype=torch.uint8), name="toy")
    train_encoder(d / "e.pt", G, reals, perceptual=perc, progress=False,
                  cfg=EncoderTrainConfig(steps=5, batch_fake=4, batch_real=4, checkpoint_every=5))
    E, _ = load_encoder(d / "e.pt", G=G)
    fit_detector(d / "det.json", G=G, D=D, encoder=E, perceptual=perc, reals=reals, bundle_file="g.pt",
                 encoder_file="e.pt", cache_dir=d / "cache", progress=False,
                     config=DetectorConfig(
                         features=FeatureConfig(refine_steps=2, degradations=((0, 1), (1.0, 1))),
                         classifier=ClassifierConfig(cv_folds=3, target_fpr=0.05),
                         fit=FitConfig(n_real=64, n_fake=64, batch=32, launder_prob=0.5),
                         artifacts=TINY_ARTIFACTS))
    full = Detector.load(d / "det.json", cascade=False)
    spec = fit_cascade(full, reals, cfg=CascadeConfig(n_real=48, n_fake=48, max_missed=0.05),
                       cache_dir=d / "cache", progress=False)
    write_spec(d / "cas.json", spec)
    return d, full, Detector.load(d / "cas.json", cascade=True)


def test_fit_cascade_writes_a_first_stage_and_a_new_model_id(cascaded):
    d, full, det = cascaded
    spec = json.loads((d / "cas.json").read_text())
    c = spec["cascade"]
    assert c["features"]["refine_steps"] == 0 and c["features"]["degradations"] == [[0.0, 1.0], [1.0, 1.0]]
    assert c["classifier"]["feature_names"] == spec["classifier"]["feature_names"]
    assert c["evidence"]["real_model"] == spec["evidence"]["real_model"]  # the detector's own photo model
    assert c["band"]["lo"] <= det.threshold <= c["band"]["hi"]
    assert c["held_out"]["n_real"] + c["held_out"]["n_fake"] == 96 - 16  # a third of the photos: the reference
    # the file stays the full detector (its id, its metrics); switched on, the cascade says so in the id
    assert spec["model_id"] == full.model_id and det.model_id == full.model_id + c["id_suffix"]
    assert det.first_stage is not None and Detector.load(d / "cas.json").first_stage is None
    from detector.features import feature_context

    assert feature_context(det) == feature_context(full)  # the same features: cached ones are found again
    assert det.info["cascade"]["band"] == c["band"]
    with pytest.raises(ValueError, match="need 48 train-split photos"):
        from gan_inversion.data import ImageDataset

        fit_cascade(full, ImageDataset(images=torch.zeros(70, 1, 16, 16, dtype=torch.uint8), name="toy"),
                    cfg=CascadeConfig(n_real=48, n_fake=48), progress=False)


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 16, 16), generator=g).float() / 127.5 - 1


def test_each_image_is_decided_by_one_stage_independently_of_its_batch(cascaded, monkeypatch):
    _, full, det = cascaded
    x = _images(8, seed=11)
    ref = {r.source: r for r in full.score_tensors(x)}
    fs = det.first_stage
    monkeypatch.setattr(fs, "lo", 0.0)
    monkeypatch.setattr(fs, "hi", 1.0)
    refined = det.score_tensors(x)  # nothing decided at stage 1: every image gets the full detector's answer
    assert all(r.stage == "refined" for r in refined)
    for r in refined:
        assert r.p_fake == pytest.approx(ref[r.source].p_fake, abs=1e-6) and r.verdict == ref[r.source].verdict
        assert "first_encode" in r.timings_ms and "refine" in r.timings_ms
    monkeypatch.setattr(fs, "lo", det.threshold)
    monkeypatch.setattr(fs, "hi", det.threshold)
    first = det.score_tensors(x)  # everything decided at stage 1, on its own probability
    assert all(r.stage == "first" for r in first)
    assert all("refine" not in r.timings_ms for r in first)
    assert all(r.verdict == ("fake" if r.p_fake > det.threshold else "real") for r in first)
    p_first = np.array([r.p_fake for r in first])
    # a band between: the middle images refined, the others kept, each as when scored alone
    mid = float(np.median(p_first))
    monkeypatch.setattr(fs, "lo", min(mid, det.threshold))
    monkeypatch.setattr(fs, "hi", max(mid, det.threshold) + 1e-9)
    mixed = det.score_tensors(x)
    for i, r in enumerate(mixed):
        alone = det.score_tensors(x[i:i + 1])[0]
        assert r.stage == alone.stage and r.p_fake == pytest.approx(alone.p_fake, abs=1e-6)
        expect = first[i] if r.stage == "first" else ref[r.source]
        assert r.p_fake == pytest.approx(expect.p_fake, abs=1e-6)
        assert r.to_dict()["stage"] == r.stage
        # each stage reports the evidence it weighed: the first stage has no probe nor artifact CNN, the
        # refined one has them
        assert set(r.tail_probabilities) == ({"generator", "photos"} if r.stage == "first"
                                             else {"generator", "photos", "probe", "artifacts"})
        assert set(r.tail_probabilities) == set(alone.tail_probabilities)
    assert {r.stage for r in mixed} == {"first", "refined"} or len(set(p_first)) == 1


def test_cascade_probabilities_match_what_scoring_serves(cascaded):
    from detector.features import extract_features

    _, _, det = cascaded
    x = _images(6, seed=12)
    X1 = extract_features(det.G, det.D, det.encoder, det.perceptual, x, cfg=det.first_stage.feature_cfg).values
    X2 = extract_features(det.G, det.D, det.encoder, det.perceptual, x, cfg=det.feature_cfg).values
    p, decided = det.cascade_probabilities(X1.numpy(), X2.numpy(), x)
    served = det.score_tensors(x)
    np.testing.assert_allclose(p, [r.p_fake for r in served], atol=1e-6)
    assert list(decided) == [r.stage == "first" for r in served]


def test_service_reports_the_stage_and_can_switch_the_cascade_off(cascaded):
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from api.app import create_app, default_loader
    from api.settings import Settings, settings_from_env

    d, _, det = cascaded
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (16, 16), dtype=np.uint8)).save(buf, format="PNG")
    with TestClient(create_app(Settings(), loader=lambda s: det)) as client:
        r = client.post("/v1/detect", content=buf.getvalue(), headers={"content-type": "image/png"})
        assert r.status_code == 200 and r.json()["stage"] in ("first", "refined")
        assert client.get("/v1/model").json()["cascade"]["band"] == det.first_stage.spec["band"]
    assert settings_from_env({"RESYNTH_CASCADE": "1"}).cascade is True
    assert settings_from_env({}).cascade is False
    with pytest.raises(ValueError, match="RESYNTH_CASCADE"):
        settings_from_env({"RESYNTH_CASCADE": "maybe"})
    on = default_loader(Settings(detector=str(d / "cas.json"), cascade=True, device="cpu"))
    assert on.first_stage is not None and on.model_id == det.model_id
    off = default_loader(Settings(detector=str(d / "cas.json"), device="cpu"))
    assert off.first_stage is None and off.model_id == json.loads((d / "cas.json").read_text())["model_id"]
    assert all(r.stage is None for r in off.score_tensors(_images(2, seed=4)))


def test_first_stage_images_are_judged_by_the_operating_point(cascaded, monkeypatch):
    """With an operating point (fitted on the full detector's evidence), an image decided at stage 1, which
    has no probe or artifact CNN score, is judged on what it has: a verdict, no error."""
    from detector.components.operating import DOUBTS, OperatingPoint
    from detector.fitting.operating import OperatingConfig, fit_operating_point, score_photos

    _, full, det = cascaded
    photos = _images(200, seed=14)
    p, scores, deg, _ = score_photos(full, photos, cache=None, progress=False)
    assert {"probe", "artifacts"} <= set(scores)
    spec = fit_operating_point(p, scores, deg, photo=np.arange(200), condition=np.zeros(200, int), strata=None,
                               cfg=OperatingConfig(target_fpr=0.05, conditions=("clean",), cells=False))
    monkeypatch.setattr(det, "operating", OperatingPoint(spec))
    fs = det.first_stage
    x = _images(8, seed=13)
    for lo, hi in ((det.threshold, det.threshold), (0.0, 1.0)):  # everything at stage 1; everything refined
        monkeypatch.setattr(fs, "lo", lo)
        monkeypatch.setattr(fs, "hi", hi)
        results = det.score_tensors(x)
        assert {r.stage for r in results} == ({"first"} if lo == hi else {"refined"})
        for r in results:
            assert r.verdict in ("fake", "uncertain", "real")
            if r.stage == "first":  # the checks it was never scored on raise no doubt
                assert not {DOUBTS["probe"], DOUBTS["artifacts"]} & set(r.doubts)
