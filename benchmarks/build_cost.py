"""What `resynth build` costs for a user's own generator at 32, 64, 128 and 256 pixels, on this machine.

    python -m benchmarks.build_cost [--device cuda] [--resolutions 32 64 128 256]

Per resolution, a colour StyleGAN2 in NVIDIA's paper layout (w_dim 512, 8 mapping layers, channel_base 16384,
channel_max 512: what FFHQ-256-class models use) with random weights, converted from rosinality's format by
`resynth convert`'s code (the cost of a network does not depend on its weights); at 32 pixels also the embedded
Fashion-MNIST model. Each is timed by the build's own measurement (detector.fitting.build.measure_device: one
inversion as the detector's features do it, with the embedded feature settings, and one encoder training step),
and the build's own estimate turns the rates into hours per stage for the default build configuration
(`resynth build --plan` prints the same for a real folder). Writes results/build_cost.json and the `build_cost`
section of RESULTS.md (a GPU run writes its own section, `build_cost_cuda`).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from detector.fitting.build import BuildConfig, estimate_seconds, measure_device
from gan_inversion.checkpoints import bundle_from_dict, load_bundle
from gan_inversion.convert import convert_rosinality
from gan_inversion.defaults import DEFAULT_BUNDLE

from .common import RESULTS_DIR, write_section

PAPER = dict(style_dim=512, n_mlp=8, base=16384, cmax=512)


def paper_bundle(resolution: int):
    """A random colour StyleGAN2 of NVIDIA's paper layout at `resolution`, as `resynth convert` makes it."""
    from tests.rosinality_ref import make_rosinality_state  # random weights in rosinality's layout

    g, d = make_rosinality_state(resolution, PAPER["style_dim"], PAPER["n_mlp"], PAPER["base"], PAPER["cmax"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.pt"
        torch.save({"g_ema": g, "d": d}, path)
        return bundle_from_dict(convert_rosinality(path, w_avg_samples=1000))


def row(name: str, bundle, cfg: BuildConfig, device: str, n: int) -> dict:
    params = sum(p.numel() for p in bundle.G_ema.parameters())
    measure_device(bundle, cfg, device=device, n=1)  # warm-up
    rates = measure_device(bundle, cfg, device=device, n=n)
    stages = estimate_seconds(cfg, rates, n_train=10**6)
    return {"model": name, "resolution": bundle.G_ema.img_resolution, "channels": bundle.G_ema.img_channels,
            "G_params_M": round(params / 1e6, 2), "images_timed": n,
            "inversion_ms": round(1000 * rates["inversion_s"], 1),
            "encoder_step_ms": round(1000 * rates["encoder_step_s"], 1),
            "stage_hours": {k: round(v / 3600, 2) for k, v in stages.items()},
            "build_hours": round(sum(stages.values()) / 3600, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="torch device to time (cpu, cuda)")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128, 256],
                    help="the paper-layout generators' resolutions")
    ap.add_argument("--images", type=int, default=8,
                    help="images timed at 32 pixels (fewer at larger sizes, at least 1)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    args = ap.parse_args(argv)
    cfg = BuildConfig()
    t0 = time.time()
    rows = [row("embedded Fashion-MNIST (1 channel)", load_bundle(DEFAULT_BUNDLE), cfg, args.device, args.images)]
    print(json.dumps(rows[-1]), flush=True)
    for r in args.resolutions:
        n = max(1, args.images * 32 * 32 // (r * r))
        rows.append(row(f"paper layout, {r}×{r} colour", paper_bundle(r), cfg, args.device, n))
        print(json.dumps(rows[-1]), flush=True)
    f = cfg.detector.fit
    meta = {"device": args.device, "cpus": torch.get_num_threads(), "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d"), "minutes": round((time.time() - t0) / 60, 1),
            "config": {"encoder_steps": cfg.encoder.steps, "n_real": f.n_real, "n_fake": f.n_fake,
                       "n_reference": f.n_reference, "n_operating": f.n_operating, "n_eval": cfg.n_eval}}
    suffix = "" if args.device == "cpu" else "_" + args.device.split(":")[0]
    if args.no_write:
        return 0
    (RESULTS_DIR / f"build_cost{suffix}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    write_section(f"build_cost{suffix}", section(meta, rows, suffix))
    return 0


def section(meta: dict, rows: list[dict], suffix: str) -> str:
    c = meta["config"]
    lines = [f"## What `resynth build` costs, by resolution (`python -m benchmarks.build_cost"
             f"{'' if not suffix else ' --device ' + meta['device']}`)", "",
             f"Measured {meta['date']} on {meta['device']} ({meta['cpus']} threads, {meta['machine']}) by the build's "
             "own timing (`measure_device`: one inversion batch with the embedded feature settings — 8 images at 32 "
             "pixels, 2 at 64, 1 at 128 and 256, so the larger rows are batch-1 times — and one encoder step of 16 + "
             "16 images), turned into hours by its own estimate for the default configuration (encoder "
             f"{c['encoder_steps']} steps; fit on {c['n_real']} photos and {c['n_fake']} samples, "
             f"{c['n_reference']} reference photos with their copies, {c['n_operating']} operating photos in 9 "
             f"launderings; cascade; evaluation on {c['n_eval']} per class and condition). Random weights in "
             "NVIDIA's paper layout (the cost does not depend on them), so no accuracy column: what a build's "
             "detector achieves is its own REPORT.md's, and the embedded detector's accuracy at this inversion "
             "setting is the operating-point section's. Not counted: the artifact CNN's and the classifier's "
             "training, which add minutes, not hours, at 32 pixels.", "",
             "| model | G params | inversion | encoder step | encoder | fit | cascade | evaluation | whole build |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        h = r["stage_hours"]
        lines.append(f"| {r['model']} | {r['G_params_M']} M | {r['inversion_ms'] / 1000:.2f} s | "
                     f"{r['encoder_step_ms'] / 1000:.2f} s | {h['encoder']:.1f} h | {h['fit']:.1f} h | "
                     f"{h['cascade']:.1f} h | {h['evaluation']:.1f} h | {r['build_hours']:.1f} h |")
    lines += ["", f"Rows: `benchmarks/results/build_cost{suffix}.json`. The estimate counts inversions, which "
              "dominate every stage but the encoder's; a real build's `--plan` prints the same rates for its own "
              "generator and folder. A GPU run (`--device cuda`) writes its own section beside this one."]
    return "\n".join(lines)


def rerender(suffix: str = "") -> None:
    """Rewrite the section from the stored rows (after a change of its text)."""
    d = json.loads((RESULTS_DIR / f"build_cost{suffix}.json").read_text())
    write_section(f"build_cost{suffix}", section(d["meta"], d["rows"], suffix))


if __name__ == "__main__":
    raise SystemExit(main())
