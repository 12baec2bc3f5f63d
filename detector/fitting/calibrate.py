"""The operating point from the user's own reference photos (`resynth calibrate`).

The probabilities of a detector stay as they were fitted; what changes is where they become verdicts. For a
single detector, the operating point (detector/fitting/operating.py) is fitted on the user's photos, each
presented in every laundering condition: the fake threshold per degradation stratum, so that at most `fpr` of
those photos score above it, and the uncertain band at `uncertain_rate`. For an attribution detector, its one
threshold is set at `fpr` on the photos as given (`threshold_at_fpr`). The new detector file names what it was
calibrated on and gets its own model id (its verdicts differ, so results stored under the old id are not
reused). The bundle and encoder it points at are the same files, referred to from wherever the new file is
written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..features import FeatureCache
from ..imageio import ImageDecodeError
from ..runtime import Detector
from .classifier import threshold_at_fpr
from .operating import OperatingConfig, OperatingPointError, operating_point


class CalibrationError(ValueError):
    """Too few usable reference photos for the asked false-positive rate, or an unusable request."""


def min_reference_photos(fpr: float) -> int:
    """Fewest photos that let the threshold resolve `fpr`: at least 100, and at least 5 photos above it."""
    return max(100, math.ceil(5 / fpr))


def score_folder(det: Detector, paths: list[Path], *, batch: int = 32,
                 progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """p_fake of every decodable image (in order), and the files that could not be decoded."""
    p, skipped = [], []
    for i in tqdm(range(0, len(paths), batch), disable=not progress, desc="reference photos"):
        ok = []
        for path in paths[i:i + batch]:
            try:
                ok.append(det.prepare(path, source=str(path)))
            except ImageDecodeError as exc:
                skipped.append(f"{path}: {exc.reason}")
        if ok:
            results = det.score_tensors(torch.stack([x.tensor for x in ok]), preps=ok)
            p += [r.p_fake for r in results]
    return np.asarray(p, dtype=np.float64), skipped


def load_folder(det: Detector, paths: list[Path], *, progress: bool = True) -> tuple[torch.Tensor, list[str]]:
    """The decodable images among paths as the detector's inputs [N, C, H, W] (in order), and the files that
    could not be decoded."""
    ok, skipped = [], []
    for path in tqdm(paths, disable=not progress, desc="reference photos"):
        try:
            ok.append(det.prepare(path, source=str(path)).tensor)
        except ImageDecodeError as exc:
            skipped.append(f"{path}: {exc.reason}")
    return (torch.stack(ok) if ok else torch.zeros(0)), skipped


def _check_request(n: int, fpr: float, source: str) -> None:
    if not 0 < fpr < 0.5:
        raise CalibrationError(f"--fpr must lie in (0, 0.5), got {fpr}")
    need = min_reference_photos(fpr)
    if n < need:
        raise CalibrationError(f"{n} usable reference photos in {source}: at least {need} are needed to "
                               f"set a threshold at {fpr:.2%} false positives (add photos or raise --fpr)")


def calibrate_operating(det: Detector, detector_path: str | Path, photos: torch.Tensor, *, fpr: float,
                        out_path: str | Path, source: str, uncertain_rate: float = OperatingConfig.uncertain_rate,
                        skipped: int = 0, cache: FeatureCache | None = None, progress: bool = True) -> dict:
    """The single detector's spec with an operating point fitted on these photos (the detector's inputs), ready
    to be written at out_path."""
    _check_request(len(photos), fpr, source)
    cfg = OperatingConfig(target_fpr=fpr, uncertain_rate=uncertain_rate)
    try:
        op = operating_point(det, photos, cfg=cfg, cache=cache, source=source, progress=progress)
    except OperatingPointError as exc:
        raise CalibrationError(str(exc)) from exc
    spec = relocated(json.loads(Path(detector_path).read_text()), detector_path, out_path)
    old = det.threshold
    spec["operating"] = op
    clean = op["on_photos"].get("clean", {})
    record = {"reference": source, "n_photos": int(len(photos)), "skipped": int(skipped), "target_fpr": fpr,
              "uncertain_rate": uncertain_rate, "fpr_on_reference": clean.get("fake"),
              "thresholds": {k: v["threshold"] for k, v in op["per_stratum"].items()}, "fitted_threshold": old,
              **({"cell_thresholds": op["cells"]["thresholds"]} if op.get("cells") else {})}
    return _stamp(spec, record, np.sort([v["threshold"] for v in op["per_stratum"].values()]), fpr)


def calibrate(detector_path: str | Path, p_real: np.ndarray, *, fpr: float, out_path: str | Path, source: str,
              skipped: int = 0) -> dict:
    """An attribution detector's spec with its threshold at `fpr` on these reference scores, ready to be written
    at out_path."""
    _check_request(len(p_real), fpr, source)
    spec = relocated(json.loads(Path(detector_path).read_text()), detector_path, out_path)
    decider = "attribution" if spec.get("attribution") else "evidence" if spec.get("evidence") else "classifier"
    old = float(spec[decider]["threshold"])
    t = threshold_at_fpr(p_real, fpr)
    spec[decider]["threshold"] = float(t)
    spec[decider]["target_fpr"] = fpr
    record = {"reference": source, "n_photos": int(len(p_real)), "skipped": int(skipped), "target_fpr": fpr,
              "fpr_on_reference": float((p_real > t).mean()), "threshold": float(t), "fitted_threshold": old}
    return _stamp(spec, record, np.sort(p_real), fpr)


def relocated(spec: dict, detector_path: str | Path, out_path: str | Path) -> dict:
    """The spec with the files it names referred to from out_path's folder."""
    src_dir, out_dir = Path(detector_path).resolve().parent, Path(out_path).resolve().parent
    rel = lambda f: os.path.relpath(src_dir / f, out_dir)  # noqa: E731
    for part in ("bundle", "encoder", "attribution_of"):
        if spec.get(part):
            spec[part]["file"] = rel(spec[part]["file"])
    if (spec.get("evidence") or {}).get("artifacts"):
        spec["evidence"]["artifacts"]["file"] = rel(spec["evidence"]["artifacts"]["file"])
    for member in spec.get("members") or []:
        for part in ("bundle", "encoder"):
            if member.get(part):
                member[part]["file"] = rel(member[part]["file"])
    return spec


def _stamp(spec: dict, record: dict, values: np.ndarray, fpr: float) -> dict:
    """The calibration record and the calibrated model id."""
    digest = hashlib.sha256(np.asarray(values, dtype=np.float64).tobytes() + f"{fpr}".encode()).hexdigest()[:8]
    base_id = spec.get("calibration", {}).get("base_model_id", spec["model_id"])
    spec["calibration"] = {"base_model_id": base_id, **record,
                           "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    spec.setdefault("base_model_id", spec["model_id"])  # the fit it comes from
    spec["model_id"] = f"{base_id}-cal{digest}"
    spec["metrics"] = {}  # measured with the fitted threshold: no longer this file's
    return spec
