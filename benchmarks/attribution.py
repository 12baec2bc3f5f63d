"""Attribution benchmark: which registered generator made an image, as the number of registered generators grows.

    python -m benchmarks.attribution            # 300 images per set (about 45 minutes on a 2-core CPU)
    python -m benchmarks.attribution --quick    # 40 per set, minutes (smoke run; numbers not for RESULTS.md)

Registered generators: 1 = the embedded fmnist32 (its detector alone: 'fmnist32' when flagged, else 'none');
2 = + the narrow benchmark StyleGAN2 (`models/attribution_detector.json`, committed, fitted by
`resynth fit --register narrow=benchmarks/generators/stylegan2_narrow.pt`); 3 = + fmnist32's raw (non-EMA)
generator from the committed training checkpoint, a sibling of the embedded one (fitted here, into
.cache/attribution/). Evaluation images, all held out from every fit: test-split photos, fresh samples (seed
EVAL_FAKE_SEED) of each registered generator, and of two generators registered nowhere (DCGAN, VAE).
An image's predicted class is 'none' when p_fake is at or below the threshold (the false-positive rate on photos
is the primary's target), else the most probable registered generator. The cost per image is measured at batch 1
and batched, on the same machine, nothing else running.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from detector import plan
from detector.components.attribution import NONE, load_member
from detector.features import FeatureCache, feature_context, features_for
from detector.fitting.attribution import AttributionConfig, fit_attribution, rows_for
from detector.fitting.images import quantize
from detector.runtime import Detector
from gan_inversion.checkpoints import bundle_from_dict, read_checkpoint, save_bundle
from gan_inversion.data import load_fashion_mnist, to_float
from gan_inversion.defaults import DEFAULT_CACHE, DEFAULT_DATA, DEFAULT_DETECTOR
from gan_inversion.metrics import generate

from . import generators
from .common import RESULTS_DIR, write_section

EVAL_FAKE_SEED = plan.seed("eval_fakes")

ROOT = Path(__file__).resolve().parent.parent
ATTRIBUTION2 = ROOT / "models" / "attribution_detector.json"
TRAINING_CKPT = ROOT / "models" / "training" / "fmnist32_checkpoint.pt"
WORK = ROOT / ".cache" / "attribution"


def raw_generator_bundle(path: Path) -> Path:
    """fmnist32's raw (non-EMA) generator as a bundle of its own (a third, closely related StyleGAN2)."""
    if not path.exists():
        ck = read_checkpoint(TRAINING_CKPT)
        b = bundle_from_dict({**ck, "G_ema": ck["G"], "G": None, "D": None})
        save_bundle(path, G_ema=b.G_ema, data=b.data, meta={**b.meta, "note": "fmnist32's non-EMA generator G"},
                    progress=b.progress)
    return path


def eval_sets(det: Detector, extra: dict, n: int, data_root) -> dict[str, torch.Tensor]:
    test = load_fashion_mnist(data_root, split="test", canvas=det.G.img_resolution)
    sets = {"photos": to_float(test.images[:n]), "fmnist32": quantize(generate(det.G, n, seed=EVAL_FAKE_SEED))}
    for name, G in extra.items():
        sets[name] = quantize(generate(G, n, seed=EVAL_FAKE_SEED))
    for name in ("dcgan", "vae"):
        sets[f"{name} (unregistered)"] = quantize(generators.sample(name, n, seed=EVAL_FAKE_SEED))
    return sets


def predictions(det: Detector, images: torch.Tensor, *, cache_dir, k: int) -> list[str]:
    if det.attribution is None:  # one generator: the detector's verdict
        cache = FeatureCache(cache_dir, feature_context(det))
        X, _ = features_for(images, G=det.G, D=det.D, encoder=det.encoder, perceptual=det.perceptual,
                            feature_cfg=det.feature_cfg, batch=50, cache=cache, desc=f"k={k}")
        p = det.probabilities(X, images).p_fake
        return ["fmnist32" if v > det.threshold else NONE for v in p]
    R = rows_for(det, det.members, images, batch=50, cache_dir=cache_dir, progress=True)
    P = det.attribution.probabilities(R)
    p_fake = det.attribution.p_fake(P)
    gens = det.attribution.classes[1:]
    return [NONE if pf <= det.threshold else gens[int(row[1:].argmax())] for pf, row in zip(p_fake, P, strict=True)]


def time_scoring(det: Detector, images: torch.Tensor, *, n1: int = 8, batch: int = 50) -> dict:
    det.score_tensors(images[:2])  # warm-up
    t0 = time.perf_counter()
    for i in range(n1):
        det.score_tensors(images[i:i + 1])
    b1 = 1000 * (time.perf_counter() - t0) / n1
    t0 = time.perf_counter()
    det.score_tensors(images[:batch])
    return {"ms_batch1": round(b1, 1), "ms_batched": round(1000 * (time.perf_counter() - t0) / batch, 1)}


