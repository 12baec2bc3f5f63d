"""The detector file format: what a file holds, in which version, and the one place that reads and writes it.

A detector file is JSON. Its `kind` says what it is and its `contents` list every optional part it holds, so
that no reader guesses from which keys exist:

- kind `single`: a detector for one generator. Always `bundle`, `encoder` (or null), `perceptual`, `features`,
  `classifier`, `domain`, `fit`, `data_plan`, `config`, `metrics`; the optional parts are listed in `contents`:
  `evidence` (the photo model, the probe and the combination; absent: the classifier alone), `artifacts` (the
  artifact CNN inside `evidence`), `cascade` (the first stage), `latent_map`, `calibration` (a threshold set on
  the user's photos by `resynth calibrate`), `operating` (the fake threshold per degradation stratum and the
  uncertain band, set on photos alone: detector/components/operating.py).
- kind `attribution`: attribution over a primary single detector (`attribution_of`) and further registered
  generators (`members`, `attribution`).

Version history: 1 — every file before the kinds and contents were declared (refused: refit); 2 — this layout.
This module imports nothing else from `detector/`.
"""

from __future__ import annotations

import json
from pathlib import Path

from gan_inversion.fileio import atomic_write_bytes

DETECTOR_FORMAT = "resynth-detector"
DETECTOR_VERSION = 2
KINDS = ("single", "attribution")
REQUIRED = {
    "single": ("model_id", "bundle", "encoder", "perceptual", "features", "classifier", "domain", "fit", "data_plan",
               "config", "metrics"),
    "attribution": ("model_id", "attribution_of", "members", "attribution", "fit", "data_plan", "metrics"),
}
OPTIONAL = {"single": ("evidence", "artifacts", "cascade", "latent_map", "calibration", "operating"),
            "attribution": ()}


class DetectorError(RuntimeError):
    """A detector file is unusable (unreadable, another format or version, missing parts, mismatched networks)."""


def base_model_id(model_id: str) -> str:
    """A model id without its operating point's suffix (`-op<digest>`): the identity of the probabilities, which
    refitting the operating point leaves unchanged."""
    return model_id.rsplit("-op", 1)[0]


def contents_of(spec: dict) -> list[str]:
    """The optional parts a spec holds, in the order of OPTIONAL (what `contents` must say)."""
    have = set(spec) | ({"artifacts"} if "artifacts" in (spec.get("evidence") or {}) else set())
    return [p for p in OPTIONAL.get(spec.get("kind"), ()) if p in have]


def validate(spec: dict, where: str = "detector file") -> dict:
    """Check format, version, kind, required parts and declared contents; returns the spec."""
    if not isinstance(spec, dict) or spec.get("format") != DETECTOR_FORMAT:
        raise DetectorError(f"{where}: not a resynth detector file")
    version = spec.get("format_version")
    if version != DETECTOR_VERSION:
        if isinstance(version, int) and version < DETECTOR_VERSION:
            raise DetectorError(f"{where}: written in detector format version {version}, this resynth reads version "
                                f"{DETECTOR_VERSION}; refit it (resynth fit)")
        raise DetectorError(f"{where}: detector format version {version!r} is not one this resynth reads "
                            f"({DETECTOR_VERSION})")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise DetectorError(f"{where}: unknown detector kind {kind!r} (one of {', '.join(KINDS)})")
    missing = [k for k in REQUIRED[kind] if k not in spec]
    if missing:
        raise DetectorError(f"{where}: a {kind} detector file lacks {', '.join(missing)}")
    declared, found = spec.get("contents"), contents_of(spec)
    if declared != found:
        raise DetectorError(f"{where}: declares contents {declared} but holds {found}")
    return spec


def read_spec(path: str | Path) -> dict:
    """Read and validate a detector file."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise DetectorError(f"{path}: no such detector file") from exc
    except (OSError, ValueError) as exc:
        raise DetectorError(f"{path}: not a readable detector file: {exc}") from exc
    return validate(spec, str(path))


def finish(spec: dict) -> dict:
    """A spec with its header set (format, version) and its contents declared; the order of keys is kept."""
    spec = {"format": DETECTOR_FORMAT, "format_version": DETECTOR_VERSION,
            **{k: v for k, v in spec.items() if k not in ("format", "format_version", "contents")}}
    spec["contents"] = contents_of(spec)
    return validate(spec)


def write_spec(path: str | Path, spec: dict) -> dict:
    """Validate and write a detector file atomically (temporary file, then rename); returns what was written."""
    spec = finish(spec)
    atomic_write_bytes(path, json.dumps(spec, indent=1).encode())
    return spec
