"""Speed against accuracy, in one run: per setting ms/image at batch 1 and batched, AUC, FLOPs and the ratio to
the FLOP floor; the HTTP service under load; the audit's throughput.

    python -m benchmarks.speed [--n 300] [--detector PATH] [--skip-api] [--skip-audit] [--quick]

Settings (all on the embedded detector, CPU unless --device):
- `full`: every image refined (the detector file loaded with cascade=False);
- `cascade`: what the service runs: the encoder's guess decides clear cases, the others are refined
  (detector/runtime/cascade.py); its band is the one fitted in the detector file;
- `first stage only`: the encoder's guess decides everything (a lower bound on cost, not a served setting).
Accuracy: the ROC suite's own test images (first n test-split photos, n fresh samples of the embedded generator),
clean and laundered (JPEG q75, resize x0.5, blur sigma 1); features come through the feature cache, timings are
measured on uncached images. The frontier varies the cascade's band (a symmetric band in logit around the
threshold): its cost is the measured stage costs weighted by the share decided, its AUC measured.
FLOP floor: FLOPs of one image (torch's FlopCounterMode: convolutions and matmuls) divided by this machine's
measured 1024x1024 matmul rate. Writes results/speed.json, results/speed_frontier.png and the `speed`, `api_load`
and `audit` sections of RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time

import httpx
import numpy as np
import torch

from detector import laundering, plan
from detector.features import FeatureCache, appearance_features, extract_features, feature_context, features_for
from detector.fitting.evaluate import first_stage_features
from detector.fitting.images import quantize
from detector.metrics import point_metrics
from detector.runtime import Detector
from gan_inversion.data import load_fashion_mnist, to_float
from gan_inversion.defaults import DEFAULT_CACHE, DEFAULT_DATA, DEFAULT_DETECTOR, pick_device
from gan_inversion.metrics import generate

from .common import RESULTS_DIR, write_section

EVAL_FAKE_SEED = plan.seed("eval_fakes")

CONDITIONS = {"clean": None, "jpeg75": ("jpeg", 75), "resize0.5": ("resize", 0.5), "blur1": ("blur", 1.0)}
BAND_HALF_WIDTHS = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, float("inf"))  # logit units around the threshold


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def accuracy(det: Detector, reals: torch.Tensor, fakes: torch.Tensor, *, progress: bool) -> dict:
    """Per condition: probabilities of the full detector, of stage 1, and as the cascade serves them."""
    cache = FeatureCache(DEFAULT_CACHE, feature_context(det))
    out = {}
    for name, cond in CONDITIONS.items():
        r, f = laundering.apply_condition(reals, cond), laundering.apply_condition(fakes, cond)
        kw = dict(G=det.G, D=det.D, encoder=det.encoder, perceptual=det.perceptual, feature_cfg=det.feature_cfg,
                  batch=50, cache=cache, progress=progress)
        X = np.concatenate([features_for(r, desc=f"{name} real", **kw)[0],
                            features_for(f, desc=f"{name} fake", **kw)[0]])
        images = torch.cat([r, f])
        X1 = np.concatenate([first_stage_features(det, r, cache_dir=DEFAULT_CACHE, progress=progress),
                             first_stage_features(det, f, cache_dir=DEFAULT_CACHE, progress=progress)])
        A = appearance_features(det.perceptual, images)
        y = np.r_[np.zeros(len(r)), np.ones(len(f))].astype(int)
        L = det.artifact_scores(images)
        p_full = det.probabilities(X, None, appearance=A, artifacts=L).p_fake
        p1 = det.first_stage_probabilities(X1, A).p_fake
        p_cas, decided = det.cascade_probabilities(X1, X, None, appearance=A, artifacts=L)
        out[name] = {"y": y, "full": p_full, "first": p1, "cascade": p_cas, "decided": decided}
    return out


def metrics_of(y, p, t) -> dict:
    m = point_metrics(y, p, t, probabilities=True)
    return {"auc": m["auc"], "fpr": 1.0 - m["real_accuracy"], "tpr": m["fake_accuracy"]}


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(det: Detector, images: torch.Tensor, *, batch: int) -> dict:
    """ms/image of Detector.score_tensors on uncached images (a warm-up batch first), and the share of them
    decided at stage 1."""
    det.score_tensors(images[:batch])
    _sync(det.device)
    t0 = time.perf_counter()
    stages = []
    for i in range(0, len(images), batch):
        stages += [r.stage for r in det.score_tensors(images[i:i + batch])]
    _sync(det.device)
    ms = 1000 * (time.perf_counter() - t0) / len(images)
    return {"ms_per_image": ms, "batch": batch, "images": len(images),
            "decided_first": float(np.mean([s == "first" for s in stages])) if stages[0] else 0.0}


def timed_first_stage(det: Detector, images: torch.Tensor, *, batch: int) -> float:
    fs = det.first_stage

    def run(x):
        fb = extract_features(det.G, det.D, det.encoder, det.perceptual, x, cfg=fs.feature_cfg)
        det.first_stage_probabilities(fb.values.numpy(), appearance_features(det.perceptual, x))

    run(images[:batch])
    _sync(det.device)
    t0 = time.perf_counter()
    for i in range(0, len(images), batch):
        run(images[i:i + batch])
    _sync(det.device)
    return 1000 * (time.perf_counter() - t0) / len(images)


def flops_of(det: Detector, cfg) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    x = quantize(generate(det.G, 1, seed=5, device=det.device))
    with FlopCounterMode(display=False) as fc:
        extract_features(det.G, det.D, det.encoder, det.perceptual, x, cfg=cfg)
        appearance_features(det.perceptual, x)
    return int(fc.get_total_flops())


def matmul_rate(device) -> float:
    a, b = torch.randn(1024, 1024, device=device), torch.randn(1024, 1024, device=device)
    a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(20):
        a @ b
    _sync(device)
    return 20 * 2 * 1024**3 / (time.perf_counter() - t0)


def profile_batch1(det: Detector, x: torch.Tensor, rows: int = 12) -> dict:
    """Where one image's time goes (batch 1, every image refined): torch profiler, operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    extract_features(det.G, det.D, det.encoder, det.perceptual, x, cfg=det.feature_cfg)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        extract_features(det.G, det.D, det.encoder, det.perceptual, x, cfg=det.feature_cfg)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = [{"op": e.key, "calls": int(e.count), "self_ms": e.self_cpu_time_total / 1000,
            "share": e.self_cpu_time_total / max(total, 1)} for e in events[:rows]]
    return {"total_ms": total / 1000, "ops": top, "calls": int(sum(e.count for e in events))}


