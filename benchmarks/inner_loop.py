"""The refinement's inner loop, each change measured alone: where a step's time goes, which convolutions fall to
PyTorch's slow paths and why, and what channels-last, a fused Adam and torch.compile buy.

    python -m benchmarks.inner_loop [--compile] [--steps 20]

One refinement step is the generator's synthesis from the latent, the perceptual distance to the target, and the
gradient with respect to the latent (gan_inversion/projector.py). Measured on the embedded detector's generator and
perceptual network, on fresh samples, at batch 1 and batch 16: the generator's forward and backward alone, the
perceptual network's alone, and whole steps (with Adam) as the projector runs them; then each change alone, with
its effect on the result (the largest difference of the loss after `--steps` steps against the unchanged loop, beside
the difference the same unchanged loop shows between batch 1 and batch 16, which is float rounding the refinement
amplifies). The slow paths: the torch profiler's `_slow_conv2d`/`slow_conv_transpose2d` time at each batch size.
`--compile` adds torch.compile of the loss (its warm-up is reported, not counted). Writes results/inner_loop.json
and the 'inner_loop' section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from detector.fitting.images import quantize
from detector.runtime import Detector
from gan_inversion.defaults import DEFAULT_DETECTOR
from gan_inversion.metrics import generate
from gan_inversion.projector import reconstruction_loss

from .common import RESULTS_DIR, write_section


def bench(fn, n: int = 20) -> float:
    fn()
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return 1000 * (time.perf_counter() - t0) / n


class Loop:
    """The refinement of one batch in W from the encoder's guess (no degradation model), as the projector runs it."""

    def __init__(self, det: Detector, x: torch.Tensor, *, channels_last: bool = False, fused: bool = False,
                 compiled: bool = False):
        self.det, self.x = det, x
        self.G, self.P = det.G, det.perceptual
        if channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.P.to(memory_format=torch.channels_last)
        with torch.no_grad():
            self.w0 = det.encoder(x).mean(1)
        self.tf = self.P.target_features(x)
        self.channels_last, self.fused = channels_last, fused
        self.loss = torch.compile(self._loss, dynamic=False) if compiled else self._loss

    def _loss(self, w: torch.Tensor) -> torch.Tensor:
        img = self.G.synthesis(w.unsqueeze(1).repeat(1, self.G.num_ws, 1), noise_mode="const")
        if self.channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        return reconstruction_loss(self.P, img, self.x, 1.0, target_features=self.tf)

    def run(self, steps: int) -> torch.Tensor:
        w = self.w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=0.05, fused=self.fused or None)
        for _ in range(steps):
            loss = self.loss(w)
            (g,) = torch.autograd.grad(loss.sum(), [w])
            w.grad = g
            opt.step()
        with torch.no_grad():
            return self._loss(w)

    def restore(self) -> None:
        self.G.to(memory_format=torch.contiguous_format)
        self.P.to(memory_format=torch.contiguous_format)


def step_ms(loop: Loop, steps: int) -> float:
    """ms per step of a `steps`-step refinement (its one closing forward pass spread over the steps)."""
    loop.run(2)
    t0 = time.perf_counter()
    loop.run(steps)
    return 1000 * (time.perf_counter() - t0) / steps


def parts(det: Detector, x: torch.Tensor) -> dict:
    """ms of the generator's forward+backward and of the perceptual network's, alone."""
    G, P = det.G, det.perceptual
    with torch.no_grad():
        w = det.encoder(x).mean(1)
    w = w.clone().requires_grad_(True)
    xin = x.clone().requires_grad_(True)
    tf = P.target_features(x)

    def g_only():
        img = G.synthesis(w.unsqueeze(1).repeat(1, G.num_ws, 1), noise_mode="const")
        torch.autograd.grad(img.square().sum(), [w])

    def p_only():
        torch.autograd.grad(P(xin, x, y_features=tf).sum(), [xin])

    return {"generator_ms": bench(g_only), "perceptual_ms": bench(p_only)}


