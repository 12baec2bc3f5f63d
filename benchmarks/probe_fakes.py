"""Which kinds of fake teach the linear probe about generators it never saw (issue 13, item 5).

    python -m benchmarks.probe_fakes [--aux models/auxiliary/upsample_conv.pt] [--n 300] [--n-fit 2000]

The ROC suite's linear-probe baseline (MobileNetV2 stage means, CV logistic regression, fitting images
laundered with p 0.5) fitted with different fakes beside the registered generator's, each against as many
train-split photos, then scored alone on the ROC suite's own test images (first n test photos; n samples per
generator from the evaluation seed), clean and after resize x0.5 and blur sigma 1:
- the registered generator only (the suite's baseline);
- plus an auxiliary generator of another family (gan_inversion/auxiliary.py): every suite generator unseen;
- plus two of the suite's three other generators, the third left out (leave-one-generator-out): only the row
  of the left-out generator is reported for it.
A probe alone, not the detector: whether the combination keeps the other targets is the ROC suite's to say
after a refit. Writes results/probe_fakes.json and the 'probe_fakes' section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from detector import laundering, plan
from detector.fitting.images import quantize
from detector.runtime import Detector
from gan_inversion.auxiliary import load_aux, sample_aux
from gan_inversion.data import load_fashion_mnist, to_float
from gan_inversion.defaults import DEFAULT_DATA, DEFAULT_DETECTOR
from gan_inversion.metrics import generate

from . import generators
from .baselines import LinearProbeBaseline
from .common import RESULTS_DIR, write_section
from .roc import CONDITIONS, fake_sets

OTHERS = ["dcgan", "vae", "stylegan2-narrow"]
CONDS = {c: CONDITIONS[c] for c in ("clean", "resize0.5", "blur1")}
AUX_SEED, OTHER_SEED = plan.seed("probe_aux_fakes"), plan.seed("probe_other_fakes")  # streams the suite never draws


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    ap.add_argument("--aux", default="models/auxiliary/upsample_conv.pt", help="auxiliary generator file")
    ap.add_argument("--n", type=int, default=300, help="test images per set (the ROC suite's)")
    ap.add_argument("--n-fit", type=int, default=2000, help="fitting samples per generator")
    args = ap.parse_args(argv)
    t0 = time.time()
    det = Detector.load(args.detector)
    train = load_fashion_mnist(DEFAULT_DATA, split="train")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    fit = {"own": quantize(generate(det.G, args.n_fit, seed=plan.seed("baseline_fakes"))),
           "auxiliary": quantize(sample_aux(load_aux(args.aux), args.n_fit, seed=AUX_SEED))}
    fit.update({g: quantize(generators.sample(g, args.n_fit, seed=OTHER_SEED)) for g in OTHERS})
    names = ["stylegan2 psi=1.0", *OTHERS]
    test_real = to_float(load_fashion_mnist(DEFAULT_DATA, split="test").images[: args.n])
    test_fake = fake_sets(det, args.n, names)
    variants = {"registered generator only": (["own"], names),
                "+ auxiliary (another family)": (["own", "auxiliary"], names),
                **{f"+ the other two (without {g})": (["own", *[o for o in OTHERS if o != g]], [g]) for g in OTHERS}}
    rows = probe_rows(fit, to_float(train.get_batch(perm[: args.n_fit * 3])), test_real, test_fake, variants)
    meta = {"model_id": det.model_id, "aux": args.aux, "n": args.n, "n_fit": args.n_fit, "wall_s": time.time() - t0}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "probe_fakes.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    write_section("probe_fakes", render(meta, rows, names))
    print(f"done in {meta['wall_s']:.0f} s")
    return 0


def probe_rows(fit_fakes: dict[str, torch.Tensor], photos: torch.Tensor, test_real: torch.Tensor,
               test_fake: dict[str, torch.Tensor], variants: dict[str, tuple[list[str], list[str]]], *,
               backbone=None, progress: bool = True) -> list[dict]:
    """One probe per variant {label: (kinds of fake it is fitted with, generators it is reported on)}: fitted on
    the fakes of those kinds against as many of `photos` (the first ones; all [N, C, H, W] floats, 8-bit values),
    both laundered with p 0.5, then its AUC on test_real against each reported test_fake set, per condition."""
    rows = []
    for label, (kinds, report) in variants.items():
        fake = torch.cat([fit_fakes[k] for k in kinds])
        if len(photos) < len(fake):
            raise ValueError(f"{label}: {len(fake)} fakes but only {len(photos)} photos to fit against")
        g = torch.Generator().manual_seed(0)
        probe = LinearProbeBaseline(backbone=backbone).fit(
            laundering.random_launder(photos[: len(fake)], prob=0.5, generator=g)[0],
            laundering.random_launder(fake, prob=0.5, generator=g)[0])
        row = {"fitted_with": label, "fakes": kinds, "auc": {}}
        for cname, cond in CONDS.items():
            launder = partial(laundering.apply_condition, cond=cond)
            s_real = probe.score(launder(test_real))
            for name in report:
                s_fake = probe.score(launder(test_fake[name]))
                y = np.r_[np.zeros(len(s_real)), np.ones(len(s_fake))]
                row["auc"][f"{cname} {name}"] = float(roc_auc_score(y, np.r_[s_real, s_fake]))
        rows.append(row)
        if progress:
            print(json.dumps(row), flush=True)
    return rows


def render(meta: dict, rows: list[dict], names: list[str]) -> str:
    cols = [f"{c} {n}" for c in CONDS for n in names]
    lines = ["## The linear probe fitted with more kinds of fake (`python -m benchmarks.probe_fakes`)", "",
             f"The ROC suite's linear-probe baseline, alone, fitted with {meta['n_fit']} samples of each kind of fake "
             f"(and as many train-split photos), scored on the suite's test images ({meta['n']} + {meta['n']}); "
             f"auxiliary generator `{meta['aux']}`; model `{meta['model_id']}`; {meta['wall_s'] / 60:.0f} min. "
             "AUC; — = not reported (that generator was in the probe's fitting).", "",
             "| fitted with | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        lines.append(f"| {r['fitted_with']} | " + " | ".join(
            f"{r['auc'][c]:.3f}" if c in r["auc"] else "—" for c in cols) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
