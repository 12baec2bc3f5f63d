"""Face path at 256x256: the cost per image of framing (find, level, crop) and of the inversion features.

    python -m benchmarks.faces   # a few minutes on a 2-core CPU; rewrites the `faces` section of RESULTS.md

No face model can be downloaded here, so the generators are rosinality-format 256x256 StyleGAN2s with random
weights, converted by `resynth convert --face`'s code: the cost of a network does not depend on its weights.
Two sizes: NVIDIA's paper256 layout (channel_base 16384, channel_max 512, w_dim 512, 8 mapping layers: what
FFHQ-256 models use) and a slim one (channel_max 64). Inputs: a drawn 1024x1024 face (OpenCV's cascades find
it). The features are the embedded detector's settings: 25 refinement steps in W from w_avg (a converted model
has no encoder), no degradation search, the MobileNetV2 perceptual distance at 64 px (pretrained weights when
installed).
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
import torch

from detector.features import FeatureConfig, extract_features
from detector.imageio import prepare_image
from gan_inversion.convert import convert_rosinality
from gan_inversion.faces import face_framing
from gan_inversion.perceptual import build_perceptual

from .common import RESULTS_DIR, write_section

LAYOUTS = {"paper256": dict(style_dim=512, n_mlp=8, base=16384, cmax=512),
           "slim": dict(style_dim=128, n_mlp=4, base=2048, cmax=64)}


def drawn_face(size: int = 1024) -> bytes:
    img = np.full((size, size, 3), 90, np.uint8)
    c, s = (size // 2, size // 2), size / 400
    cv2.ellipse(img, c, (int(110 * s), int(145 * s)), 0, 0, 360, (150, 180, 215), -1)
    for dx in (-45, 45):
        e = (c[0] + int(dx * s), c[1] - int(35 * s))
        cv2.ellipse(img, e, (int(22 * s), int(11 * s)), 0, 0, 360, (255, 255, 255), -1)
        cv2.circle(img, e, int(9 * s), (30, 30, 30), -1)
        cv2.line(img, (e[0] - int(25 * s), e[1] - int(27 * s)), (e[0] + int(25 * s), e[1] - int(27 * s)),
                 (40, 40, 60), int(7 * s))
    cv2.ellipse(img, (c[0], c[1] + int(70 * s)), (int(40 * s), int(12 * s)), 0, 0, 360, (60, 60, 150), -1)
    img = cv2.warpAffine(cv2.GaussianBlur(img, (0, 0), 3 * s), cv2.getRotationMatrix2D(c, 8, 1.0), (size, size),
                         borderValue=(90, 90, 90))
    return cv2.imencode(".png", img)[1].tobytes()


def bundle_for(layout: dict, tmp: str):
    from pathlib import Path

    from gan_inversion.checkpoints import bundle_from_dict
    from tests.rosinality_ref import make_rosinality_state  # random weights in rosinality's layout

    g, d = make_rosinality_state(256, layout["style_dim"], layout["n_mlp"], layout["base"], layout["cmax"])
    path = Path(tmp) / "g.pt"
    torch.save({"g_ema": g, "d": d}, path)
    obj = convert_rosinality(path, w_avg_samples=2000)
    obj["data"]["framing"] = face_framing()
    return bundle_from_dict(obj)


def main(argv=None) -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--n1", type=int, default=3, help="images timed one by one")
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    data = drawn_face()
    try:
        perc = build_perceptual("mobilenet_v2", input_size=64)
        perc_note = "MobileNetV2 IMAGENET1K_V1 @64"
    except Exception:  # weights not installed: same network, random weights, same cost
        perc = build_perceptual("mobilenet_v2-random", input_size=64)
        perc_note = "MobileNetV2 (random weights) @64"
    cfg = FeatureConfig(refine_steps=args.steps)
    rows = {}
    for name, layout in LAYOUTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            b = bundle_for(layout, tmp)
        G, D = b.G_ema, b.D
        params = sum(p.numel() for p in G.parameters())
        t0 = time.perf_counter()
        for _ in range(5):
            prep = prepare_image(data, channels=3, resolution=256, framing=b.framing)
        frame_ms = 1000 * (time.perf_counter() - t0) / 5
        assert prep.face is not None, "the drawn face was not found"
        x = prep.tensor[None]
        extract_features(G, D, None, perc, x, cfg=FeatureConfig(refine_steps=1))  # warm-up
        t0 = time.perf_counter()
        for _ in range(args.n1):
            fb = extract_features(G, D, None, perc, x, cfg=cfg)
        b1 = 1000 * (time.perf_counter() - t0) / args.n1
        xb = x.repeat(args.batch, 1, 1, 1)
        t0 = time.perf_counter()
        extract_features(G, D, None, perc, xb, cfg=cfg)
        bb = 1000 * (time.perf_counter() - t0) / args.batch
        rows[name] = {"G_params_M": round(params / 1e6, 2), "frame_ms": round(frame_ms, 1),
                      "features_ms_batch1": round(b1, 0), f"features_ms_batch{args.batch}": round(bb, 0),
                      "per_step_ms_batch1": round(b1 / max(args.steps, 1), 1),
                      "timings_ms": {k: round(v, 1) for k, v in fb.timings_ms.items()}}
        print(json.dumps({name: rows[name]}), flush=True)
    (RESULTS_DIR / "faces.json").write_text(json.dumps({"steps": args.steps, "perceptual": perc_note,
                                                        "rows": rows}, indent=1) + "\n")
    lines = ["## Face path at 256×256 (`python -m benchmarks.faces`)", "",
             f"One drawn 1024×1024 face per image; this 2-core CPU; {args.steps} refinement steps in W from w_avg "
             f"(a converted model has no encoder), {perc_note}, no degradation search. Random weights (the cost "
             "does not depend on them). No accuracy column: no face model and no face photos can be had on this "
             "machine, so only the cost is measured here; the face path's behaviour is tested in "
             "tests/test_faces.py.", "",
             f"| generator layout | G params | find + level + crop | features, batch 1 | per step | "
             f"features, batch {args.batch} |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['G_params_M']} M | {r['frame_ms']:.0f} ms | "
                     f"{r['features_ms_batch1'] / 1000:.1f} s | {r['per_step_ms_batch1']:.0f} ms | "
                     f"{r[f'features_ms_batch{args.batch}'] / 1000:.1f} s/image |")
    p = rows["paper256"]
    lines += ["", f"An FFHQ-256-sized model costs {p['features_ms_batch1'] / 1000:.0f} s per image at batch 1 on "
              "this CPU, against about 1 s for the embedded 32×32 model: a face service wants a GPU "
              "(`--device cuda`), fewer steps with a trained encoder, or both."]
    write_section("faces", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
