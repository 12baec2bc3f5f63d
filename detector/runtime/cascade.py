"""A detector scored through its cascade: the encoder's guess decides the clear cases, the others are refined
and scored by the detector itself. Opt-in (`Detector.load(..., cascade=True)`, `--cascade`, RESYNTH_CASCADE=1):
faster, and it ranks worse; its results carry the stage that decided and a model id with the cascade's suffix."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..components.domain import Domain
from ..components.evidence import Evidence, degradation_columns
from ..components.first_stage import FirstStage
from ..features import appearance_features
from .pipeline import WRAPPERS, Detector, Scored
from .result import ScoreResult


class CascadeDetector(Detector):
    """A Detector with its file's first stage in front."""

    def __init__(self, spec: dict, **kwargs):
        super().__init__(spec, **kwargs)
        self.first_stage = FirstStage(spec["cascade"])
        self.model_id = spec["model_id"] + spec["cascade"]["id_suffix"]  # its scores differ from the full one's

    @property
    def info(self) -> dict:
        fs = self.first_stage
        return {**super().info, "cascade": {"band": fs.spec["band"], "held_out": fs.spec.get("held_out")}}

    def domain_of(self, first_stage: bool) -> Domain:
        return self.first_stage.domain if first_stage else self.domain

    def first_stage_probabilities(self, X1: np.ndarray, appearance: np.ndarray) -> Evidence:
        fs = self.first_stage
        return fs.evidence.evaluate(fs.classifier.decision(X1), appearance, degradation_columns(X1, fs.classifier),
                                    threshold=self.reason_threshold(X1))

    def cascade_probabilities(self, X1: np.ndarray, X: np.ndarray, images: torch.Tensor | None, *,
                              appearance: np.ndarray | None = None, artifacts: np.ndarray | None = None
                              ) -> tuple[np.ndarray, np.ndarray]:
        """(p_fake [N], decided at the first stage [N]) as served, from both stages' feature rows (benchmarks)."""
        A = appearance if appearance is not None else appearance_features(self.perceptual, images.to(self.device))
        p2 = self.probabilities(X, images, appearance=A, artifacts=artifacts).p_fake
        p1 = self.first_stage_probabilities(X1, A).p_fake
        decided = self.first_stage.decided(p1, self.threshold)
        return np.where(decided, p1, p2), decided

    def _score(self, images: torch.Tensor, *, explain: bool = False) -> Scored:
        """Stage 1 for every image; the full detector for those it leaves undecided."""
        N, fs = images.shape[0], self.first_stage
        images = images.to(self.device)
        A, L, pixel_ms = self.pixel_evidence(images)
        fb1 = self.features(images, fs.feature_cfg, fs.classifier, explain=explain)
        t0 = time_ms()
        ev = self.first_stage_probabilities(fb1.values.numpy(), A)
        t1 = {f"first_{k}": v for k, v in fb1.timings_ms.items()}
        t1["first_classify"] = (time_ms() - t0) / max(N, 1)
        t1.update(pixel_ms)
        decided = fs.decided(ev.p_fake, self.threshold)
        rest = np.flatnonzero(~decided)
        timings = [dict(t1) for _ in range(N)]
        batches, rows = [fb1], [(0, i) for i in range(N)]
        if len(rest):
            fb = self.features(images[rest], self.feature_cfg, self.classifier, explain=explain)
            t0 = time_ms()
            ev.update(rest, self.probabilities(fb.values.numpy(), None, appearance=A[rest],
                                               artifacts=None if L is None else L[rest]))
            ms2 = (time_ms() - t0) / len(rest)
            batches.append(fb)
            for k, i in enumerate(rest):
                rows[i] = (1, k)
                timings[i].update({**fb.timings_ms, "classify": ms2})
        if self.evidence is not None:  # an evidence the first stage does not weigh: NaN (not weighed) for its
            for e in self.evidence.names:  # images, as Evidence.update leaves it in a mixed batch
                ev.scores.setdefault(e, np.full(N, np.nan))
        X = np.stack([batches[b].values[k].numpy() for b, k in rows])  # each image's row, from the stage that
        judgement = self.judge(ev, X, fb1.names, images) if len(batches) == 1 or batches[1].names == fb1.names \
            else None                                             # decided it
        return Scored(ev=ev, stage1=decided, batches=batches, rows=rows, timings=timings, judgement=judgement)

    def _result(self, sc: Scored, i: int, **kwargs) -> ScoreResult:
        r = super()._result(sc, i, **kwargs)
        r.stage = "first" if sc.stage1[i] else "refined"
        return r


def time_ms() -> float:
    return 1000 * time.perf_counter()


WRAPPERS["cascade"] = CascadeDetector
