"""The cascade's first stage (serving side): a verdict on the encoder's guess alone, for the clear cases.

Stage 1 computes the features after the encoder's guess (no refinement step), scores them with its own classifier
and the detector's photo model, and decides an image when its probability lies outside the band [lo, hi]; the
other images are refined and scored by the full detector. detector/fitting/cascade.py fits it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..features import FeatureConfig
from .classifier import JsonClassifier
from .domain import Domain
from .evidence import EvidenceModel


def first_stage_config(cfg: FeatureConfig) -> FeatureConfig:
    """The full detector's feature config with no refinement step (the encoder's guess only)."""
    return dataclasses.replace(cfg, refine_steps=0, search_steps=None)


class FirstStage:
    """Serving side of a cascade spec (a detector file's "cascade")."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.feature_cfg = FeatureConfig.from_dict(spec["features"])
        self.classifier = JsonClassifier(spec["classifier"])
        self.evidence = EvidenceModel(spec["evidence"])
        self.lo, self.hi = float(spec["band"]["lo"]), float(spec["band"]["hi"])
        self.domain = Domain(spec["domain"])

    def decided(self, p1: np.ndarray, threshold: float) -> np.ndarray:
        """Which images stage 1 decides (the band always contains the threshold in use)."""
        lo, hi = min(self.lo, threshold), max(self.hi, threshold)
        return (p1 < lo) | (p1 > hi)
