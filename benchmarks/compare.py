"""Compare detector files on the ROC suite's test images: resynth's combined evidence only, no baselines.

    python -m benchmarks.compare --detector models/fmnist32_detector.json --detector /tmp/variant.json [--n 300]

For variants of a fit (another evidence, other reference photos, another artifact CNN) before one of them
becomes the embedded detector and goes through the whole suite. The images are the suite's (benchmarks/roc.py:
the first n test-split photos, n samples per generator from the evaluation seeds, the same launderings); the
features come through the feature cache, so a detector that shares the embedded inversion is scored in minutes
once the suite has run. Every image is refined (the full detector, the suite's `resynth_full`). Prints, per
condition and generator, each detector's AUC, the share of samples caught at its threshold, and the artifact
CNN's AUC alone; then each detector's false-positive rate on the photos of every condition and its ECE on clean
images. With --json, the numbers also go to that file.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from detector import laundering
from detector.features import FeatureCache, feature_context, features_for
from detector.metrics import point_metrics
from detector.runtime import Detector
from gan_inversion.data import load_fashion_mnist, to_float
from gan_inversion.defaults import DEFAULT_CACHE, DEFAULT_DATA, DEFAULT_DETECTOR

from .roc import CONDITIONS, HELD_OUT_CONDITIONS, OWN, combined_evidence, fake_sets

NAMES = ["stylegan2 psi=1.0", "stylegan2 psi=0.7", "dcgan", "vae", "stylegan2-narrow"]


def score_sets(det: Detector, reals: torch.Tensor, fakes: dict[str, torch.Tensor], conditions: dict, *,
               cache_dir: str | Path | None) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray | None]]:
    """(condition, 'real' or generator) -> (p_fake, artifact logits or None) of the full detector; generators
    other than the embedded one only under HELD_OUT_CONDITIONS, as in the suite."""
    cache = FeatureCache(cache_dir, feature_context(det)) if cache_dir else None
    kw = dict(G=det.G, D=det.D, encoder=det.encoder, perceptual=det.perceptual, feature_cfg=det.feature_cfg,
              batch=50, cache=cache)
    out = {}
    for cname, cond in conditions.items():
        launder = partial(laundering.apply_condition, cond=cond)
        for gname in ["real", *fakes]:
            if gname != "real" and gname not in OWN and cname not in HELD_OUT_CONDITIONS:
                continue
            images = launder(reals if gname == "real" else fakes[gname])
            X, _ = features_for(images, desc=f"{det.model_id} {cname} {gname}", **kw)
            _, L, ev = combined_evidence(det, X, images)
            out[(cname, gname)] = (ev.p_fake, L)
    return out


def compare(dets: list[Detector], reals: torch.Tensor, fakes: dict[str, torch.Tensor], *, conditions: dict,
            cache_dir: str | Path | None = None) -> dict:
    """Each detector's AUC, recall at its threshold and artifact-CNN AUC per (condition, generator), its
    false-positive rate per condition and its ECE on clean images (the first generator's)."""
    ids = [d.model_id for d in dets]
    if len(set(ids)) < len(ids):
        raise ValueError(f"the same detector twice among {', '.join(ids)}")
    res = {"n": len(reals), "detectors": {}}
    first = next(iter(fakes))
    for det in dets:
        s = score_sets(det, reals, fakes, conditions, cache_dir=cache_dir)
        rows, fpr = {}, {}
        for (cname, gname), (p, L) in s.items():
            p_real, L_real = s[(cname, "real")]
            if gname == "real":
                fpr[cname] = float((p > det.threshold).mean())
                continue
            y = np.r_[np.zeros(len(p_real)), np.ones(len(p))]
            rows[f"{cname} | {gname}"] = {
                "auc": float(roc_auc_score(y, np.r_[p_real, p])), "caught": float((p > det.threshold).mean()),
                "artifact_auc": None if L is None else float(roc_auc_score(y, np.r_[L_real, L]))}
        p_real, p_fake = s[("clean", "real")][0], s[("clean", first)][0]
        ece = point_metrics(np.r_[np.zeros(len(p_real)), np.ones(len(p_fake))].astype(int), np.r_[p_real, p_fake],
                            det.threshold, probabilities=True)["ece"]
        res["detectors"][det.model_id] = {"threshold": det.threshold, "rows": rows, "fpr": fpr, "ece_clean": ece}
    return res


def render(res: dict) -> str:
    ids = list(res["detectors"])
    head = "| condition | generator | " + " | ".join(f"{i} AUC / caught / CNN alone" for i in ids) + " |"
    lines = [head, "|---|---|" + "---|" * len(ids)]
    for key in res["detectors"][ids[0]]["rows"]:
        cells = []
        for i in ids:
            r = res["detectors"][i]["rows"].get(key)
            cnn = "—" if r is None or r["artifact_auc"] is None else f"{r['artifact_auc']:.3f}"
            cells.append("—" if r is None else f"{r['auc']:.3f} / {100 * r['caught']:.0f}% / {cnn}")
        c, g = key.split(" | ")
        lines.append(f"| {c} | {g} | " + " | ".join(cells) + " |")
    lines.append("")
    for i in ids:
        d = res["detectors"][i]
        fpr = ", ".join(f"{c} {100 * v:.1f}%" for c, v in d["fpr"].items())
        lines.append(f"- `{i}` (threshold {d['threshold']:.4f}): FPR on photos {fpr}; highest "
                     f"{100 * max(d['fpr'].values()):.1f}%; ECE clean {d['ece_clean']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", action="append", help="a detector file (repeatable; default: the embedded one)")
    ap.add_argument("--n", type=int, default=300, help="images per real/fake set (the suite's: 300)")
    ap.add_argument("--quick", action="store_true", help="40 images, two conditions (a smoke run)")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    paths = args.detector or [str(DEFAULT_DETECTOR)]
    dets = [Detector.load(p) for p in paths]
    conditions = dict(list(CONDITIONS.items())[:2]) if args.quick else CONDITIONS
    n = 40 if args.quick else args.n
    reals = to_float(load_fashion_mnist(DEFAULT_DATA, split="test").images[:n])
    res = compare(dets, reals, fake_sets(dets[0], n, NAMES), conditions=conditions, cache_dir=DEFAULT_CACHE)
    print(render(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
