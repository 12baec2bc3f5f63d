"""The folder path is the real path: Fashion-MNIST as a folder of PNGs against the built-in loader.

    python -m benchmarks.folder_path [--n-real 1000] [--n-eval 300]

Exports the Fashion-MNIST train split as 28×28 PNG files (a temporary folder), then fits two detectors for the
embedded generator and encoder with the same reduced configuration (`--n-real` photos and samples, 300 reference
photos, no artifact CNN, no auxiliary generator, no operating point: the parts that take the longest here, and
the same in both) — one with `resynth fit` on the built-in loader, one with `resynth fit --real FOLDER` — and
evaluates each with `resynth eval-detector` on the held-out photos (the Fashion-MNIST test split; the
folder's held-out tenth) against the same fresh samples — each detector on both held-out sets, so that a gap can
be put on the fit or on the photos. Same data plan sizes; the held-out numbers should agree within their
intervals. Writes results/folder_path.json and the `folder_path` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from detector.cli import main as resynth
from gan_inversion.data import load_fashion_mnist
from gan_inversion.defaults import DEFAULT_CACHE, DEFAULT_DATA

from .common import RESULTS_DIR, write_section


def export_train_split(out: Path) -> int:
    """The Fashion-MNIST train split as 28×28 grayscale PNGs under out (100 folders of up to 600)."""
    train = load_fashion_mnist(DEFAULT_DATA, split="train", canvas=28).images  # [N, 1, 28, 28] uint8
    for i in tqdm(range(len(train)), desc="export"):
        d = out / f"{i // 600:03d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(train[i, 0]), "L").save(d / f"{i:05d}.png")
    return len(train)


def fit_detector(name: str, out: Path, sizes: list[str], source: list[str]) -> tuple[Path, dict]:
    det = out / f"{name}.json"
    t0 = time.time()
    if resynth(["fit", "--out", str(det), *sizes, *source, "--cache", str(DEFAULT_CACHE)]) != 0:
        raise SystemExit(f"the {name} fit failed")
    spec = json.loads(det.read_text())
    return det, {"fit_minutes": round((time.time() - t0) / 60, 1), "data_plan": spec["data_plan"],
                 "sizes": spec["classifier"]["sizes"]}


def evaluate(det: Path, source: list[str], n_eval: int) -> dict:
    result = det.with_suffix(".eval.json")
    if resynth(["eval-detector", "--detector", str(det), *source, "--n", str(n_eval), "--json", str(result),
                "--cache", str(DEFAULT_CACHE)]) != 0:
        raise SystemExit(f"the evaluation of {det.name} failed")
    return json.loads(result.read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-real", type=int, default=1000, help="the fit's photos and samples, each")
    ap.add_argument("--n-eval", type=int, default=300, help="held-out photos and samples per condition")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    args = ap.parse_args(argv)
    sizes = ["--n-real", str(args.n_real), "--n-fake", str(args.n_real), "--n-reference", "300",
             "--no-artifact-cnn", "--no-aux-generator", "--latent-map", "0", "--n-operating", "0"]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_files = export_train_split(tmp / "fmnist_png")
        sources = {"built-in loader": [], "folder of PNGs (--real)": ["--real", str(tmp / "fmnist_png")]}
        rows = {}
        for name, source in sources.items():  # each fit evaluated on both held-out sets: fit against photos
            det, rows[name] = fit_detector(name.split()[0], tmp, sizes, source)
            rows[name]["evaluations"] = {held: evaluate(det, src, args.n_eval) for held, src in sources.items()}
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "files": n_files,
            "minutes": round((time.time() - t0) / 60, 1), "sizes": sizes, "n_eval": args.n_eval}
    print(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    if args.no_write:
        return 0
    (RESULTS_DIR / "folder_path.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    write_section("folder_path", "\n".join(section(meta, rows)))
    return 0


def auc_interval(auc: float, n_real: int, n_fake: int) -> tuple[float, float]:
    """95% interval of an AUC from its Hanley-McNeil standard error."""
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    se = np.sqrt((auc * (1 - auc) + (n_fake - 1) * (q1 - auc ** 2) + (n_real - 1) * (q2 - auc ** 2))
                 / (n_real * n_fake))
    return max(0.0, auc - 1.96 * se), min(1.0, auc + 1.96 * se)


def wilson(p: float, n: int) -> tuple[float, float]:
    z = 1.96
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, c - h), min(1.0, c + h)


def intervals(m: dict) -> dict:
    return {"auc": (m["auc"], *auc_interval(m["auc"], m["n_real"], m["n_fake"])),
            "tpr": (m["tpr_at_1pct_fpr"], *wilson(m["tpr_at_1pct_fpr"], m["n_fake"]))}


def section(meta: dict, rows: dict) -> list[str]:
    lines = ["## The folder path against the built-in loader (`python -m benchmarks.folder_path`)", "",
             f"Run {meta['date']} ({meta['minutes']} min, {meta['machine']}; features through the feature cache, "
             "about 25 min when it is empty): the Fashion-MNIST train split "
             f"exported as {meta['files']:,} PNG files, two fits of the embedded generator and encoder with the "
             f"same reduced configuration (`resynth fit {' '.join(meta['sizes'])}`, with and without "
             f"`--real FOLDER`), each evaluated by `resynth eval-detector --n {meta['n_eval']}` on both held-out "
             "sets (the test split; the folder's held-out tenth) against the same fresh samples.", "",
             "| fitted through | photos read | held-out photos | condition | AUC [95% CI] | TPR at 1% FPR [95% CI] |",
             "|---|---|---|---|---|---|"]
    conds: dict = {}
    for name, r in rows.items():
        plan = r["data_plan"]
        photos = plan.get("photos", {}).get("photos", "60,000 (train split)")
        for held, ev in r["evaluations"].items():
            for cond, m in ev["conditions"].items():
                ci = conds.setdefault((held, cond), {})[name] = intervals(m)
                lines.append(f"| {name} | {photos} | {ev['real_data']} ({m['n_real']}) | {cond} | "
                             f"{ci['auc'][0]:.3f} [{ci['auc'][1]:.3f}, {ci['auc'][2]:.3f}] | "
                             f"{ci['tpr'][0]:.1%} [{ci['tpr'][1]:.1%}, {ci['tpr'][2]:.1%}] |")
    agree = [f"{c} on {h.split()[0]}" for (h, c), by in conds.items() if len(by) == 2 and all(
        max(v[k][1] for v in by.values()) <= min(v[k][2] for v in by.values()) for k in ("auc", "tpr"))]
    lines += ["", f"Fitted through the two paths, the detectors' intervals overlap (AUC and TPR both) in {len(agree)} "
              f"of {len(conds)} (held-out set, condition) pairs: {', '.join(agree) or 'none'}. AUC intervals from "
              "the Hanley-McNeil standard error, TPR intervals Wilson's; one fit per path, so a gap mixes the "
              "path with the fit's own variance (its photos differ). Rows: `benchmarks/results/folder_path.json`."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
