"""An attribution detector: a primary Detector and further registered generators, and which of them explains an
image best (or none). Its p_fake is 1 - P(none) at its own threshold; the primary's evidence and reasons (at the
primary's own threshold) come along, and a flagged image's reasons start with the generator that reproduced it
best."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..components import attribution as registry
from ..components.evidence import Evidence
from ..spec import DetectorError, base_model_id, read_spec
from .loader import load_members, load_parts
from .pipeline import WRAPPERS, Detector, Scored
from .result import ScoreResult

REASON_ATTRIBUTED = "reproduced best by the registered generator"


class AttributionDetector(Detector):
    """The primary detector's networks and evidence, the members, and the attribution model over them."""

    def __init__(self, primary_spec: dict, spec: dict, members: list[registry.Member], **kwargs):
        super().__init__(primary_spec, **kwargs)
        model = registry.AttributionModel(spec["attribution"])
        if model.classes != [registry.NONE, spec["attribution_of"]["name"]] + [m.name for m in members]:
            raise registry.AttributionError(f"classes {model.classes} do not match the registered generators")
        self.attribution, self.members = model, members
        self.primary_name = spec["attribution_of"]["name"]
        self.primary_threshold = self.threshold
        self.attribution_spec = spec
        self.model_id, self.threshold = spec["model_id"], model.threshold
        self.operating = None  # it decides at its attribution model's threshold, not at the primary's operating point

    @classmethod
    def from_spec(cls, path: Path, spec: dict, *, device="cpu", perceptual=None, onnx=None,
                  **kwargs) -> AttributionDetector:
        """The attribution file `spec` at `path` over the primary detector file it names (its networks loaded once,
        here; with `onnx`, the primary's on ONNX Runtime); kwargs as Detector's (max_pixels, refine_steps,
        policy)."""
        primary_path = path.parent / spec["attribution_of"]["file"]
        primary = read_spec(primary_path)
        if base_model_id(primary["model_id"]) != base_model_id(spec["attribution_of"]["model_id"]):
            raise DetectorError(f"{path}: fitted over detector {spec['attribution_of']['model_id']}, but "
                                f"{spec['attribution_of']['file']} is {primary['model_id']}; refit the attribution")
        parts = load_parts(primary_path, primary, device=device, perceptual=perceptual, onnx=onnx)
        try:
            return cls(primary, spec, load_members(path, spec, device=device), bundle=parts.bundle,
                       encoder=parts.encoder, perceptual=parts.perceptual, device=device,
                       artifact_net=parts.artifact_net, **kwargs)
        except registry.AttributionError as exc:
            raise DetectorError(f"{path}: {exc}") from exc

    @property
    def info(self) -> dict:
        return {**super().info, "attribution": {"generators": self.attribution.classes[1:],
                                                "primary": self.primary_name}}

    def reason_threshold(self, X: np.ndarray | None = None, images: torch.Tensor | None = None) -> float | None:
        return None  # the primary's evidence names its reasons at the primary's own threshold

    def reasons(self, ev: Evidence, i: int) -> list[str]:
        return [] if self.evidence is None else ev.reasons(i)

    def attribute(self, X: np.ndarray, names: list[str], ev: Evidence, images: torch.Tensor
                  ) -> tuple[np.ndarray, float]:
        """Class probabilities [N, K] of images whose primary features are X, and the ms per image the members'
        inversions took."""
        cfg = registry.member_invert_config(self.feature_cfg)
        inv = [registry.member_features(m, images, perceptual=self.perceptual, cfg=cfg) for m in self.members]
        R = registry.attribution_rows(X, names, self.classifier.decision(X), ev.photo_score, [m.features for m in inv])
        return self.attribution.probabilities(R), sum(m.ms_per_image for m in inv)

    def _score(self, images: torch.Tensor, *, explain: bool = False) -> Scored:
        sc = super()._score(images, explain=explain)
        fb = sc.batches[0]
        P, member_ms = self.attribute(fb.values.numpy(), fb.names, sc.ev, images.to(self.device))
        sc.ev.p_fake = self.attribution.p_fake(P)
        sc.timings = [{**sc.timings[0], "attribution": member_ms}] * len(P)
        sc.attribution = P
        return sc

    def _result(self, sc: Scored, i: int, **kwargs) -> ScoreResult:
        r = super()._result(sc, i, **kwargs)
        r.attribution = self.attribution.as_dicts(sc.attribution[i: i + 1])[0]
        r.attributed_to = self.attribution.classes[int(sc.attribution[i].argmax())]
        if r.verdict == "fake" and r.attributed_to != registry.NONE:
            r.reasons.insert(0, f"{REASON_ATTRIBUTED} '{r.attributed_to}'")
        return r


WRAPPERS["attribution"] = AttributionDetector