def api_levels(detector: str, pngs: list[bytes], requests: int, *, cascade: bool, concurrency=(1, 4, 16)
               ) -> tuple[dict, list[dict]]:
    """The service with its default settings (in-flight limit and batching as shipped), the cascade off (the
    default) or on."""
    from .api_load import run_level, serving

    levels = []
    env = {"RESYNTH_DETECTOR": detector, "RESYNTH_CASCADE": "1" if cascade else "0"}
    with serving(None, env_extra=env) as url:
        model = httpx.get(url + "/v1/model").json()
        asyncio.run(run_level(url, pngs, 1, 4))  # warm-up
        for c in concurrency:
            r = asyncio.run(run_level(url, pngs, c, requests))
            r["max_inflight"] = "default (32)" + (", cascade on" if cascade else "")
            levels.append(r)
            print(json.dumps(r), flush=True)
    return model, levels


def plot_frontier(rows: list[dict], points: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["ms_per_image"] for r in rows], [r["auc"] for r in rows], "o-", label="cascade, band width varied")
    for name, (ms, auc) in points.items():
        ax.plot([ms], [auc], "s", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("ms / image (batched, CPU)")
    ax.set_ylabel("AUC, clean, embedded generator")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    ap.add_argument("--n", type=int, default=300, help="images per class for the AUCs (the ROC suite's)")
    ap.add_argument("--n-time", type=int, default=100, help="uncached images timed per setting (batched)")
    ap.add_argument("--n-time-single", type=int, default=20, help="images timed one by one per setting")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--requests", type=int, default=48, help="HTTP requests per concurrency level")
    ap.add_argument("--audit-n", type=int, default=2000)
    ap.add_argument("--skip-api", action="store_true")
    ap.add_argument("--skip-audit", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="a few images (smoke run; no RESULTS.md)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.n_time, args.n_time_single, args.batch, args.requests, args.audit_n = 40, 20, 4, 10, 8, 40
    t_start = time.time()
    device = pick_device(args.device)
    det = Detector.load(args.detector, device=device, cascade=True)
    full = Detector.load(args.detector, device=device)
    if det.first_stage is None:
        raise SystemExit(f"{args.detector} has no cascade (resynth fit-cascade)")
    test = load_fashion_mnist(DEFAULT_DATA, split="test")
    reals = to_float(test.images[: args.n])
    fakes = quantize(generate(det.G, args.n, seed=EVAL_FAKE_SEED))

    # accuracy per condition
    acc = accuracy(det, reals, fakes, progress=not args.quick)
    t = det.threshold
    accuracy_rows = {c: {"full": metrics_of(a["y"], a["full"], t), "cascade": metrics_of(a["y"], a["cascade"], t),
                         "first stage only": metrics_of(a["y"], a["first"], t),
                         "decided_first": float(a["decided"].mean())} for c, a in acc.items()}

    # timings on images no cache has seen: other test photos, other samples
    n_t = args.n_time
    t_reals = to_float(test.images[5000: 5000 + n_t // 2])
    t_fakes = quantize(generate(det.G, n_t - n_t // 2, seed=plan.seed("speed_fakes")))
    mix = torch.cat([t_reals, t_fakes])[torch.randperm(n_t, generator=torch.Generator().manual_seed(0))].to(device)
    single = mix[: args.n_time_single]
    torch.set_grad_enabled(True)
    timing = {
        "full": {"batch1": timed(full, single, batch=1), "batched": timed(full, mix, batch=args.batch)},
        "cascade": {"batch1": timed(det, single, batch=1), "batched": timed(det, mix, batch=args.batch)},
        "first stage only": {"batch1": {"ms_per_image": timed_first_stage(det, single, batch=1)},
                             "batched": {"ms_per_image": timed_first_stage(det, mix, batch=args.batch)}},
    }
    prof = profile_batch1(full, single[:1])
    rate = matmul_rate(device)
    f_full, f_first = flops_of(det, det.feature_cfg), flops_of(det, det.first_stage.feature_cfg)
    share1 = timing["cascade"]["batch1"]["decided_first"]
    flops = {"full": f_full, "first stage only": f_first, "cascade": f_first + (1 - share1) * f_full}
    for k, v in timing.items():
        v["flops_per_image"] = flops[k]
        v["floor_ms"] = 1000 * flops[k] / rate
        v["ratio_to_floor_batch1"] = v["batch1"]["ms_per_image"] / v["floor_ms"]

    # frontier: the band's width varied, cost from the measured stage costs
    a = acc["clean"]
    ms1, ms_full = timing["first stage only"]["batched"]["ms_per_image"], timing["full"]["batched"]["ms_per_image"]
    frontier = []
    for h in BAND_HALF_WIDTHS:
        decided = np.abs(_logit(a["first"]) - _logit(np.array([t]))) > h
        p = np.where(decided, a["first"], a["full"])
        share = float(decided.mean())
        frontier.append({"half_width_logit": h, "decided_first": share, "auc": metrics_of(a["y"], p, t)["auc"],
                         "ms_per_image": ms1 + (1 - share) * ms_full})
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    tag = "_quick" if args.quick else ""
    plot_frontier(frontier, {"full (every image refined)": (ms_full, accuracy_rows["clean"]["full"]["auc"]),
                             "cascade (fitted band)": (timing["cascade"]["batched"]["ms_per_image"],
                                                       accuracy_rows["clean"]["cascade"]["auc"])},
                  RESULTS_DIR / f"speed{tag}_frontier.png")

    # the service and the audit, on the cascade as shipped
    api = None
    if not args.skip_api:
        from .api_load import sample_pngs

        pngs = sample_pngs(32, os.path.join(os.path.dirname(args.detector), det.spec["bundle"]["file"]))
        model, levels = api_levels(args.detector, pngs, args.requests, cascade=False)
        levels += api_levels(args.detector, pngs, args.requests, cascade=True, concurrency=(1, 16))[1]
        api = {"meta": {"model_id": model["model_id"], "refine_steps": model["refine_steps"],
                        "cpus": os.cpu_count(), "machine": platform.machine(),
                        "requests_per_level": args.requests}, "levels": levels}
    audit = None
    if not args.skip_audit:
        from .audit import build_folder, timed_audit

        images_dir, _ = build_folder(det, args.audit_n, 0)
        rows = [timed_audit(images_dir, full, 1, args.detector)]  # as `resynth audit` runs by default
        audit = {"meta": {"model_id": full.model_id, "cpus": os.cpu_count(), "machine": platform.machine(),
                          "n_images": args.audit_n}, "runs": rows}
        for r in rows:
            print(json.dumps(r), flush=True)

    meta = {"model_id": det.model_id, "device": str(device), "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "machine": platform.machine(), "n_per_class": args.n,
            "matmul_flops_per_s": rate, "band": det.first_stage.spec["band"], "wall_s": time.time() - t_start,
            "quick": args.quick}
    result = {"meta": meta, "accuracy": accuracy_rows, "timing": timing, "frontier": frontier, "api": api,
              "audit": audit, "profile_batch1": prof}
    (RESULTS_DIR / f"speed{tag}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({"accuracy": accuracy_rows, "timing": timing}, indent=1))
    if not args.quick:
        write_section("speed", report(result))
        if api:
            from .api_load import load_table

            write_section("api_load", load_table(api["meta"], api["levels"], "`python -m benchmarks.speed`"))
        if audit:
            from .audit import audit_table

            write_section("audit", audit_table(audit["meta"], audit["runs"], "`python -m benchmarks.speed`", 0))
    return 0


def report(res: dict) -> str:
    m, acc, tim = res["meta"], res["accuracy"], res["timing"]
    lines = ["## Speed against accuracy (`python -m benchmarks.speed`)", "",
             f"Model `{m['model_id']}` on {m['device']} ({m['cpus']} CPUs, {m['machine']}, {m['torch_threads']} torch "
             f"threads); one run, nothing else running, {m['wall_s'] / 60:.0f} min. The cascade's band (p_fake of the "
             f"first stage): decided as real below {m['band']['lo']:.4f}, as fake above {m['band']['hi']:.4f}. "
             f"FLOP floor = FLOPs / measured matmul rate ({m['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s).", "",
             "| setting | ms/image, batch 1 | ms/image, batched | share decided on the first guess | clean AUC "
             "| FPR at threshold | GFLOPs/image | floor ms | batch-1 time / floor |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k in ("full", "cascade", "first stage only"):
        t = tim[k]
        share = {"full": 0.0, "first stage only": 1.0}.get(k, acc["clean"]["decided_first"])
        lines.append(f"| {k} | {t['batch1']['ms_per_image']:.0f} | {t['batched']['ms_per_image']:.0f} | "
                     f"{share:.0%} | {acc['clean'][k]['auc']:.4f} | {acc['clean'][k]['fpr']:.1%} | "
                     f"{t['flops_per_image'] / 1e9:.2f} | {t['floor_ms']:.0f} | {t['ratio_to_floor_batch1']:.1f}x |")
    lines += ["", f"Accuracy per condition ({m['n_per_class']} test photos vs {m['n_per_class']} fresh samples of the "
              "embedded generator, the ROC suite's images):", "",
              "| condition | AUC full | AUC cascade | AUC first stage only | FPR full | FPR cascade | TPR full "
              "| TPR cascade | decided on the first guess |", "|---|---|---|---|---|---|---|---|---|"]
    for c, a in acc.items():
        lines.append(f"| {c} | {a['full']['auc']:.4f} | {a['cascade']['auc']:.4f} | "
                     f"{a['first stage only']['auc']:.4f} | {a['full']['fpr']:.1%} | {a['cascade']['fpr']:.1%} | "
                     f"{a['full']['tpr']:.1%} | {a['cascade']['tpr']:.1%} | {a['decided_first']:.0%} |")
    lines += ["", "Frontier (clean): the band's half-width in logit around the threshold varied; cost = first-stage "
              "cost + share refined x full cost (both measured above, batched).", "",
              "| half-width | decided on the first guess | AUC | ms/image |", "|---|---|---|---|"]
    lines += [f"| {r['half_width_logit']:g} | {r['decided_first']:.0%} | {r['auc']:.4f} | {r['ms_per_image']:.0f} |"
              for r in res["frontier"]]
    lines += ["", "![speed frontier](results/speed_frontier.png)"]
    prof = res.get("profile_batch1")
    if prof:
        lines += ["", f"Where the time goes: one image, batch 1, every image refined (torch profiler; "
                  f"{prof['total_ms']:.0f} ms of operator time in {prof['calls']:,} operator calls), the "
                  "operators with the most self time:", "",
                  "| operator | calls | self ms | share |", "|---|---|---|---|"]
        lines += [f"| `{o['op']}` | {o['calls']} | {o['self_ms']:.0f} | {o['share']:.0%} |" for o in prof["ops"]]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
