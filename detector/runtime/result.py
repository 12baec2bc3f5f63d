"""The result of scoring one image, as the CLI, the service and audits report it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class ScoreResult:
    source: str
    p_fake: float
    verdict: Literal["fake", "real", "uncertain"]  # at the stored threshold, or 'uncertain' (VerdictPolicy)
    threshold: float
    model_id: str
    features: dict[str, float]
    timings_ms: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    evidence: dict[str, bytes] = field(default_factory=dict)  # PNG bytes, on request
    degradation: dict[str, float] | None = None  # estimated (degradation-aware detectors): blur_sigma, scale
    reasons: list[str] = field(default_factory=list)  # the evidence that drove a verdict over the threshold
    doubts: list[str] = field(default_factory=list)  # an 'uncertain' verdict's: the checks against photos the
                                                     # image failed (detector/components/operating.py)
    tail_probabilities: dict[str, float] | None = None  # share of reference photos at least as extreme, per
                                                         # evidence ('generator', 'photos', 'probe', 'artifacts';
                                                         # detector/components/evidence.py)
    stage: Literal["first", "refined"] | None = None  # with a cascade: 'first' (decided on the encoder's guess)
                                                      # or 'refined'
    attribution: dict[str, float] | None = None  # attribution detectors: probability per registered generator
                                                  # and 'none' (detector/components/attribution.py)
    attributed_to: str | None = None  # the most probable of them
    latent_2d: list[float] | None = None  # the image's code on the detector's 2D latent map
    face: dict | None = None  # face models: the face found and how it was aligned (box, angle, faces_found)

    def to_dict(self, *, include_features: bool = True) -> dict:
        d = {"source": self.source, "p_fake": self.p_fake, "verdict": self.verdict, "threshold": self.threshold,
             "model_id": self.model_id, "timings_ms": self.timings_ms, "warnings": list(self.warnings)}
        d["reasons"] = list(self.reasons)
        d["doubts"] = list(self.doubts)
        if self.tail_probabilities is not None:
            d["tail_probabilities"] = dict(self.tail_probabilities)
        if self.degradation is not None:
            d["degradation"] = dict(self.degradation)
        if self.stage is not None:
            d["stage"] = self.stage
        if self.latent_2d is not None:
            d["latent_2d"] = list(self.latent_2d)
        if self.face is not None:
            d["face"] = dict(self.face)
        if self.attribution is not None:
            d["attribution"] = dict(self.attribution)
            d["attributed_to"] = self.attributed_to
        if include_features:
            d["features"] = self.features
        return d
