"""Does modelling the degradation in the inversion help? Raw separation of laundered photos and samples.

For test-split photos and fresh samples of the embedded generator, each laundered (clean, blur, down-up
resize, JPEG), compare two inversions at the detector's setting (encoder guess + K steps in W):
- plain: the input against G(w);
- degradation-aware: a grid of candidate degradations (gan_inversion.degradation.DEFAULT_GRID), the best
  per image, the input against degrade(G(w)).
The score is the perceptual distance (lower: more likely fake); the table gives its AUC, the pixel-MSE AUC,
ms/image on this machine, and how often each degradation was chosen for photos and for samples.

    python -m benchmarks.degradation [--n 100] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter

import torch
from sklearn.metrics import roc_auc_score

from detector import laundering
from detector.fitting.images import quantize
from detector.runtime import Detector
from gan_inversion.defaults import DEFAULT_DATA, DEFAULT_DETECTOR
from gan_inversion.degradation import DEFAULT_GRID, invert_degraded
from gan_inversion.encoder import invert

from .common import RESULTS_DIR, eval_images, write_section

CONDITIONS = {"clean": None, "blur σ=1": ("blur", 1.0), "resize ×0.5": ("resize", 0.5), "JPEG q75": ("jpeg", 75)}


def parse_mode(mode: str) -> tuple[bool, int | None]:
    """'plain' -> (False, None); 'full' -> (True, None): every candidate refined fully; 'searchK' -> (True, K)."""
    if mode == "plain":
        return False, None
    if mode == "full":
        return True, None
    if mode.startswith("search") and mode[6:].isdigit():
        return True, int(mode[6:])
    raise argparse.ArgumentTypeError(f"unknown mode {mode!r} (plain, full, searchK)")


def scores(det: Detector, x: torch.Tensor, *, aware: bool, batch: int, search_steps: int | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, list]:
    perc, mse, chosen = [], [], []
    for i in range(0, len(x), batch):
        t = x[i:i + batch]
        if aware:
            out = invert_degraded(det.G, t, encoder=det.encoder, perceptual=det.perceptual, cfg=det.feature_cfg,
                                  search_steps=search_steps)
            rec, chosen = out.degraded, chosen + out.degradations
        else:
            rec = invert(det.G, t, encoder=det.encoder, perceptual=det.perceptual, cfg=det.feature_cfg)[0].images
        with torch.no_grad():
            perc.append(det.perceptual(rec, t))
            mse.append((rec - t).square().mean(dim=[1, 2, 3]))
    return torch.cat(perc), torch.cat(mse), chosen


def auc(real: torch.Tensor, fake: torch.Tensor) -> float:
    y = [0] * len(real) + [1] * len(fake)
    return float(roc_auc_score(y, -torch.cat([real, fake]).numpy()))


def label(d) -> str:
    return "none" if d.is_identity else f"blur {d.blur_sigma:g}" if d.blur_sigma else f"resize {d.scale:g}"


def report(meta: dict, rows: list[dict]) -> str:
    lines = ["## Degradation-aware inversion (`python -m benchmarks.degradation`)", "",
             f"Model `{meta['model_id']}`, {meta['n']} test photos and {meta['n']} fresh samples per condition, "
             f"inversion at the detector's setting (K={meta['K']}, {meta['space']}); grid "
             f"{', '.join(meta['grid'])}; {meta['machine']}, {meta['threads']} threads. Raw scores, no classifier: "
             "perceptual distance (and pixel MSE) between the input and its re-synthesis (plain: G(w); aware: "
             "the chosen degradation of G(w)); lower = more likely fake. Modes: plain; full (every candidate "
             "refined K steps); searchk (every candidate k steps, the best continues to K).", "",
             "| condition | mode | AUC perc | AUC MSE | ms/image | chosen for photos | chosen for samples |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        for m in meta["modes"]:
            lines.append(f"| {r['condition']} | {m} | {r[f'{m}_auc_perc']:.3f} | {r[f'{m}_auc_mse']:.3f} | "
                         f"{r[f'{m}_ms']:.0f} | {r.get(f'{m}_chosen_real', '')} | {r.get(f'{m}_chosen_fake', '')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    ap.add_argument("--n", type=int, default=100, help="images per class and condition (100: about 25 min here)")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="20 images, two conditions (smoke run; no RESULTS.md)")
    ap.add_argument("--modes", default="plain,full,search5",
                    help="comma-separated: plain, full, searchK (default %(default)s)")
    ap.add_argument("--out", default=None, help="JSON name under results/ (a run with --out leaves RESULTS.md alone)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n = 20
    torch.manual_seed(0)
    det = Detector.load(args.detector)
    reals, fakes = eval_images(DEFAULT_DATA, det.G, args.n, args.n)
    fakes = quantize(fakes)
    conditions = dict(list(CONDITIONS.items())[:2]) if args.quick else CONDITIONS
    meta = {"model_id": det.model_id, "n": args.n, "K": det.feature_cfg.refine_steps, "space": det.feature_cfg.space,
            "grid": [label(d) for d in DEFAULT_GRID], "machine": f"{platform.machine()} CPU",
            "threads": torch.get_num_threads(), "quick": args.quick, "modes": args.modes.split(",")}
    for m in meta["modes"]:
        parse_mode(m)
    rows = []
    for name, cond in conditions.items():
        r, f = laundering.apply_condition(reals, cond), laundering.apply_condition(fakes, cond)
        row = {"condition": name}
        for mode in meta["modes"]:
            aware, search = parse_mode(mode)
            t0 = time.perf_counter()
            pr, mr, cr = scores(det, r, aware=aware, batch=args.batch, search_steps=search)
            pf, mf, cf = scores(det, f, aware=aware, batch=args.batch, search_steps=search)
            row[f"{mode}_ms"] = 1000 * (time.perf_counter() - t0) / (len(r) + len(f))
            row[f"{mode}_auc_perc"], row[f"{mode}_auc_mse"] = auc(pr, pf), auc(mr, mf)
            if aware:
                row[f"{mode}_chosen_real"] = ", ".join(f"{k} {v}" for k, v in Counter(map(label, cr)).most_common())
                row[f"{mode}_chosen_fake"] = ", ".join(f"{k} {v}" for k, v in Counter(map(label, cf)).most_common())
        rows.append(row)
        print(json.dumps(row), flush=True)
    name = args.out or ("degradation_quick.json" if args.quick else "degradation.json")
    (RESULTS_DIR / name).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if not args.quick and not args.out:
        write_section("degradation", report(meta, rows))
    print(report(meta, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