def confusion(sets_pred: dict[str, list[str]], columns: list[str]) -> dict:
    return {row: {c: int(sum(p == c for p in preds)) for c in columns} for row, preds in sets_pred.items()}


def accuracy(sets_pred: dict[str, list[str]], registered: list[str]) -> dict:
    truth = {"photos": NONE, **{g: g for g in registered}}
    right = sum(sum(p == truth[s] for p in preds) for s, preds in sets_pred.items() if s in truth)
    total = sum(len(preds) for s, preds in sets_pred.items() if s in truth)
    out = {"accuracy": round(right / total, 4)}
    for s, preds in sets_pred.items():
        if s not in truth:
            out[f"{s} flagged"] = round(float(np.mean([p != NONE for p in preds])), 4)
    out["fpr_photos"] = round(float(np.mean([p != NONE for p in sets_pred["photos"]])), 4)
    return out


def render(results: dict) -> str:
    n = results["n_per_set"]
    lines = ["## Attribution over registered generators (`python -m benchmarks.attribution`)", "",
             f"Held-out images, {n} per set, clean; predicted class = `none` at or below the threshold (1% target "
             "FPR on photos), else the most probable registered generator. Rows: the images' true source; "
             "columns: the prediction. `fmnist32-raw` is the embedded generator's own non-EMA weights: a sibling "
             "that makes nearly the same images, the hardest case for attribution.", ""]
    for k, r in results["by_k"].items():
        cols = r["columns"]
        lines += [f"### {k} registered: {', '.join(c for c in cols if c != NONE)}", "",
                  "| true source \\ predicted | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for row, counts in r["confusion"].items():
            lines.append(f"| {row} | " + " | ".join(str(counts[c]) for c in cols) + " |")
        a = r["accuracy"]
        extra = "; ".join(f"{key} {v:.1%}" for key, v in a.items() if key.endswith("flagged"))
        lines += ["", f"Accuracy over photos and registered generators: **{a['accuracy']:.1%}**; false positives on "
                  f"photos {a['fpr_photos']:.1%}; unregistered generators flagged as fake: {extra}. "
                  f"Cost: {r['cost']['ms_batch1']:.0f} ms/image at batch 1, {r['cost']['ms_batched']:.0f} ms/image "
                  "batched (this 2-core CPU).", ""]
    lines += ["| registered generators | accuracy | ms/image batch 1 | ms/image batched |", "|---|---|---|---|"]
    for k, r in results["by_k"].items():
        lines.append(f"| {k} | {r['accuracy']['accuracy']:.1%} | {r['cost']['ms_batch1']:.0f} | "
                     f"{r['cost']['ms_batched']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n-fit", type=int, default=400, help="per class, for the 3-generator fit")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--cache", default=str(DEFAULT_CACHE))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    n, n_fit = (40, 60) if args.quick else (args.n, args.n_fit)
    WORK.mkdir(parents=True, exist_ok=True)
    det1 = Detector.load(DEFAULT_DETECTOR)
    det2 = Detector.load(ATTRIBUTION2)
    raw = load_member("fmnist32-raw", raw_generator_bundle(WORK / "fmnist32_raw.pt"))
    attr3 = WORK / f"attribution3{'_quick' if args.quick else ''}.json"
    if not attr3.exists():
        reals = load_fashion_mnist(args.data, split="train", canvas=det1.G.img_resolution)
        fit_attribution(attr3, primary_path=DEFAULT_DETECTOR, primary_name="fmnist32",
                        members=[*det2.members, raw], reals=reals, cfg=AttributionConfig(n_per_class=n_fit),
                        cache_dir=args.cache)
    det3 = Detector.load(attr3)
    sets = eval_sets(det1, {"narrow": det2.members[0].G, "fmnist32-raw": raw.G}, n, args.data)
    results = {"n_per_set": n, "quick": args.quick, "by_k": {}}
    for k, det in ((1, det1), (2, det2), (3, det3)):
        registered = ["fmnist32"] + [m.name for m in det.members]
        preds = {s: predictions(det, x, cache_dir=args.cache, k=k) for s, x in sets.items()}
        results["by_k"][k] = {"model_id": det.model_id, "columns": [NONE] + registered,
                              "confusion": confusion(preds, [NONE] + registered),
                              "accuracy": accuracy(preds, registered)}
        print(json.dumps({k: results["by_k"][k]["accuracy"]}), flush=True)
    for k, det in ((1, det1), (2, det2), (3, det3)):  # timed last, one after the other
        results["by_k"][k]["cost"] = time_scoring(det, sets["photos"])
    out = RESULTS_DIR / f"attribution{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    text = render(results)
    print(text)
    if not args.quick:
        write_section("attribution", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
