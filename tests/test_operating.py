"""The operating point: a fake threshold that delivers its rate on photos it never saw, per degradation stratum,
and an uncertain band whose share of photos is known in advance; 'real' only where every check agrees."""

import numpy as np
import pytest
import torch

from detector.components.evidence import DEGRADED_STRATUM
from detector.components.operating import DOUBTS, OperatingPoint, check_scores, sharpness
from detector.fitting.operating import OperatingConfig, OperatingPointError, fit_operating_point, presented

CONDITIONS = ("clean", "blur1")


def _photos(n: int, seed: int):
    """Synthetic photos' scores: half sharp, half 'blurred' (a degraded stratum whose p_fake runs higher, as
    degraded photos' do), each with the checks a detector scores."""
    rng = np.random.default_rng(seed)
    degraded = np.arange(n) % 2 == 1
    deg = np.c_[np.where(degraded, 1.5, 0.0), np.ones(n)]
    logit_p = rng.normal(-4, 1, n) + 1.5 * degraded  # degraded photos look more suspicious
    p = 1 / (1 + np.exp(-logit_p))
    scores = {"combined": logit_p, "generator": rng.normal(0, 1, n), "photos": rng.gamma(3, 1, n),
              "unexplained": rng.lognormal(0, 0.3, n) * np.where(degraded, 0.7, 1.0),
              "sharpness": rng.normal(np.where(degraded, 0.2, 1.0), 0.1)}
    return p, scores, deg, np.arange(n) // 2, np.arange(n) % 2


def test_the_threshold_delivers_its_rate_on_fresh_photos_per_stratum():
    p, s, deg, photo, cond = _photos(8000, seed=0)
    cfg = OperatingConfig(target_fpr=0.01, uncertain_rate=0.10, conditions=CONDITIONS)
    spec = fit_operating_point(p, s, deg, photo=photo, condition=cond, cfg=cfg, strata=dict(DEGRADED_STRATUM))
    op = OperatingPoint(spec)
    assert set(spec["per_stratum"]) == {"sharp", "degraded"}
    # the degraded stratum gets its own, higher threshold: one threshold would flag far more blurred photos
    assert spec["per_stratum"]["degraded"]["threshold"] > spec["per_stratum"]["sharp"]["threshold"]
    p2, s2, deg2, _, cond2 = _photos(40000, seed=1)  # photos the fit never saw
    j = op.judge(p2, s2, deg2)
    doubt = np.array([bool(d) for d in j.doubts])
    for k in (0, 1):  # each condition (here: each stratum) within the band 0.5-1.5% at a 1% target
        assert 0.005 <= j.fake[cond2 == k].mean() <= 0.015
        assert 0.08 <= (~j.fake & doubt)[cond2 == k].mean() <= 0.12  # the uncertain band's rate, known in advance
    single = fit_operating_point(p, s, deg, photo=photo, condition=cond, cfg=cfg, strata=None)
    flagged = OperatingPoint(single).judge(p2, s2, deg2).fake
    assert flagged[cond2 == 1].mean() > 0.015  # one threshold for all: the degraded photos pay for it


def test_real_means_consistent_with_photos_on_every_check():
    p, s, deg, photo, cond = _photos(4000, seed=2)
    op = OperatingPoint(fit_operating_point(p, s, deg, photo=photo, condition=cond, strata=dict(DEGRADED_STRATUM),
                                            cfg=OperatingConfig(conditions=CONDITIONS)))
    typical = {k: np.array([np.median(v[deg[:, 0] == 0])]) for k, v in s.items()}
    sharp = np.array([[0.0, 1.0]])
    j = op.judge(np.array([0.001]), typical, sharp)
    assert not j.fake[0] and j.doubts[0] == []  # real
    unexplained = {**typical, "unexplained": np.array([50.0])}  # the generator cannot reproduce it
    j = op.judge(np.array([0.001]), unexplained, sharp)
    assert not j.fake[0] and j.doubts[0] == [DOUBTS["unexplained"]]  # not 'real': uncertain, with the reason
    # a sharp input that the degradation search explained as blurred: sharper than the degraded photos
    as_blurred = {**typical, "sharpness": np.array([1.0])}
    j = op.judge(np.array([0.001]), as_blurred, np.array([[1.5, 1.0]]))
    assert DOUBTS["sharpness"] in j.doubts[0] and j.stratum == ["degraded"]
    j = op.judge(np.array([0.999]), unexplained, sharp)
    assert j.fake[0]  # over the threshold: fake, whatever the doubts


