"""The real-photo model, the linear probe and the combined evidence: numpy serving equals scikit-learn, tail
probabilities behave, images that only one kind of evidence catches are flagged with that evidence named, and
the degradation strata keep degraded photos at the target false-positive rate."""

import json

import numpy as np
import pytest
import torch

from detector.components.evidence import (
    REASON_ARTIFACTS,
    REASON_GENERATOR,
    REASON_PHOTOS,
    REASON_PROBE,
    EvidenceModel,
    ProbeModel,
    RealPhotoModel,
    tail_probability,
    tail_quantile,
)
from detector.fitting.evidence import RealModelConfig, fit_evidence, fit_probe, fit_real_model, tail_reference


def test_real_photo_model_matches_scikit_learn():
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12)) + 3.0
    cfg = RealModelConfig(n_components=6, mixture=3)
    spec = json.loads(json.dumps(fit_real_model(X, cfg=cfg, backbone="test")))  # through JSON, as stored
    pca = PCA(n_components=6, whiten=True, random_state=0).fit(X)
    gm = GaussianMixture(3, covariance_type="full", reg_covar=cfg.reg_covar, random_state=0).fit(pca.transform(X))
    Y = rng.normal(size=(50, 12)) * 3
    np.testing.assert_allclose(RealPhotoModel(spec).score(Y), -gm.score_samples(pca.transform(Y)), rtol=1e-8)
    assert spec["n_components"] == 6 and spec["mixture"] == 3


def test_probe_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(5)
    A = np.r_[rng.normal(size=(150, 8)), rng.normal(size=(150, 8)) + [1.5, 0, 0, 0, 0, 0, 0, -1]] * 3 + 2
    y = np.r_[np.zeros(150), np.ones(150)]
    spec = json.loads(json.dumps(fit_probe(A, y, backbone="test")))
    scaler = StandardScaler().fit(A)
    lr = LogisticRegression(C=spec["C"], max_iter=5000).fit(scaler.transform(A), y)
    B = rng.normal(size=(40, 8)) * 4
    np.testing.assert_allclose(ProbeModel(spec).score(B), lr.decision_function(scaler.transform(B)), rtol=1e-6,
                               atol=1e-8)
    assert spec["cv_auc"] > 0.8 and spec["n"] == {"real": 150, "fake": 150}
    with pytest.raises(ValueError, match="too few images"):
        fit_probe(A[:15], y[:15], backbone="test")


def test_strata_keep_degraded_photos_at_the_target_rate():
    """Degraded photos look more generator-like (their decisions shift up), and few calibration photos are
    degraded. Measured against a pooled reference, a set of degraded photos is flagged far above the target; with
    the strata each kind of photo is compared with its own kind."""
    rng = np.random.default_rng(7)
    real_model = fit_real_model(rng.normal(size=(200, 4)), backbone="test")  # stands in; scores are given below

    def photos(n, share):  # a share of them degraded (blur sigma 1.5): decisions shifted up by 3
        deg = np.c_[np.where(rng.random(n) < share, 1.5, 0.0), np.ones(n)]
        return {"generator": rng.normal(size=n) + 3.0 * (deg[:, 0] > 0), "photos": rng.normal(size=n)}, deg

    ref, ref_deg = photos(1000, 0.1)  # the reference photos and their laundered copies
    cal_ph, cal_deg = photos(600, 0.1)
    fakes = {"generator": rng.normal(7, 1, 600), "photos": rng.normal(size=600)}
    cal = {k: np.r_[cal_ph[k], fakes[k]] for k in cal_ph}
    cal_deg = np.r_[cal_deg, cal_deg]
    y = np.r_[np.zeros(600), np.ones(600)]
    rates = {}
    for strata in (True, False):
        spec = fit_evidence(ref=ref, cal=cal, y_cal=y, real_model=real_model, target_fpr=0.02,
                            ref_degradation=ref_deg if strata else None, cal_degradation=cal_deg if strata else None)
        ev = EvidenceModel(json.loads(json.dumps(spec)))
        assert ("strata" in spec) == strata and set(spec["sizes"]["reference"]) == (
            {"sharp", "degraded"} if strata else {"all"})
        rates[strata] = []
        for share in (0.0, 1.0):  # a set of sharp photos, a set of degraded ones
            fresh, fresh_deg = photos(4000, share)
            rates[strata].append((ev.from_scores(fresh, fresh_deg if strata else None).p_fake > ev.threshold).mean())
    assert max(rates[True]) <= 0.05  # both kinds near the 2% target
    assert rates[False][1] > 3 * max(rates[True])  # pooled: the degraded photos flagged far more often


