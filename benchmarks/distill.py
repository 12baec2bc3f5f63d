"""The distilled encoder's frontier: encoder × refinement steps against accuracy at the operating point and cost.

    python -m benchmarks.distill --student FILE [--steps 0,2,5] [--n-photos 500] [--n-fakes 300] [--n-train 1500]

Settings: the embedded detector's refinement (its encoder, K = 25: the teacher), its encoder with fewer steps, and
the student (`resynth distill-encoder`) with K steps; every setting keeps the rest of the inversion (the degradation
search on the guess, W space, the learning rate). The served detector's classifier was fitted on K = 25 features,
so each setting gets a classifier of its own, fitted the same way on the same train-split images (the embedded
fit's first `--n-train` photos and samples, laundered as the fit launders; detector/fitting/classifier.py: logistic
or gradient boosting by cross-validation, calibrated, thresholded at 1% of its held-out photos) on the inversion
features alone (no photo model, probe or artifact CNN: those do not depend on the setting). Held out: the first
`--n-photos` test-split photos and `--n-fakes` fresh samples of the generator in the clean, JPEG 75, resize ×0.5
and blur σ 1 conditions, and `--n-fakes` samples of each generator resynth never saw (clean), every image presented
as a user's file. Per setting and set: AUC, TPR at 1% FPR against the photos of the same condition, and the share
flagged at the classifier's threshold (for photos, the false-positive rate). Cost: ms/image of the features at
batch 1 and batch 50 on uncached images, measured after the accuracy, nothing else running. Features go through
the feature cache. Writes results/distill.json and the 'distill' section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from functools import partial

import numpy as np
import torch

from detector import laundering
from detector.features import FeatureCache, FeatureNets, extract_features, feature_context, features_for
from detector.fitting.classifier import ClassifierConfig, fit_classifier
from detector.fitting.config import DetectorConfig
from detector.fitting.images import fit_images
from detector.imageio import as_files
from detector.metrics import point_metrics
from detector.runtime import Detector
from gan_inversion.data import load_fashion_mnist, to_float
from gan_inversion.defaults import DEFAULT_CACHE, DEFAULT_DATA, DEFAULT_DETECTOR
from gan_inversion.encoder import load_encoder

from .common import RESULTS_DIR, write_section
from .roc import HELD_OUT_CONDITIONS, OWN, UNSEEN, fake_sets


def nets_for(det: Detector, encoder, steps: int) -> FeatureNets:
    """The detector's inversion with `encoder` and `steps` refinement steps (with none, every degradation candidate
    is scored on the guess, as the cascade's first stage does)."""
    cfg = dataclasses.replace(det.feature_cfg, refine_steps=steps,
                              search_steps=det.feature_cfg.search_steps if steps > 0 else None)
    return FeatureNets(G=det.G, D=det.D, encoder=encoder, perceptual=det.perceptual, feature_cfg=cfg)


def features(nets: FeatureNets, images: torch.Tensor, desc: str) -> tuple[np.ndarray, list[str]]:
    cache = FeatureCache(DEFAULT_CACHE, feature_context(nets))
    return features_for(images, G=nets.G, D=nets.D, encoder=nets.encoder, perceptual=nets.perceptual,
                        feature_cfg=nets.feature_cfg, batch=50, cache=cache, desc=desc)


def test_sets(det: Detector, n_photos: int, n_fakes: int) -> dict[str, dict[str, torch.Tensor]]:
    """condition -> {'photos', own generator, (clean only) the unseen generators} as the model receives files."""
    photos = to_float(load_fashion_mnist(DEFAULT_DATA, split="test").images[:n_photos])
    fakes = fake_sets(det, n_fakes, [OWN[0], *UNSEEN])
    out = {}
    for cname in HELD_OUT_CONDITIONS:
        present = partial(as_files, framing=det.bundle.framing,
                          launder=partial(laundering.apply_condition, cond=laundering.CONDITIONS[cname]))
        out[cname] = {"photos": present(photos)}
        for g, x in fakes.items():
            if g == OWN[0] or cname == "clean":
                out[cname][g] = present(x)
    return out


def evaluate(nets: FeatureNets, label: str, train: tuple[torch.Tensor, np.ndarray], sets: dict) -> dict:
    X, names = features(nets, train[0], f"{label} train")
    spec, model = fit_classifier(X, train[1], names, cfg=ClassifierConfig())
    t = spec["threshold"]
    rows = {}
    for cname, group in sets.items():
        p = {g: model.predict_proba(features(nets, x, f"{label} {cname} {g}")[0])[:, 1] for g, x in group.items()}
        p_real = p.pop("photos")
        rows[cname] = {"photos": {"flagged": float((p_real > t).mean()), "n": len(p_real)}}
        for g, pf in p.items():
            m = point_metrics(np.r_[np.zeros(len(p_real)), np.ones(len(pf))], np.r_[p_real, pf])
            rows[cname][g] = {"auc": m["auc"], "tpr_at_1pct_fpr": m["tpr_at_1pct_fpr"],
                              "flagged": float((pf > t).mean()), "n": len(pf)}
    return {"chosen": spec["selection"]["chosen"], "cv_auc": spec["selection"]["cv"], "threshold": t,
            "conditions": rows}


