"""Do the embedded detector's scores stay the same across a change of the code?

`python -m benchmarks.same_scores` scores the first 50 test-split photos and 50 fresh samples (seed 987654321)
with the embedded detector, as benchmarks/results/same_scores.json was scored, and prints the largest difference
in p_fake, whether the verdicts, the threshold and the model id agree. `--write` replaces the stored scores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from detector.runtime import Detector
from gan_inversion.data import load_fashion_mnist, to_float, to_uint8
from gan_inversion.defaults import DEFAULT_DATA, DEFAULT_DETECTOR
from gan_inversion.metrics import generate

STORED = Path(__file__).parent / "results" / "same_scores.json"
SAMPLE_SEED = 987_654_321


def scores(detector_path=DEFAULT_DETECTOR, n: int = 50) -> dict:
    torch.set_num_threads(2)
    det = Detector.load(detector_path)
    test = load_fashion_mnist(DEFAULT_DATA, split="test", canvas=det.G.img_resolution)
    out = {"model_id": det.model_id, "threshold": det.threshold, "p_fake": [], "verdicts": []}
    for images in (to_float(test.images[:n]), to_float(to_uint8(generate(det.G, n, seed=SAMPLE_SEED)))):
        for r in det.score_tensors(images):
            out["p_fake"].append(r.p_fake)
            out["verdicts"].append(r.verdict)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="store these scores as the reference")
    args = ap.parse_args(argv)
    now = scores()
    if args.write:
        STORED.write_text(json.dumps(now, indent=1) + "\n")
        return 0
    ref = json.loads(STORED.read_text())
    diff = float(np.max(np.abs(np.asarray(now["p_fake"]) - np.asarray(ref["p_fake"]))))
    same = {"model_id": now["model_id"] == ref["model_id"], "threshold": now["threshold"] == ref["threshold"],
            "verdicts": now["verdicts"] == ref["verdicts"]}
    print(json.dumps({"n": len(now["p_fake"]), "max_abs_diff_p_fake": diff, **same}))
    return 0 if diff <= 1e-6 and all(same.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
