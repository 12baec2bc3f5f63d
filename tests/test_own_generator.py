"""A user's own colour generator end to end (issue 30): a checkpoint written the way rosinality's train.py or
NVIDIA's stylegan2-ada writes it, converted, built into a detector from a folder of colour photos made here, then
served over HTTP and used from the CLI; a changed folder is never mistaken for the one the build was made from."""

import io
import json
import sys

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from api.app import create_app
from api.settings import Settings
from detector.cli import main
from gan_inversion.checkpoints import load_bundle

from .rosinality_ref import make_rosinality_state
from .test_nvidia_pickle import _ada_state, _write_ada_pickle, nvidia_modules  # noqa: F401 (a fixture)


def scenes(root, n: int, *, size: int = 24, seed: int = 0):
    """n procedural colour scenes as PNGs (a sky-to-ground gradient, a sun, a few coloured blocks)."""
    rng = np.random.default_rng(seed)
    root.mkdir()
    for i in range(n):
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0, 1, size)[:, None, None]
        img = Image.fromarray(((1 - t) * top + t * bottom).repeat(size, axis=1).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        cx, cy, r = rng.integers(4, size - 4, 2).tolist() + [int(rng.integers(2, 5))]
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(rng.integers(150, 256, 3).tolist()))
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.integers(0, size - 6, 2).tolist()
            w, h = rng.integers(3, 8, 2).tolist()
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=tuple(rng.integers(0, 256, 3).tolist()))
        img.save(root / f"scene{i:03d}.png")
    return root


def rosinality_checkpoint(tmp_path):
    g, d = make_rosinality_state(16, style_dim=12, n_mlp=2, base=64, cmax=8, seed=3)
    path = tmp_path / "ros.pt"
    torch.save({"g_ema": g, "d": d, "latent_avg": torch.zeros(12), "args": {"size": 16}}, path)
    return path


def nvidia_checkpoint(tmp_path, modules):
    g, d = make_rosinality_state(16, style_dim=12, n_mlp=2, base=64, cmax=8, seed=4)
    G, D = _ada_state(g, d, torch.zeros(12))
    path = tmp_path / "network-snapshot-000010.pkl"
    _write_ada_pickle(path, G, D, str(tmp_path / "ran.txt"), modules.EasyDict)
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        sys.modules.pop(name)  # the reader must not need them
    return path


TINY = ["--encoder-steps", "2", "--encoder-batch", "4", "--perceptual", "mobilenet_v2-random@32", "--n-real", "64",
        "--n-fake", "64", "--batch", "32", "--refine-steps", "1", "--no-artifact-cnn", "--no-aux-generator",
        "--no-real-model", "--latent-map", "0", "--n-operating", "0", "--no-cascade", "--n-eval", "16",
        "--test-fraction", "0.2", "--device", "cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["rosinality", "nvidia"])
def test_convert_build_serve_detect_a_colour_generator(fmt, tmp_path, capsys, request):
    src = (rosinality_checkpoint(tmp_path) if fmt == "rosinality"
           else nvidia_checkpoint(tmp_path, request.getfixturevalue("nvidia_modules")))
    bundle = tmp_path / "mine.pt"
    assert main(["convert", str(src), str(bundle)]) == 0
    assert load_bundle(bundle).G_ema.img_channels == 3
    photos = scenes(tmp_path / "photos", 240)
    out = tmp_path / "build"
    args = ["build", "--bundle", str(bundle), "--real", str(photos), "--out", str(out), *TINY]
    assert main([*args, "--plan"]) == 0 and "the build can run" in capsys.readouterr().out
    assert main(args) == 0
    detector = json.loads(capsys.readouterr().out)["detector"]

    # the plan and the folder are recorded: which photos, split how, with the folder's fingerprint
    spec = json.loads((out / "detector.json").read_text())
    rec = spec["data_plan"]["photos"]
    assert rec["folder"] == "photos" and rec["files"] == 240 and len(rec["folder_fingerprint"]) == 64
    assert spec["data_plan"]["split"] == "photos-train" and rec["photos"] < 240
    record = json.loads((out / "build.json").read_text())
    assert record["inputs"]["train"]["folder_fingerprint"] == rec["folder_fingerprint"]

    # served over HTTP, and from the CLI
    settings = Settings(detector=detector, max_bytes=100_000, max_pixels=100_000, max_inflight=2, torch_threads=1)
    buf = io.BytesIO()
    Image.open(photos / "scene000.png").save(buf, "PNG")
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/model").json()["model_id"] == spec["model_id"]
        r = client.post("/v1/detect", files={"file": ("scene.png", buf.getvalue(), "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert 0 <= body["p_fake"] <= 1 and body["verdict"] in ("fake", "uncertain", "real")
        grey = io.BytesIO()
        Image.new("L", (24, 24), 128).save(grey, "PNG")  # a grayscale upload to a colour model: answered, warned
        r = client.post("/v1/detect", files={"file": ("grey.png", grey.getvalue(), "image/png")})
        assert r.status_code == 200 and r.json()["verdict"] in ("fake", "uncertain", "real")
    assert main(["detect", "--detector", detector, str(photos / "scene001.png"), str(photos / "scene002.png"),
                 "--json", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(rows) == 2 and all(r["verdict"] in ("fake", "uncertain", "real") for r in rows)

    # a changed folder is not the folder the build was made from: nothing made from the old one is reused
    (photos / "scene003.png").unlink()
    scenes(tmp_path / "more", 1, seed=9)
    (tmp_path / "more" / "scene000.png").rename(photos / "new.png")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "made from other inputs or settings" in err and "changed: the photos (train split)" in err