def test_real_photo_model_shrinks_with_few_photos_and_refuses_too_few():
    rng = np.random.default_rng(1)
    spec = fit_real_model(rng.normal(size=(40, 30)), backbone="test")
    assert spec["n_components"] == 10 and spec["mixture"] == 2  # 4 photos per dimension, 2 per parameter row
    with pytest.raises(ValueError, match="too few photos"):
        fit_real_model(rng.normal(size=(10, 30)), backbone="test")


def test_tail_probability_is_the_share_of_photos_and_keeps_ranking_past_them():
    ref_scores = np.random.default_rng(2).normal(size=2000)
    ref = tail_reference(ref_scores, tail_fraction=0.1)
    for v in (-1.0, 0.0, 0.5, 1.0):
        assert tail_probability(ref, v) == pytest.approx((ref_scores >= v).mean(), abs=0.01)
    v = np.linspace(-5, 12, 400)
    q = tail_probability(ref, v)
    assert np.all(np.diff(q) <= 1e-12) and q[0] == 1.0  # non-increasing, 1 far below every photo
    beyond = v > ref_scores.max()
    assert np.all(np.diff(q[beyond]) < 0) and q[beyond].min() > 0  # still ranks past the last photo
    u = ref["tail_start"]
    assert tail_probability(ref, u - 1e-9) == pytest.approx(tail_probability(ref, u + 1e-9), abs=1e-3)  # continuous


def _sets(rng, n):
    """(decision, photo-score) pairs: photos; the registered generator's samples (the classifier catches them, they
    look like photos); another generator's (the classifier misses them, they look unlike photos)."""
    photos = rng.normal(size=(n, 2))
    own = np.c_[rng.normal(4, 1, n), rng.normal(0, 1, n)]
    other = np.c_[rng.normal(0, 1, n), rng.normal(5, 1, n)]
    return photos, own, other


def test_combined_evidence_flags_both_kinds_and_names_the_reason():
    rng = np.random.default_rng(3)
    ref, _, _ = _sets(rng, 600)
    cal_photos, cal_own, _ = _sets(rng, 600)
    real_model = fit_real_model(rng.normal(size=(200, 4)), backbone="test")  # stands in; scores are given below
    spec = fit_evidence(ref={"generator": ref[:, 0], "photos": ref[:, 1]},
                        cal={"generator": np.r_[cal_photos[:, 0], cal_own[:, 0]],
                             "photos": np.r_[cal_photos[:, 1], cal_own[:, 1]]},
                        y_cal=np.r_[np.zeros(600), np.ones(600)], real_model=real_model, target_fpr=0.02)
    ev = EvidenceModel(json.loads(json.dumps(spec)))
    assert ev.combine["rule"] == "fisher"
    photos, own, other = _sets(np.random.default_rng(4), 2000)  # fresh images

    def judge(s):
        return ev.from_scores({"generator": s[:, 0], "photos": s[:, 1]})

    assert (judge(photos).p_fake > ev.threshold).mean() <= 0.04  # about the target false-positive rate
    for s, reason in ((own, REASON_GENERATOR), (other, REASON_PHOTOS)):
        out = judge(s)
        flagged = out.p_fake > ev.threshold
        assert flagged.mean() > 0.9, reason  # caught by one evidence alone
        reasons = [out.reasons(i) for i in range(len(s))]
        assert all(reasons[i] for i in np.flatnonzero(flagged))  # a flagged image always has a reason
        assert np.mean([reason in reasons[i] for i in np.flatnonzero(flagged)]) > 0.97  # and the right one
    # served from appearance features: the photo model's score comes back with the evidence
    A = rng.normal(size=(5, 4))
    out = ev.evaluate(np.zeros(5), A)
    np.testing.assert_allclose(out.photo_score, ev.real_model.score(A))
    np.testing.assert_allclose(out.q["photos"], tail_probability(ev.refs["all"]["photos"], ev.real_model.score(A)))


