"""Attribution over several registered generators (detector/components/attribution.py): a tiny primary detector and a
second tiny generator, fitted, loaded, scored through the library and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from .conftest import make_G


@pytest.fixture(scope="session")
def attribution(tiny_detector, tmp_path_factory):
    from detector.components.attribution import load_member
    from detector.fitting.attribution import AttributionConfig, fit_attribution
    from gan_inversion.checkpoints import save_bundle
    from gan_inversion.data import ImageDataset

    folder, _ = tiny_detector
    d = tmp_path_factory.mktemp("attr")
    other = make_G(seed=7)
    save_bundle(d / "other.pt", G_ema=other, data={"name": "toy-other"})
    g = torch.Generator().manual_seed(1)
    reals = ImageDataset(images=torch.randint(0, 256, (160, 1, 16, 16), generator=g, dtype=torch.uint8), name="toy")
    spec = fit_attribution(d / "attr.json", primary_path=folder / "det.json", primary_name="toy",
                           members=[load_member("other", d / "other.pt")], reals=reals,
                           cfg=AttributionConfig(n_per_class=32, batch=32, real_offset=96), progress=False)
    return d, spec, other


def test_attribution_detector_scores_each_generator(attribution, tiny_detector):
    from detector.runtime import Detector
    from gan_inversion.metrics import generate

    d, spec, other = attribution
    a = spec["attribution"]
    assert a["classes"] == ["none", "toy", "other"]
    assert a["calibration_split"]["accuracy"] > 0.5  # three classes: chance is 1/3
    det = Detector.load(d / "attr.json")
    assert det.model_id == spec["model_id"] != tiny_detector[1].model_id
    assert det.info["attribution"] == {"generators": ["toy", "other"], "primary": "toy"}
    images = torch.cat([generate(other, 3, seed=5), generate(tiny_detector[1].G, 3, seed=5)])
    results = det.score_tensors(images)
    for r in results:
        assert set(r.attribution) == {"none", "toy", "other"}
        assert sum(r.attribution.values()) == pytest.approx(1.0, abs=1e-3)
        assert r.p_fake == pytest.approx(1.0 - r.attribution["none"], abs=1e-3)
        assert r.attributed_to == max(r.attribution, key=r.attribution.get)
        assert r.verdict == ("fake" if r.p_fake > det.threshold else "real")
        assert "attribution" in r.timings_ms
        d_ = r.to_dict()
        assert d_["attributed_to"] == r.attributed_to and d_["attribution"] == r.attribution
    # Per-image independence: each image alone scores as in the batch.
    alone = det.score_tensors(images[4:5])[0]
    assert alone.p_fake == pytest.approx(results[4].p_fake, abs=1e-4)


def test_a_changed_member_is_refused(attribution):
    from detector.runtime import Detector, DetectorError
    from gan_inversion.checkpoints import save_bundle

    d, spec, _ = attribution
    save_bundle(d / "other.pt.swap", G_ema=make_G(seed=8))
    moved = dict(spec, members=[dict(spec["members"][0], bundle=dict(spec["members"][0]["bundle"],
                                                                        file="other.pt.swap"))])
    (d / "swapped.json").write_text(json.dumps(moved))
    with pytest.raises(DetectorError, match="another generator than the one registered"):
        Detector.load(d / "swapped.json")
    with pytest.raises(DetectorError, match="without the cascade"):
        Detector.load(d / "attr.json", cascade=True)



def test_an_operating_point_refit_of_the_primary_keeps_the_attribution(attribution):
    """Refitting the primary's operating point changes its model id's `-op` suffix, not its probabilities: the
    attribution over it still loads; a primary with other probabilities is refused."""
    from detector.runtime import Detector, DetectorError

    d, spec, _ = attribution
    of = spec["attribution_of"]
    refit = dict(of, model_id=of["model_id"] + "-op1a2b3c4d")
    (d / "refit.json").write_text(json.dumps(dict(spec, attribution_of=refit)))
    assert Detector.load(d / "refit.json").primary_name == of["name"]
    (d / "other.json").write_text(json.dumps(dict(spec, attribution_of=dict(of, model_id="toy-0000-1111"))))
    with pytest.raises(DetectorError, match="refit the attribution"):
        Detector.load(d / "other.json")

def test_the_stored_model_is_what_serving_evaluates(attribution):
    from detector.components.attribution import AttributionModel

    _, spec, _ = attribution
    m = AttributionModel(spec["attribution"])
    R = np.random.default_rng(0).normal(size=(5, len(spec["attribution"]["row_names"])))
    P = m.probabilities(R)
    assert P.shape == (5, 3) and np.allclose(P.sum(1), 1.0)
    assert np.allclose(m.p_fake(P), 1 - P[:, 0])


def test_fit_and_detect_from_the_command_line(tiny_detector, tmp_path, capsys, monkeypatch):
    from detector.cli import main
    from gan_inversion.checkpoints import save_bundle

    folder, det = tiny_detector
    save_bundle(tmp_path / "other.pt", G_ema=make_G(seed=9))
    # `resynth fit --register` reads Fashion-MNIST: give it a tiny stand-in folder of that layout
    import gan_inversion.data as data

    g = torch.Generator().manual_seed(2)
    imgs = data.ImageDataset(images=torch.randint(0, 256, (1200, 1, 16, 16), generator=g, dtype=torch.uint8),
                             name="toy")
    monkeypatch.setattr(data, "load_fashion_mnist", lambda *a, **k: imgs)
    with pytest.raises(SystemExit, match="NAME=BUNDLE"):
        main(["fit", "--register", "broken", "--primary", str(folder / "det.json")])
    assert main(["fit", "--register", f"other={tmp_path / 'other.pt'}", "--primary", str(folder / "det.json"),
                 "--primary-name", "toy", "--n-per-class", "24", "--batch", "24", "--cache", str(tmp_path / "c"),
                 "--out", str(tmp_path / "attr.json"), "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["classes"] == ["none", "toy", "other"]
    x = torch.randint(0, 256, (1, 1, 16, 16), dtype=torch.uint8)
    import cv2

    cv2.imwrite(str(tmp_path / "x.png"), x[0, 0].numpy())
    assert main(["detect", str(tmp_path / "x.png"), "--detector", str(tmp_path / "attr.json"), "--json",
                 "--device", "cpu"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(r["attribution"]) == {"none", "toy", "other"} and r["attributed_to"] in r["attribution"]


def test_the_api_and_audit_reports_show_the_attribution(attribution, tmp_path):
    import csv
    import io

    import cv2
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings
    from detector.audit import AuditConfig, open_db, run_audit
    from detector.audit.report import render_report
    from detector.runtime import Detector

    d, _, other = attribution
    det = Detector.load(d / "attr.json")
    x = torch.randint(0, 256, (16, 16), generator=torch.Generator().manual_seed(3), dtype=torch.uint8).numpy()
    data = cv2.imencode(".png", x)[1].tobytes()
    with TestClient(create_app(Settings(), loader=lambda s: det)) as client:
        body = client.post("/v1/detect", content=data, headers={"content-type": "image/png"}).json()
        assert set(body["attribution"]) == {"none", "toy", "other"} and body["attributed_to"] in body["attribution"]
        assert client.get("/v1/model").json()["attribution"]["generators"] == ["toy", "other"]
    root = tmp_path / "media"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.png").write_bytes(cv2.imencode(".png", np.roll(x, i))[1].tobytes())
    engine = open_db(f"sqlite:///{tmp_path / 'a.db'}")
    aid = run_audit(engine, root, detector=det, cfg=AuditConfig(), progress=False)
    rows = list(csv.DictReader(io.StringIO(render_report(engine, aid, "csv").decode())))
    assert len(rows) == 3 and all(r["attributed_to"] in ("none", "toy", "other") for r in rows)
    assert b"attributed to" in render_report(engine, aid, "html")


def test_calibrating_an_attribution_detector_moves_its_own_threshold(attribution, tmp_path):
    from detector.fitting.calibrate import calibrate
    from detector.runtime import Detector

    d, spec, _ = attribution
    p = np.linspace(0.0, 1.0, 400)
    out = tmp_path / "sub" / "cal.json"
    new = calibrate(d / "attr.json", p, fpr=0.05, out_path=out, source="mine")
    assert new["attribution"]["threshold"] == pytest.approx(np.quantile(p, 0.95), abs=0.01)
    out.parent.mkdir()
    out.write_text(json.dumps(new))
    det = Detector.load(out)  # every file it names is found from its new place
    assert det.threshold == new["attribution"]["threshold"] and det.model_id == new["model_id"]