def test_too_few_photos_are_refused_and_small_strata_merge():
    p, s, deg, photo, cond = _photos(150, seed=3)
    with pytest.raises(OperatingPointError, match="at least 1000"):
        fit_operating_point(p, s, deg, photo=photo, condition=cond, cfg=OperatingConfig(conditions=CONDITIONS))
    p, s, deg, photo, cond = _photos(1200, seed=3)  # 600 a stratum: too few for two strata at 1%
    spec = fit_operating_point(p, s, deg, photo=photo, condition=cond, strata=dict(DEGRADED_STRATUM),
                               cfg=OperatingConfig(conditions=CONDITIONS))
    assert set(spec["per_stratum"]) == {"all"} and "strata" not in spec
    with pytest.raises(OperatingPointError, match="rates"):
        fit_operating_point(p, s, deg, photo=photo, condition=cond, cfg=OperatingConfig(target_fpr=0.6))
    op = OperatingPoint(spec)
    with pytest.raises(ValueError, match="not scored: sharpness"):
        op.judge(p[:3], {k: v[:3] for k, v in s.items() if k != "sharpness"}, deg[:3])


def test_presentation_and_sharpness():
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    images, photo, cond = presented(x, {"kind": "pad", "native_resolution": 28, "offset": 2, "canvas": 32},
                                    ("clean", "blur1"))
    assert images.shape == (8, 1, 32, 32) and photo.tolist() == [0, 1, 2, 3] * 2 and cond.tolist() == [0] * 4 + [1] * 4
    assert torch.all(images[..., :2, :] == -1)  # framed on the black canvas, as a user's file is
    s = sharpness(images)
    assert np.all(s[4:] < s[:4])  # blurred copies are less sharp


def test_check_scores_reads_the_evidence_and_the_features():
    from detector.components.evidence import Evidence

    ev = Evidence(p_fake=np.array([0.5, 0.9]), q={}, scores={"photos": np.array([1.0, 2.0])})
    X = np.array([[0.1, 3.0, 7.0], [0.2, 4.0, 8.0]])
    out = check_scores(ev, X, ["pix_mse", "perc_total", "w_dist_avg"], torch.zeros(2, 1, 8, 8))
    assert set(out) == {"photos", "combined", "unexplained", "unexplained_pixels", "latent", "sharpness"}
    np.testing.assert_allclose(out["combined"], [0.0, np.log(9)])
    np.testing.assert_allclose(out["unexplained"], [3.0, 4.0])


def test_a_fit_sets_its_operating_point_on_held_out_photos(tmp_path):
    """A whole tiny fit with room in its train split: the operating point comes from the plan's own slice,
    recorded in the file; the served verdicts follow it; refitting it replaces it."""
    from detector.features import FeatureConfig
    from detector.fitting.classifier import ClassifierConfig
    from detector.fitting.config import DetectorConfig, FitConfig
    from detector.fitting.fit import fit_detector
    from detector.fitting.operating import add_operating_point
    from detector.runtime import Detector
    from gan_inversion.checkpoints import save_bundle
    from gan_inversion.data import ImageDataset
    from gan_inversion.perceptual import build_perceptual

    from .conftest import TINY_FRAMING, make_D, make_G

    G, D = make_G(seed=1), make_D(seed=1)
    save_bundle(tmp_path / "g.pt", G_ema=G, D=D, data={"name": "toy", "framing": TINY_FRAMING})
    perc = build_perceptual("mobilenet_v2-random", input_size=32)
    g = torch.Generator().manual_seed(1)
    reals = ImageDataset(images=torch.randint(0, 256, (160, 1, 16, 16), generator=g, dtype=torch.uint8), name="toy")
    config = DetectorConfig(
        features=FeatureConfig(refine_steps=1), classifier=ClassifierConfig(cv_folds=3, target_fpr=0.05),
        fit=FitConfig(n_real=48, n_fake=48, batch=32, latent_map=0, n_reference=24, reference_offset=0,
                      artifact_cnn=False, n_artifact=0, n_reconstruction_train=0, n_operating=60))
    spec = fit_detector(tmp_path / "det.json", G=G, D=D, encoder=None, perceptual=perc, reals=reals,
                        bundle_file="g.pt", encoder_file=None, progress=False, config=config)
    op = spec["operating"]
    assert spec["data_plan"]["slices"]["operating"] == [72, 132]  # past the fit's and the reference photos
    assert op["photos"]["presentations"] == 60 * 9 and "-op" in spec["model_id"]
    det = Detector.load(tmp_path / "det.json")
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    cells = op["cells"]  # thresholds by presentation cell, a cell without enough photos at the fallback's
    assert set(cells["labels"]) <= set(op["photos"]["conditions"])
    for r in det.score_tensors(x):
        assert r.threshold in {*cells["thresholds"].values(), cells["fallback_threshold"]}
        assert r.verdict == ("fake" if r.p_fake > r.threshold else "uncertain" if r.doubts else "real")
    again = add_operating_point(tmp_path / "det.json", reals, n=60, progress=False,
                                cfg=OperatingConfig(target_fpr=0.1, uncertain_rate=0.2))
    assert again["model_id"].count("-op") == 1 and again["operating"]["uncertain_rate"] == 0.2
    other = ImageDataset(images=reals.images.flip(0), name="other")
    with pytest.raises(OperatingPointError, match="not the train split"):
        add_operating_point(tmp_path / "det.json", other, n=60, progress=False)


