"""Forward-only networks on ONNX Runtime against torch (issue #31, item 3): is a CPU runtime worth adopting?

    python -m benchmarks.onnx_runtime [--detector models/fmnist32_fast_detector.json] [--reps 30]

Without refinement steps every network the fast detector runs is forward-only: the encoder, the generator's
synthesis (one pass from the guess), the perceptual net (MobileNetV2 stages, also the probe's backbone), the
discriminator's features and the artifact CNN. Each is exported and run as the service runs it with
`RESYNTH_RUNTIME=onnx`/`auto` (gan_inversion/ort.py: ONNX Runtime's CPU provider, the same thread count as torch);
per network: ms per call at batch 1 and batch 16 (the median of --reps calls after warm-up), torch's and ONNX
Runtime's, and the largest absolute difference of their outputs. Writes results/onnx_runtime.json and the
`onnx_runtime` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import numpy as np
import onnxruntime
import torch

from detector.fitting.images import quantize
from detector.runtime import Detector
from gan_inversion import ort
from gan_inversion.defaults import FAST_DETECTOR
from gan_inversion.metrics import generate

from .common import RESULTS_DIR, write_section


def networks(det: Detector, x: torch.Tensor, cfg: ort.OrtConfig) -> dict[str, tuple]:
    """Per network: (torch call, ONNX Runtime call) of images x [N, C, H, W] or their ws, and the input."""
    with torch.no_grad():
        ws = det.encoder(x)  # [N, num_ws, w_dim]
    G_o = ort.ort_generator(det.G, cfg=cfg)
    D_o, P_o = ort.OrtDiscriminator(det.D, cfg=cfg), ort.OrtPerceptual(det.perceptual, cfg=cfg)
    px = det.perceptual._prepare(x)
    d_call = lambda D: lambda img: D(img, mbstd_group=1, return_features=True)  # noqa: E731
    nets = {"encoder": (det.encoder, ort.OrtForward(det.encoder, x, name="encoder", cfg=cfg), x),
            "synthesis": (lambda w: det.G.synthesis(w, noise_mode="const"), G_o.synthesis, ws),
            "perceptual": (det.perceptual.stage_features, P_o.stage_features, px),
            "discriminator": (d_call(det.D), d_call(D_o), x)}
    if det.artifact_net is not None:
        nets["artifact CNN"] = (det.artifact_net, ort.OrtForward(det.artifact_net, x, name="artifact_cnn", cfg=cfg), x)
    return nets


def _median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def _flat(out) -> list[np.ndarray]:
    if isinstance(out, torch.Tensor):
        return [out.detach().numpy()]
    if isinstance(out, dict):
        return _flat(list(out.values()))
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in _flat(o)]
    return [np.asarray(out)]


def measure(name: str, torch_fn, ort_fn, example: torch.Tensor, reps: int) -> dict:
    row = {"network": name}
    for b in (1, 16):
        xb = example[:b].contiguous()
        ref, got = _flat(torch_fn(xb)), _flat(ort_fn(xb))
        t_torch = _median_ms(lambda xb=xb: torch_fn(xb), reps)
        t_ort = _median_ms(lambda xb=xb: ort_fn(xb), reps)
        diff = max(float(np.abs(a - g).max()) for a, g in zip(ref, got, strict=True))
        row[f"batch{b}"] = {"torch_ms": t_torch, "ort_ms": t_ort, "max_abs_diff": diff}
        print(name, b, round(t_torch, 2), round(t_ort, 2), f"{diff:.2e}", flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default=str(FAST_DETECTOR), help="detector file whose networks are measured")
    ap.add_argument("--reps", type=int, default=30, help="timed calls per network and batch size")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    det = Detector.load(args.detector)
    x = quantize(generate(det.G, 16, seed=5))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for name, (torch_fn, ort_fn, example) in networks(det, x, ort.OrtConfig(cache_dir=tmp)).items():
            rows.append(measure(name, torch_fn, ort_fn, example, args.reps))
    meta = {"model_id": det.model_id, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "reps": args.reps,
            "date": time.strftime("%Y-%m-%d")}
    lines = ["## Forward-only networks on ONNX Runtime (`python -m benchmarks.onnx_runtime`)", "",
             f"Detector `{meta['model_id']}`, {meta['machine']}, {meta['threads']} threads for both; torch "
             f"{meta['torch']}, ONNX Runtime {meta['onnxruntime']} (CPU provider); median of {args.reps} calls; "
             "max |diff| = the largest absolute difference of the outputs, batch 16.", "",
             "| network | torch ms, batch 1 | ORT ms, batch 1 | torch ms, batch 16 | ORT ms, batch 16 | max abs diff |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        b1, b16 = r["batch1"], r["batch16"]
        lines.append(f"| {r['network']} | {b1['torch_ms']:.2f} | {b1['ort_ms']:.2f} | {b16['torch_ms']:.2f} | "
                     f"{b16['ort_ms']:.2f} | {b16['max_abs_diff']:.1e} |")
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / "onnx_runtime.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        write_section("onnx_runtime", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
