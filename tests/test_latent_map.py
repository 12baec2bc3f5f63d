"""The 2D latent map (detector/components/latent_map.py): fitted on codes of photos and samples, stored in the
detector file, drawn in the evidence."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest


def test_the_map_separates_two_clouds_and_draws_them():
    from detector.components.latent_map import LatentMap
    from detector.fitting.latent_map import fit_latent_map

    rng = np.random.default_rng(0)
    photos = rng.normal(size=(200, 16))
    samples = rng.normal(size=(150, 16)) + 4.0 * np.eye(16)[3]  # shifted along one direction
    spec = json.loads(json.dumps(fit_latent_map(photos, samples, max_points=100)))  # plain JSON numbers
    assert len(spec["photos"]) == 100 and len(spec["samples"]) == 100 and spec["n"] == {"photos": 200,
                                                                                        "samples": 150}
    assert spec["held_out_auc"] > 0.95  # the horizontal axis is the separating direction
    m = LatentMap(spec)
    a, b = m.project(photos)[:, 0], m.project(samples)[:, 0]
    assert min(abs(a.mean() - b.mean()) / a.std(), 99) > 3  # the first axis carries the shift
    png = m.png(m.project(samples[:1])[0])
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (256, 256, 3) and (img != 255).any()
    with pytest.raises(ValueError, match="dimension 8"):
        m.project(np.zeros((1, 8)))
    with pytest.raises(ValueError, match="at least 3"):
        fit_latent_map(photos[:2], samples)


def test_scoring_places_each_image_on_the_stored_map(tiny_detector):
    from detector.components.latent_map import ws_code
    from detector.features import extract_features
    from gan_inversion.metrics import generate

    _, det = tiny_detector
    assert det.latent_map is not None and len(det.spec["latent_map"]["photos"]) == 24
    images = generate(det.G, 3, seed=11)
    results = det.score_tensors(images, explain=True)
    fb = extract_features(det.G, det.D, det.encoder, det.perceptual, images, cfg=det.feature_cfg)
    want = det.latent_map.project(ws_code(fb.ws))
    for r, w in zip(results, want, strict=True):
        assert np.allclose(r.latent_2d, w, atol=1e-3)
        assert r.to_dict()["latent_2d"] == r.latent_2d
        assert r.evidence["latent_2d"][:8] == b"\x89PNG\r\n\x1a\n"
    alone = det.score_tensors(images[2:3])[0]  # independent of its batch mates
    assert np.allclose(alone.latent_2d, results[2].latent_2d, atol=1e-3)


def test_flagged_audit_items_carry_the_plot_into_the_html_report():
    from detector.audit.config import LATENT_PNG
    from detector.audit.tasks import summary_extras
    from detector.runtime import ScoreResult

    r = ScoreResult(source="x", p_fake=0.9, verdict="fake", threshold=0.5, model_id="m", features={},
                    timings_ms={}, evidence={"latent_2d": b"\x89PNG-bytes"}, attribution={"none": 0.1, "a": 0.9},
                    attributed_to="a")
    out = summary_extras(r)
    assert out["attributed_to"] == "a" and LATENT_PNG in out
    r.verdict = "real"
    assert LATENT_PNG not in summary_extras(r)
