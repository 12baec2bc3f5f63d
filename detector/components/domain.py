"""The domain check: is an input like what the detector was fitted on? Its warnings make a verdict 'uncertain'
(detector/runtime/verdict.py)."""

from __future__ import annotations

import numpy as np

OUT_OF_DOMAIN = "out of domain"


class Domain:
    """A detector's (or its first stage's) fitted feature range, from its spec's `domain`."""

    def __init__(self, spec: dict):
        self.lo = np.asarray(spec["feature_lo"], dtype=np.float64)   # [F] 0.1th percentile of the fit's rows
        self.hi = np.asarray(spec["feature_hi"], dtype=np.float64)   # [F] 99.9th percentile
        self.colour_limit = float(spec.get("colour_limit", 8.0))     # colourfulness a grayscale model accepts

    def colour_warnings(self, colourfulness: float, channels: int) -> list[str]:
        """A colour image given to a grayscale model."""
        if channels != 1 or colourfulness <= self.colour_limit:
            return []
        return [f"{OUT_OF_DOMAIN}: a colour image (colourfulness {colourfulness:.1f}) given to a grayscale model; "
                "it was converted to gray and the probability is unreliable"]

    def feature_warnings(self, feats: np.ndarray, names: list[str]) -> list[str]:
        """Features of one row [F] far (half the fitted span) outside the fitted range."""
        if not len(self.lo):
            return []
        span = np.maximum(self.hi - self.lo, 1e-12)
        outside = [n for n, v, lo, hi, s in zip(names, feats, self.lo, self.hi, span, strict=True)
                   if v < lo - 0.5 * s or v > hi + 0.5 * s]
        if not outside:
            return []
        return [f"{OUT_OF_DOMAIN}: features far outside the range seen in fitting ("
                + ", ".join(outside[:5]) + ("…" if len(outside) > 5 else "") + ")"]
