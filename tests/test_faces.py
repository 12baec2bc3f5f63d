"""Face models (gan_inversion/faces.py): a rosinality-format 256x256 generator (random weights) converted and
marked as a face model; `resynth detect`, the library and the API find, level and crop the face the way the
model's training images are prepared, and say so in the result."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch


def draw_face(angle: float = 0.0, size: int = 400, skin=(150, 180, 215), seed: int = 0) -> np.ndarray:
    """A drawn frontal face (BGR) that OpenCV's Haar cascades find: skin oval, eyes with pupils, brows, mouth."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 90, np.uint8)
    c = (size // 2 + int(rng.integers(-10, 10)), size // 2 + int(rng.integers(-10, 10)))
    cv2.ellipse(img, c, (110, 145), 0, 0, 360, skin, -1)
    for dx in (-45, 45):
        cv2.ellipse(img, (c[0] + dx, c[1] - 35), (22, 11), 0, 0, 360, (255, 255, 255), -1)
        cv2.circle(img, (c[0] + dx, c[1] - 35), 9, (30, 30, 30), -1)
        cv2.line(img, (c[0] + dx - 25, c[1] - 62), (c[0] + dx + 25, c[1] - 62), (40, 40, 60), 7)
    cv2.line(img, (c[0], c[1] - 20), (c[0] - 8, c[1] + 30), (110, 140, 180), 5)
    cv2.ellipse(img, (c[0], c[1] + 70), (40, 12), 0, 0, 360, (60, 60, 150), -1)
    img = cv2.GaussianBlur(img, (0, 0), 3)
    M = cv2.getRotationMatrix2D(c, angle, 1.0)
    return cv2.warpAffine(img, M, (size, size), borderValue=(90, 90, 90))


def png(bgr: np.ndarray) -> bytes:
    return cv2.imencode(".png", bgr)[1].tobytes()


def test_faces_are_found_and_levelled():
    from gan_inversion.faces import crop_face, find_faces

    for angle in (0.0, 12.0, -15.0):
        rgb = cv2.cvtColor(draw_face(angle), cv2.COLOR_BGR2RGB)
        faces = find_faces(rgb)
        assert len(faces) == 1 and faces[0].eyes_found
        # cv2 rotates counter-clockwise for positive angles: the eyes then slope by -angle in image coordinates
        assert faces[0].angle == pytest.approx(-angle, abs=5.0)
        crop = crop_face(rgb, faces[0], size=64)
        assert crop.shape == (64, 64, 3)
        again = find_faces(cv2.resize(crop, (256, 256)))
        assert again and abs(again[0].angle) < 5.0  # levelled
    assert find_faces(np.full((200, 200, 3), 128, np.uint8)) == []


@pytest.fixture(scope="module")
def face_detector(tmp_path_factory):
    from detector.cli import main
    from detector.features import FeatureConfig
    from detector.fitting.classifier import ClassifierConfig
    from detector.fitting.config import DetectorConfig, FitConfig
    from detector.fitting.fit import fit_detector
    from detector.runtime import Detector
    from gan_inversion.checkpoints import load_bundle
    from gan_inversion.data import ImageDataset
    from gan_inversion.faces import crop_face, face_framing, find_faces
    from gan_inversion.perceptual import build_perceptual

    from .rosinality_ref import make_rosinality_state

    d = tmp_path_factory.mktemp("face")
    g, dd = make_rosinality_state(256, style_dim=8, n_mlp=2, base=256, cmax=4, seed=3)
    torch.save({"g_ema": g, "d": dd}, d / "ffhq-like.pt")
    assert main(["convert", str(d / "ffhq-like.pt"), str(d / "face.pt"), "--face"]) == 0
    b = load_bundle(d / "face.pt", require_D=True)
    assert b.framing == face_framing()
    assert (b.G_ema.img_resolution, b.G_ema.img_channels) == (256, 3)
    crops = []  # the training images of a face model, prepared by the same procedure scoring uses
    for k in range(40):
        rgb = cv2.cvtColor(draw_face(angle=float(k % 5 - 2) * 5, seed=k, skin=(120 + 3 * k, 175, 210)),
                           cv2.COLOR_BGR2RGB)
        crops.append(crop_face(rgb, find_faces(rgb)[0], size=256))
    reals = ImageDataset(images=torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous(), name="faces")
    perc = build_perceptual("mobilenet_v2-random", input_size=32)
    fit_detector(d / "det.json", G=b.G_ema, D=b.D, encoder=None, perceptual=perc, reals=reals, bundle_file="face.pt",
                 encoder_file=None, progress=False,
                     config=DetectorConfig(
                         features=FeatureConfig(refine_steps=1),
                         classifier=ClassifierConfig(cv_folds=2, target_fpr=0.1),
                         fit=FitConfig(n_real=32, n_fake=32, batch=16, launder_prob=0.0, latent_map=6,
                                   real_model=False)))
    return d, Detector.load(d / "det.json")


def test_a_face_model_crops_and_aligns_in_detect_and_says_so(face_detector, tmp_path, capsys):
    from detector.cli import main

    d, det = face_detector
    assert det.is_face_model and det.info["framing"]["kind"] == "face"
    r = det.score(png(draw_face(angle=10.0, seed=5)), source="tilted.png")
    assert r.face["faces_found"] == 1 and r.face["eyes_found"] and r.face["angle"] == pytest.approx(-10, abs=5)
    assert not any(w.startswith("out of domain") for w in r.warnings) and r.verdict in ("fake", "real")
    blank = det.score(png(np.full((300, 300, 3), 120, np.uint8)), source="blank.png")
    assert blank.face is None and blank.verdict == "uncertain"
    assert any("no face found" in w for w in blank.warnings)
    (tmp_path / "f.png").write_bytes(png(draw_face(angle=-8.0, seed=6)))
    assert main(["detect", str(tmp_path / "f.png"), "--detector", str(d / "det.json"), "--json",
                 "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["face"]["eyes_found"] and out["face"]["box"][2] > 100


def test_the_api_aligns_faces_for_a_face_model(face_detector):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings

    _, det = face_detector
    app = create_app(Settings(), loader=lambda s: det)
    with TestClient(app) as client:
        r = client.post("/v1/detect?explain=true", files={"file": ("f.png", png(draw_face(angle=6.0)), "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["face"]["faces_found"] == 1 and body["face"]["eyes_found"]
        assert {"input", "reconstruction", "latent_2d"} <= set(body["evidence"])


def test_audit_crops_every_face_through_the_same_path(face_detector, tmp_path):
    from detector.audit import AuditConfig, open_db, run_audit
    from detector.audit.report import audit_rows

    _, det = face_detector
    root = tmp_path / "media"
    root.mkdir()
    two = np.concatenate([draw_face(seed=1), draw_face(angle=9.0, seed=2)], axis=1)
    (root / "two.png").write_bytes(png(two))
    engine = open_db(f"sqlite:///{tmp_path / 'a.db'}")
    aid = run_audit(engine, root, detector=det, cfg=AuditConfig(crop_faces=True), progress=False)
    _, rows = audit_rows(engine, aid)
    assert rows[0]["state"] == "scored" and len(rows[0]["summary"]["faces"]) == 2
