"""Inversion benchmark: encoder only vs hybrid (encoder + K steps) vs optimisation only, in W and W+.

    python -m benchmarks.inversion [--bundle models/fmnist32.pt] [--encoder models/fmnist32_encoder.pt]

For real test-split photos and fresh G_ema samples it reports mean pixel MSE and perceptual distance of
the reconstructions, the ROC AUC of the raw perceptual distance as a fake score (fakes should reconstruct
better), and milliseconds per image (batched, on this machine). Writes results/inversion.json, a PNG of
examples, and the table in RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from detector import plan
from gan_inversion.checkpoints import load_bundle
from gan_inversion.data import save_grid
from gan_inversion.defaults import DEFAULT_BUNDLE, DEFAULT_DATA, DEFAULT_ENCODER, REPO_ROOT, pick_device
from gan_inversion.encoder import load_encoder
from gan_inversion.perceptual import build_perceptual, parse_backend_id
from gan_inversion.projector import w_spread

from .common import RESULTS_DIR, eval_images, run_inversion, write_section

EVAL_FAKE_SEED = plan.seed("eval_fakes")


def settings(n: int, quick: bool) -> list[dict]:
    """(label, use encoder, steps, images per class): slow settings use fewer images."""
    if quick:
        return [dict(label="encoder only", enc=True, steps=0, n=n), dict(label="hybrid K=5", enc=True, steps=5, n=n),
                dict(label="optimisation N=20", enc=False, steps=20, n=n)]
    out = [dict(label="encoder only", enc=True, steps=0, n=n)]
    out += [dict(label=f"hybrid K={k}", enc=True, steps=k, n=n if k <= 25 else min(n, 200))
            for k in (5, 10, 25, 50, 100)]
    out += [dict(label=f"optimisation N={s}", enc=False, steps=s, n=m)
            for s, m in ((100, min(n, 200)), (300, min(n, 100)), (1000, min(n, 50)))]
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_setting(G, E, perc, reals, fakes, *, space: str, steps: int, enc: bool, n: int, batch: int, w_std: float):
    rows = {}
    t_total, count = 0.0, 0
    for name, imgs in (("real", reals[:n]), ("fake", fakes[:n])):
        mse, pd, recon = [], [], []
        for i in range(0, len(imgs), batch):
            x = imgs[i:i + batch]
            _sync(x.device)
            t0 = time.perf_counter()
            res = run_inversion(G, x, encoder=E, perceptual=perc, steps=steps, space=space, hybrid=enc, w_std=w_std)
            _sync(x.device)
            t_total += time.perf_counter() - t0
            count += len(x)
            with torch.no_grad():
                mse.append((res.images - x).square().mean(dim=[1, 2, 3]))
                pd.append(perc(res.images, x))
            recon.append((res.images[:8] if i == 0 else res.images[:0]).cpu())
        rows[name] = {"mse": torch.cat(mse).cpu(), "perceptual": torch.cat(pd).cpu(), "recon": torch.cat(recon)}
    labels = [0] * len(rows["real"]["perceptual"]) + [1] * len(rows["fake"]["perceptual"])
    scores = torch.cat([-rows["real"]["perceptual"], -rows["fake"]["perceptual"]]).tolist()
    return {
        "space": space, "steps": steps, "encoder": enc, "n_per_class": n,
        "real_mse": rows["real"]["mse"].mean().item(), "fake_mse": rows["fake"]["mse"].mean().item(),
        "real_perceptual": rows["real"]["perceptual"].mean().item(),
        "fake_perceptual": rows["fake"]["perceptual"].mean().item(),
        "auc_perceptual": roc_auc_score(labels, scores), "ms_per_image": 1000 * t_total / count,
    }, rows


def _rel(path: str | Path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(REPO_ROOT)) if p.is_relative_to(REPO_ROOT) else str(path)


def report(meta: dict, results: list[dict], png: Path | None) -> str:
    """The RESULTS.md section for one run (complete or cut short)."""
    lines = [
        f"## Inversion (`python -m benchmarks.inversion`): {meta['kimg']}-kimg generator, {meta['device']}",
        "",
        f"Bundle `{_rel(meta['bundle'])}` ({meta['kimg']} kimg), encoder `{_rel(meta['encoder'])}` after "
        f"{meta['encoder_steps']} steps, perceptual `{meta['perceptual']}`; reals = first test-split photos, fakes = "
        f"fresh G_ema samples (seed {EVAL_FAKE_SEED}); batch {meta['batch']}, on {meta['device']}. "
        "AUC: raw perceptual distance as the fake score (1.0 = perfect separation).",
        "",
        "| space | setting | n/class | MSE real | MSE fake | perc. real | perc. fake | AUC | ms/image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['space']} | {r['label']} | {r['n_per_class']} | {r['real_mse']:.4f} | {r['fake_mse']:.4f} | "
              f"{r['real_perceptual']:.4f} | {r['fake_perceptual']:.4f} | {r['auc_perceptual']:.3f} | "
              f"{r['ms_per_image']:.1f} |" for r in results]
    if png is not None and png.exists():
        lines += ["", f"Examples: `{_rel(png)}` (rows: 8 real targets, then their reconstructions by the first three "
                  "settings of the first space; then the same for fakes)."]
    return "\n".join(lines)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} torch thread(s)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    ap.add_argument("--encoder", default=str(DEFAULT_ENCODER))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--n", type=int, default=500, help="images per class for the fast settings")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--spaces", default="W,W+")
    ap.add_argument("--quick", action="store_true", help="a few images and steps (smoke run; not for RESULTS.md)")
    ap.add_argument("--out", default=None, help="JSON path (default results/inversion[_quick].json)")
    ap.add_argument("--device", default="cpu", help="cpu (default: the service's usual machine), cuda or auto")
    ap.add_argument("--only", default=None, help="comma-separated setting labels to run (default: all)")
    ap.add_argument("--section", default="inversion", help="RESULTS.md section to write")
    ap.add_argument("--from-json", default=None, help="only rewrite the RESULTS.md section from this saved JSON")
    args = ap.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        write_section(args.section, report(saved["meta"], saved["results"], None))
        print(f"wrote the {args.section!r} section of RESULTS.md from {args.from_json}")
        return 0
    device = pick_device(args.device)
    args.out = args.out or str(RESULTS_DIR / ("inversion_quick.json" if args.quick else "inversion.json"))

    torch.manual_seed(0)
    bundle = load_bundle(args.bundle, device=device)
    G = bundle.G_ema
    E, e_info = load_encoder(args.encoder, G=G, device=device)
    backend, size = parse_backend_id(e_info["perceptual"])
    perc = build_perceptual(backend, input_size=size).to(device)
    reals, fakes = eval_images(args.data, G, args.n, args.n, device=device)
    reals, fakes = reals.to(device), fakes.to(device)
    w_std = w_spread(G)
    meta = {"bundle": args.bundle, "kimg": bundle.progress.get("kimg"), "encoder": args.encoder,
            "encoder_steps": e_info["step"], "perceptual": perc.backend_id, "batch": args.batch,
            "torch_threads": torch.get_num_threads(), "device": _device_name(device), "quick": args.quick}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results, examples = [], {}
    for space in args.spaces.split(","):
        for s in settings(args.n, args.quick):
            if args.only and s["label"] not in args.only.split(","):
                continue
            r, rows = run_setting(G, E, perc, reals, fakes, space=space, steps=s["steps"], enc=s["enc"], n=s["n"],
                                  batch=args.batch, w_std=w_std)
            r["label"] = s["label"]
            results.append(r)
            examples[(space, s["label"])] = rows
            print(f"{space:3s} {s['label']:20s} n={s['n']:4d}  MSE real {r['real_mse']:.4f} fake {r['fake_mse']:.4f}  "
                  f"perc real {r['real_perceptual']:.4f} fake {r['fake_perceptual']:.4f}  "
                  f"AUC {r['auc_perceptual']:.3f}  {r['ms_per_image']:.0f} ms/img", flush=True)
            with open(args.out, "w") as f:  # after every setting: a run cut short keeps what it measured
                json.dump({"meta": meta, "results": results}, f, indent=2)

    # Example PNG: per row, 8 targets then reconstructions by encoder only, hybrid (K=25 or first) and optimisation.
    picks = [k for k in examples if k[0] == args.spaces.split(",")[0]]
    grid = [reals[:8].cpu(), *[examples[k]["real"]["recon"] for k in picks[:3]],
            fakes[:8].cpu(), *[examples[k]["fake"]["recon"] for k in picks[:3]]]
    png = RESULTS_DIR / ("inversion_examples_quick.png" if args.quick else "inversion_examples.png")
    save_grid(torch.cat(grid), png, nrow=8)

    if not args.quick:
        write_section(args.section, report(meta, results, png))
    print(f"wrote {args.out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