def test_fisher_rule_catches_what_two_moderate_evidences_say_together():
    """Two evidences each moderately unusual, and together very unusual for a photo: Fisher's rule (with its own
    tail under the reference photos) flags them, where a rule that asks one evidence alone to reach the threshold's
    tail lets most through, at the same false-positive rate."""
    rng = np.random.default_rng(11)
    real_model = fit_real_model(rng.normal(size=(200, 4)), backbone="test")
    ref = {"generator": rng.normal(size=1500), "photos": rng.normal(size=1500)}
    cal = {"generator": np.r_[rng.normal(size=600), rng.normal(2.2, 1, 600)],
           "photos": np.r_[rng.normal(size=600), rng.normal(2.2, 1, 600)]}
    y = np.r_[np.zeros(600), np.ones(600)]
    fresh_photos = {"generator": rng.normal(size=4000), "photos": rng.normal(size=4000)}
    fresh_fakes = {"generator": rng.normal(2.2, 1, 4000), "photos": rng.normal(2.2, 1, 4000)}
    ev = EvidenceModel(fit_evidence(ref=ref, cal=cal, y_cal=y, real_model=real_model, target_fpr=0.02))
    assert (ev.from_scores(fresh_photos).p_fake > ev.threshold).mean() <= 0.035
    caught = (ev.from_scores(fresh_fakes).p_fake > ev.threshold).mean()
    # one evidence alone at the 1% level of each (the Bonferroni share of a 2% rate): what the minimum would catch
    q = {k: 1.0 - np.searchsorted(np.sort(ref[k]), fresh_fakes[k]) / len(ref[k]) for k in ref}
    alone = (np.minimum(q["generator"], q["photos"]) <= 0.01).mean()
    assert caught > alone + 0.05


def test_tail_quantile_inverts_tail_probability():
    ref = tail_reference(np.random.default_rng(13).gamma(2.0, size=500))
    for q in (0.5, 0.2, 0.1, 0.03, 1e-4, 1e-9):
        assert tail_probability(ref, tail_quantile(ref, q)) == pytest.approx(q, rel=1e-6, abs=1e-3)


def test_detector_reports_reasons_and_the_classifier_alone_still_scores(tiny_detector, tmp_path):
    """The tiny detector carries a real-photo model; a file without one (--no-real-model) scores with its
    classifier alone and keeps its threshold."""
    from detector.runtime import Detector
    from gan_inversion.data import to_uint8

    folder, det = tiny_detector
    assert det.evidence is not None and det.info["evidence"] == ["generator", "photos", "probe", "artifacts"]
    with torch.no_grad():
        fake = det.G(torch.randn(4, det.G.z_dim, generator=torch.Generator().manual_seed(3)))
    photos = torch.randint(0, 256, (4, 1, 16, 16), generator=torch.Generator().manual_seed(9)).float() / 127.5 - 1
    res = det.score_tensors(torch.cat([to_uint8(fake).float() / 127.5 - 1, photos]))
    for r in res:
        d = r.to_dict()
        assert set(d["tail_probabilities"]) == {"generator", "photos", "probe", "artifacts"}
        assert (r.verdict == "fake") == bool(r.reasons) or r.verdict == "uncertain"
        assert set(r.reasons) <= {REASON_GENERATOR, REASON_PHOTOS, REASON_PROBE, REASON_ARTIFACTS}
    spec = json.loads((folder / "det.json").read_text())
    spec.pop("evidence")
    spec["contents"] = [c for c in spec["contents"] if c not in ("evidence", "artifacts")]
    (tmp_path / "old.json").write_text(json.dumps({**spec, "bundle": {**spec["bundle"],
                                                                        "file": str(folder / "g.pt")},
                                                   "encoder": {**spec["encoder"], "file": str(folder / "e.pt")}}))
    old = Detector.load(tmp_path / "old.json", perceptual=det.perceptual)
    assert old.evidence is None and old.threshold == spec["classifier"]["threshold"]
    r = old.score_tensors(photos[:1])[0]
    assert r.tail_probabilities is None and r.p_fake == pytest.approx(
        float(old.classifier.predict_proba(np.asarray([list(r.features.values())]))[0]))