def _laundered_photos(n: int, seed: int):
    """Synthetic photos in three conditions of one degradation stratum whose scores differ (noisy photos score
    higher, as they do), each condition leaving its own presentation statistics."""
    rng = np.random.default_rng(seed)
    cond = np.arange(n) % 3                                  # clean, noise0.02, jpeg50
    logit_p = rng.normal(-4, 1, n) + np.array([0.0, 1.2, -0.5])[cond]
    stats = rng.normal(0, 1, (n, 5)) * 0.3 + np.array([[0.6, 0.0, 0.1, 0.01, 0.0],
                                                        [0.3, 0.1, 0.2, 0.08, 0.0],
                                                        [0.5, 0.05, 0.1, 0.02, 0.01]])[cond] * 10
    scores = {"combined": logit_p, "generator": rng.normal(0, 1, n)}
    return 1 / (1 + np.exp(-logit_p)), scores, np.c_[np.zeros(n), np.ones(n)], stats, np.arange(n) // 3, cond


def test_presentation_cells_hold_every_laundering_to_the_rate():
    conditions = ("clean", "noise0.02", "jpeg50")
    p, s, deg, stats, photo, cond = _laundered_photos(9000, seed=4)
    cfg = OperatingConfig(target_fpr=0.01, uncertain_rate=0.10, conditions=conditions)
    spec = fit_operating_point(p, s, deg, photo=photo, condition=cond, cfg=cfg, stats=stats)
    assert set(spec["cells"]["thresholds"]) == set(conditions) and min(spec["cells"]["own_cell"].values()) > 0.9
    assert spec["cells"]["thresholds"]["noise0.02"] > spec["cells"]["thresholds"]["clean"]
    op = OperatingPoint(spec)
    p2, s2, deg2, stats2, _, cond2 = _laundered_photos(60000, seed=5)  # photos the fit never saw
    fake = op.judge(p2, s2, deg2, stats2).fake
    for k in range(3):
        assert 0.005 <= fake[cond2 == k].mean() <= 0.015, (conditions[k], fake[cond2 == k].mean())
    with pytest.raises(ValueError, match="presentation_stats"):
        op.judge(p2, s2, deg2)  # thresholds by cell need the images' statistics
    one = OperatingPoint(fit_operating_point(p, s, deg, photo=photo, condition=cond, stats=stats,
                                             cfg=OperatingConfig(conditions=conditions, cells=False)))
    mixed = one.judge(p2, s2, deg2).fake  # one threshold for the stratum's mixture: noisy photos pay for it
    assert mixed[cond2 == 1].mean() > 0.015 and mixed[cond2 == 2].mean() < 0.005


def test_presentation_stats_see_the_launderings():
    from detector import laundering
    from detector.components.operating import PRESENTATION_STATS, presentation_stats

    g = torch.Generator().manual_seed(0)
    x = -torch.ones(6, 1, 32, 32)
    x[:, :, 6:26, 8:24] = torch.rand(6, 1, 20, 16, generator=g) * 1.6 - 0.6   # an object on a black ground
    st = dict(zip(PRESENTATION_STATS, presentation_stats(x).T, strict=True))
    noisy = dict(zip(PRESENTATION_STATS, presentation_stats(laundering.apply(x, "noise", 0.02)).T, strict=True))
    jpeg = dict(zip(PRESENTATION_STATS, presentation_stats(laundering.apply(x, "jpeg", 50)).T, strict=True))
    blurred = dict(zip(PRESENTATION_STATS, presentation_stats(laundering.apply(x, "blur", 1.0)).T, strict=True))
    assert np.all(noisy["black"] < st["black"]) and np.all(noisy["dark_detail"] > st["dark_detail"])
    assert np.all(jpeg["near_black"] > st["near_black"])
    assert np.all(blurred["sharpness"] < st["sharpness"])
