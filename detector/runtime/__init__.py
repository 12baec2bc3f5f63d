"""Serving a detector file: the loader, the scoring pipeline, the verdict policy, the result and its pictures.
Nothing here fits; detector/fitting/ writes the files this reads."""

from ..spec import DetectorError
from .attributed import AttributionDetector
from .cascade import CascadeDetector
from .pipeline import RUNTIMES, Detector
from .pngs import evidence_to_files
from .result import ScoreResult
from .verdict import STABILITY_CHECKS, VerdictPolicy

__all__ = ["RUNTIMES", "STABILITY_CHECKS", "AttributionDetector", "CascadeDetector", "Detector", "DetectorError",
           "ScoreResult", "VerdictPolicy", "evidence_to_files"]