def timing(nets: FeatureNets, images: torch.Tensor) -> dict:
    """ms/image of the inversion features at batch 1 (20 images) and batch 50 (100 images), uncached."""
    run = lambda x: extract_features(nets.G, nets.D, nets.encoder, nets.perceptual, x, cfg=nets.feature_cfg)  # noqa
    run(images[:50])
    t0 = time.perf_counter()
    for i in range(20):
        run(images[i:i + 1])
    b1 = 1000 * (time.perf_counter() - t0) / 20
    t0 = time.perf_counter()
    for i in range(0, 100, 50):
        run(images[i:i + 50])
    return {"batch1_ms": b1, "batched_ms": 1000 * (time.perf_counter() - t0) / 100}


def render(meta: dict, results: dict) -> str:
    own = OWN[0]
    lines = [
        f"Detector `{meta['detector']}` (teacher: its encoder, K = {meta['teacher_steps']}); student "
        f"`{meta['student']}` ({meta['student_info']}). {meta['n_train']} train-split photos and as many samples fit "
        f"each setting's classifier on the inversion features alone; held out: {meta['n_photos']} test photos, "
        f"{meta['n_fakes']} samples a generator, presented as files. {meta['machine']}; {meta['minutes']:.0f} min.",
        "",
        "| setting | ms/image batch 1 | ms/image batched | photos flagged (clean) | own clean: AUC / TPR@1% | "
        "own JPEG 75 | own resize ×0.5 | own blur σ1 | DCGAN | VAE | narrow StyleGAN2 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    def cell(c: dict, cond: str, g: str) -> str:
        return f"{c[cond][g]['auc']:.3f} / {c[cond][g]['tpr_at_1pct_fpr']:.0%}"

    for label, r in results.items():
        c = r["conditions"]
        lines.append(f"| {label} | {r['timing']['batch1_ms']:.0f} | {r['timing']['batched_ms']:.0f} | "
                     f"{c['clean']['photos']['flagged']:.1%} | {cell(c, 'clean', own)} | {cell(c, 'jpeg75', own)} | "
                     f"{cell(c, 'resize0.5', own)} | {cell(c, 'blur1', own)} | {cell(c, 'clean', 'dcgan')} | "
                     f"{cell(c, 'clean', 'vae')} | {cell(c, 'clean', 'stylegan2-narrow')} |")
    lines += ["", "Photos flagged at each setting's own threshold (1% of its held-out train photos), per condition:",
              "", "| setting | " + " | ".join(HELD_OUT_CONDITIONS) + " |", "|---|" + "---|" * len(HELD_OUT_CONDITIONS)]
    for label, r in results.items():
        lines.append(f"| {label} | " + " | ".join(f"{r['conditions'][c]['photos']['flagged']:.1%}"
                                                  for c in HELD_OUT_CONDITIONS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", required=True, help="the student encoder (resynth distill-encoder)")
    ap.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="the detector whose refinement is the teacher")
    ap.add_argument("--steps", default="0,2,5", help="refinement steps after the student's guess (comma list)")
    ap.add_argument("--teacher-steps", default="0,5", help="fewer steps after the teacher's encoder (comma list)")
    ap.add_argument("--n-photos", type=int, default=500, help="test-split photos per condition")
    ap.add_argument("--n-fakes", type=int, default=300, help="samples per generator and condition")
    ap.add_argument("--n-train", type=int, default=1500, help="train photos and samples of each classifier")
    ap.add_argument("--section", default="distill",
                    help="the RESULTS.md section (and results/<section>.json) to write: another run beside the first")
    a = ap.parse_args(argv)
    t_start = time.time()
    torch.manual_seed(0)
    det = Detector.load(a.detector)
    student, s_info = load_encoder(a.student, G=det.G)
    K = det.feature_cfg.refine_steps
    settings = {f"teacher encoder, K={K} (served)": nets_for(det, det.encoder, K)}
    settings.update({f"teacher encoder, K={k}": nets_for(det, det.encoder, int(k)) for k in a.teacher_steps.split(",")})
    settings.update({f"student, K={k}": nets_for(det, student, int(k)) for k in a.steps.split(",")})
    fit_cfg = dataclasses.replace(DetectorConfig().fit, n_real=a.n_train, n_fake=a.n_train)
    reals = load_fashion_mnist(DEFAULT_DATA, split="train")
    r, f, _, _ = fit_images(det.G, reals, fit_cfg)
    train = (torch.cat([r, f]), np.r_[np.zeros(len(r)), np.ones(len(f))].astype(int))
    sets = test_sets(det, a.n_photos, a.n_fakes)
    results = {label: evaluate(nets, label, train, sets) for label, nets in settings.items()}
    timing_images = sets["clean"][OWN[0]][:50].clone()
    timing_images = torch.cat([timing_images, sets["clean"]["photos"][:50]])
    for label, nets in settings.items():
        results[label]["timing"] = timing(nets, timing_images)
        print(label, results[label]["timing"], flush=True)
    distilled = s_info.get("distilled_from") or {}
    meta = {"detector": det.model_id, "teacher_steps": K, "student": a.student,
            "student_info": f"{s_info['step']} steps on {distilled.get('plan', {}).get('n_photos', '?')} photos and "
                            f"as many samples",
            "n_train": a.n_train, "n_photos": a.n_photos, "n_fakes": a.n_fakes,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
            "minutes": (time.time() - t_start) / 60}
    (RESULTS_DIR / f"{a.section}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    body = render(meta, results)
    run = " ".join(["python -m benchmarks.distill", *(sys.argv[1:] if argv is None else argv)])
    write_section(a.section, f"## The distilled encoder's frontier (`{run}`)\n\n" + body)
    print(body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
