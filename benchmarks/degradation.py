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
from detector.fit import quantize
from detector.scoring import Detector
from gan_inversion.defaults import DEFAULT_DATA, DEFAULT_DETECTOR
from gan_inversion.degradation import DEFAULT_GRID, invert_degraded
from gan_inversion.encoder import invert

from .common import RESULTS_DIR, eval_images, write_section

CONDITIONS = {"clean": None, "blur σ=1": ("blur", 1.0), "resize ×0.5": ("resize", 0.5), "JPEG q75": ("jpeg", 75)}


def scores(det: Detector, x: torch.Tensor, *, aware: bool, batch: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    perc, mse, chosen = [], [], []
    for i in range(0, len(x), batch):
        t = x[i:i + batch]
        if aware:
            out = invert_degraded(det.G, t, encoder=det.encoder, perceptual=det.perceptual, cfg=det.feature_cfg)
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
             "the chosen degradation of G(w)); lower = more likely fake.", "",
             "| condition | plain AUC (perc / MSE) | aware AUC (perc / MSE) | plain ms | aware ms | chosen for photos "
             "| chosen for samples |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['condition']} | {r['plain_auc_perc']:.3f} / {r['plain_auc_mse']:.3f} | "
                     f"{r['aware_auc_perc']:.3f} / {r['aware_auc_mse']:.3f} | {r['plain_ms']:.0f} | "
                     f"{r['aware_ms']:.0f} | {r['chosen_real']} | {r['chosen_fake']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    ap.add_argument("--n", type=int, default=100, help="images per class and condition (100: about 25 min here)")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="20 images, two conditions (smoke run; no RESULTS.md)")
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
            "threads": torch.get_num_threads(), "quick": args.quick}
    rows = []
    for name, cond in conditions.items():
        r, f = (reals, fakes) if cond is None else (laundering.apply(reals, *cond), laundering.apply(fakes, *cond))
        row = {"condition": name}
        for mode, aware in (("plain", False), ("aware", True)):
            t0 = time.perf_counter()
            pr, mr, cr = scores(det, r, aware=aware, batch=args.batch)
            pf, mf, cf = scores(det, f, aware=aware, batch=args.batch)
            row[f"{mode}_ms"] = 1000 * (time.perf_counter() - t0) / (len(r) + len(f))
            row[f"{mode}_auc_perc"], row[f"{mode}_auc_mse"] = auc(pr, pf), auc(mr, mf)
            if aware:
                row["chosen_real"] = ", ".join(f"{k} {v}" for k, v in Counter(map(label, cr)).most_common())
                row["chosen_fake"] = ", ".join(f"{k} {v}" for k, v in Counter(map(label, cf)).most_common())
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = RESULTS_DIR / ("degradation_quick.json" if args.quick else "degradation.json")
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    if not args.quick:
        write_section("degradation", report(meta, rows))
    print(report(meta, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
