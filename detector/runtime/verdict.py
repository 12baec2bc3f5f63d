"""The verdict policy: when a probability becomes 'fake', 'real' or 'uncertain', and the warnings behind it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..components.domain import OUT_OF_DOMAIN


@dataclass(frozen=True)
class VerdictPolicy:
    """When the detector says 'uncertain' instead of 'fake' or 'real'. An abstention never turns a real photo
    into 'fake': the false-positive rate of the decided verdicts stays at or below the threshold's."""

    out_of_domain: bool = True   # inputs outside the fitted domain (colour given to a grayscale model, features
                                 # far outside the fitted range) are 'uncertain'
    margin: float = 0.0          # |logit(p_fake) - logit(threshold)| below this is 'uncertain' (0: off)
    stability_checks: int = 0    # score this many mild re-degradations too (STABILITY_CHECKS, each one more
                                 # inversion); a verdict that flips under any of them is 'uncertain'

    def verdict(self, p: float, threshold: float, warnings: list[str], *, doubts: list[str] = ()) -> str:
        """'fake' over the threshold, 'real' below it, 'uncertain' where a warning or margin says so, or, below
        the threshold, where the operating point has doubts (checks the image fails against photos)."""
        if self.out_of_domain and any(w.startswith(OUT_OF_DOMAIN) for w in warnings):
            return "uncertain"
        if self.stability_checks and any(w.startswith(UNSTABLE) for w in warnings):
            return "uncertain"
        if self.margin > 0 and abs(_logit(p) - _logit(threshold)) < self.margin:
            return "uncertain"
        if p > threshold:
            return "fake"
        return "uncertain" if doubts else "real"


# Mild re-degradations that should not change a verdict: re-encoding, a slight blur, a slight resize.
STABILITY_CHECKS = (("jpeg", 90), ("blur", 0.5), ("resize", 0.9))
UNSTABLE = "unstable"


def _logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return float(np.log(p / (1 - p)))