def slow_paths(loop: Loop) -> dict:
    from torch.profiler import ProfilerActivity, profile

    loop.run(1)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        loop.run(3)
    events = prof.key_averages(group_by_input_shape=True)
    total = sum(e.self_cpu_time_total for e in events)
    slow = [e for e in events if "slow_conv" in e.key]
    top = sorted(slow, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    return {"share": sum(e.self_cpu_time_total for e in slow) / max(total, 1),
            "top": [{"op": e.key, "shapes": str(e.input_shapes[:2]), "ms_per_step": e.self_cpu_time_total / 3000}
                    for e in top]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="the detector whose networks are measured")
    ap.add_argument("--steps", type=int, default=20, help="steps per timing and per result check")
    ap.add_argument("--compile", action="store_true", help="also torch.compile the loss (about a minute of warm-up)")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    det = Detector.load(a.detector)
    x16 = quantize(generate(det.G, 16, seed=11))
    out = {"meta": {"detector": det.model_id, "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                    "torch": torch.__version__}, "batches": {}}
    for bs in (1, 16):
        x = x16[:bs]
        base = Loop(det, x)
        ref = base.run(a.steps)
        row = {"parts": parts(det, x), "slow_paths": slow_paths(base),
               "settings": {"eager": {"step_ms": step_ms(base, a.steps), "max_loss_diff": 0.0}}}
        variants = {"channels-last": dict(channels_last=True), "fused Adam": dict(fused=True)}
        if a.compile:
            variants["torch.compile"] = dict(compiled=True)
        for name, kw in variants.items():
            t0 = time.perf_counter()
            loop = Loop(det, x, **kw)
            got = loop.run(a.steps)
            warm = time.perf_counter() - t0
            row["settings"][name] = {"step_ms": step_ms(loop, a.steps),
                                     "max_loss_diff": float((got - ref).abs().max()), "first_run_s": warm}
            loop.restore()
        out["batches"][bs] = row
        print(bs, json.dumps(row), flush=True)
    # the unchanged loop's own spread: each image refined alone against the same image refined in the batch of 16
    sixteen = Loop(det, x16).run(a.steps)
    alone = torch.cat([Loop(det, x16[i:i + 1]).run(a.steps) for i in range(16)])
    out["rounding"] = float((alone - sixteen).abs().max())
    (RESULTS_DIR / "inner_loop.json").write_text(json.dumps(out, indent=1))
    write_section("inner_loop", render(out))
    print(render(out))
    return 0


def render(out: dict) -> str:
    m = out["meta"]
    lines = ["## The refinement's inner loop (`python -m benchmarks.inner_loop`)", "",
             f"Detector `{m['detector']}`, {m['machine']}, torch {m['torch']}; nothing else running. One step = "
             "synthesis + perceptual distance + gradient w.r.t. the latent + Adam.", "",
             "| batch | generator fwd+bwd ms | perceptual fwd+bwd ms | slow-path share of a step | setting | ms/step | "
             "ms/image/step | largest loss difference after the steps |", "|---|---|---|---|---|---|---|---|"]
    for bs, row in out["batches"].items():
        for i, (name, s) in enumerate(row["settings"].items()):
            head = (f"| {bs} | {row['parts']['generator_ms']:.1f} | {row['parts']['perceptual_ms']:.1f} | "
                    f"{row['slow_paths']['share']:.0%} |") if i == 0 else "| | | | |"
            lines.append(f"{head} {name} | {s['step_ms']:.1f} | {s['step_ms'] / int(bs):.1f} | "
                         f"{s['max_loss_diff']:.2g} |")
    lines += ["", f"The unchanged loop's own spread: each of the 16 images refined alone against the same image in the "
                  f"batch of 16, the largest loss difference after the steps: {out['rounding']:.2g} (float rounding "
                  "that the refinement amplifies).", "", "torch.compile's first run (compilation included): " +
              ", ".join(f"batch {bs}: {row['settings']['torch.compile']['first_run_s']:.0f} s"
                        for bs, row in out["batches"].items() if "torch.compile" in row["settings"]) + ".", "",
              "Slow paths at batch 1 (the largest, ms per step):", ""]
    for t in out["batches"][next(iter(out["batches"]))]["slow_paths"]["top"]:
        lines.append(f"- `{t['op']}` {t['shapes']}: {t['ms_per_step']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
