"""Forward-only networks on ONNX Runtime against torch (issue #31, item 3): is a CPU runtime worth adopting?

    python -m benchmarks.onnx_runtime [--detector models/fmnist32_fast_detector.json] [--reps 30]

Without refinement steps every network the fast detector runs is forward-only: the encoder, the generator's
synthesis (one pass from the guess), the perceptual net (MobileNetV2 stages, also the probe's backbone), the
discriminator's features and the artifact CNN. Each is exported with torch.onnx.export and run by ONNX Runtime's
CPU provider with the same thread count as torch; per network: ms per call at batch 1 and batch 16 (the median of
--reps calls after warm-up), torch's and ONNX Runtime's, and the largest absolute difference of their outputs.
Needs `onnxruntime` and `onnx` (`.venv/bin/pip install onnxruntime onnx onnxscript`: not part of the project's
set-up, since nothing in resynth runs on them yet). Writes results/onnx_runtime.json and the `onnx_runtime`
section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from detector.fitting.images import quantize
from detector.runtime import Detector
from gan_inversion.defaults import FAST_DETECTOR
from gan_inversion.metrics import generate

from .common import RESULTS_DIR, write_section


class _Synthesis(nn.Module):
    """G's synthesis from ws [N, num_ws, w_dim], constant noise (as the inversion scores a guess)."""

    def __init__(self, G):
        super().__init__()
        self.G = G

    def forward(self, ws):
        return self.G.synthesis(ws, noise_mode="const")


class _Perceptual(nn.Module):
    """The perceptual net's stage features of images [N, C, H, W] in [-1, 1] (its own resizing included)."""

    def __init__(self, perceptual):
        super().__init__()
        self.p = perceptual

    def forward(self, x):
        return tuple(self.p.stage_features(self.p._prepare(x)))


class _DFeatures(nn.Module):
    def __init__(self, D):
        super().__init__()
        self.D = D

    def forward(self, x):
        return self.D(x)


def networks(det: Detector, x: torch.Tensor) -> dict[str, tuple[nn.Module, torch.Tensor]]:
    with torch.no_grad():
        ws = det.encoder(x)  # [N, num_ws, w_dim]
    nets = {"encoder": (det.encoder, x), "synthesis": (_Synthesis(det.G), ws),
            "perceptual": (_Perceptual(det.perceptual), x), "discriminator": (_DFeatures(det.D), x)}
    if det.artifact_net is not None:
        nets["artifact CNN"] = (det.artifact_net, x)
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
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in _flat(o)]
    return [np.asarray(out)]


def measure(name: str, net: nn.Module, example: torch.Tensor, work: Path, reps: int) -> dict:
    import onnxruntime as ort

    net = net.eval()
    path = work / f"{name.replace(' ', '_')}.onnx"
    row = {"network": name}
    try:  # the TorchScript exporter first; the dynamo exporter where it fails (modulated convolutions' weights)
        torch.onnx.export(net, (example[:1],), str(path), input_names=["x"], dynamic_axes={"x": {0: "n"}},
                          dynamo=False, opset_version=17)
        row["exporter"] = "torchscript"
    except Exception as first:  # noqa: BLE001 - every exporter failure is reported, not raised
        try:
            torch.onnx.export(net, (example[:1],), str(path), input_names=["x"], dynamo=True,
                              dynamic_shapes=({0: torch.export.Dim("n", min=1, max=64)},))
            row["exporter"] = "dynamo"
        except Exception as second:  # noqa: BLE001
            row["failed"] = f"{type(first).__name__}: {str(first)[:120]} / dynamo: {type(second).__name__}: " \
                            f"{str(second)[:120]}"
            print(name, "not exported:", row["failed"], flush=True)
            return row
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for b in (1, 16):
        xb = example[:b].contiguous()
        with torch.no_grad():
            ref = _flat(net(xb))
            t_torch = _median_ms(lambda xb=xb: net(xb), reps)
        feed = {"x": xb.numpy()}
        got = sess.run(None, feed)
        t_ort = _median_ms(lambda feed=feed: sess.run(None, feed), reps)
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
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise SystemExit("this benchmark needs onnxruntime and onnx: .venv/bin/pip install onnxruntime onnx "
                         "onnxscript") from exc
    torch.manual_seed(0)
    det = Detector.load(args.detector)
    x = quantize(generate(det.G, 16, seed=5))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for name, (net, example) in networks(det, x).items():
            rows.append(measure(name, net, example, Path(tmp), args.reps))
    import onnxruntime as ort

    meta = {"model_id": det.model_id, "threads": torch.get_num_threads(), "machine": platform.machine(),
            "torch": torch.__version__, "onnxruntime": ort.__version__, "reps": args.reps,
            "date": time.strftime("%Y-%m-%d")}
    lines = ["## Forward-only networks on ONNX Runtime (`python -m benchmarks.onnx_runtime`)", "",
             f"Detector `{meta['model_id']}`, {meta['machine']}, {meta['threads']} threads for both; torch "
             f"{meta['torch']}, ONNX Runtime {meta['onnxruntime']} (CPU provider); median of {args.reps} calls; "
             "max |diff| = the largest absolute difference of the outputs, batch 16.", "",
             "| network | torch ms, batch 1 | ORT ms, batch 1 | torch ms, batch 16 | ORT ms, batch 16 | max abs diff |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['network']} | not exported: {r['failed']} | | | | |")
            continue
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
