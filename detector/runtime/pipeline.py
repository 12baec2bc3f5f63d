"""The scoring pipeline: image -> calibrated fake-probability with its evidence.

`Detector.load(path)` reads a detector file and everything it names once (detector/runtime/loader.py).
`score()` and `score_batch()` never mutate the models, so one Detector serves concurrent requests.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gan_inversion.perceptual import PerceptualDistance

from .. import laundering
from ..components.artifact_cnn import ArtifactCNN, artifact_logits
from ..components.attribution import (
    NONE,
    AttributionError,
    AttributionModel,
    Member,
    attribution_rows,
    member_features,
    member_invert_config,
)
from ..components.classifier import JsonClassifier
from ..components.evidence import REASON_GENERATOR, Evidence, EvidenceModel, degradation_columns
from ..components.first_stage import FirstStage
from ..components.latent_map import LatentMap, ws_code
from ..features import FeatureConfig, appearance_features, extract_features, feature_context
from ..imageio import DEFAULT_MAX_PIXELS, PreparedImage, prepare_faces, prepare_image
from ..spec import DetectorError, read_spec
from .loader import load_members, load_parts
from .pngs import heatmap_png, image_png
from .result import ScoreResult
from .verdict import STABILITY_CHECKS, UNSTABLE, VerdictPolicy

REASON_ATTRIBUTED = "reproduced best by the registered generator"


@dataclass
class _Scored:
    ev: Evidence                     # per image, from the stage that decided it
    stage1: np.ndarray               # [N] decided at stage 1
    batches: list                    # FeatureBatch of stage 1 (or the only stage), then of the refined ones
    rows: list[tuple[int, int]]      # per image: (batch, row in it)
    timings: list[dict]              # per image, ms per step
    attribution: np.ndarray | None = None  # [N, K] class probabilities (attribution detectors)


class Detector:
    def __init__(self, spec: dict, *, bundle, encoder, perceptual: PerceptualDistance, device="cpu",
                 max_pixels: int = DEFAULT_MAX_PIXELS, refine_steps: int | None = None,
                 policy: VerdictPolicy = VerdictPolicy(), cascade: bool = False,
                 artifact_net: ArtifactCNN | None = None):
        self.spec, self.policy = spec, policy
        self.bundle, self.encoder, self.perceptual = bundle, encoder, perceptual
        self.G, self.D = bundle.G_ema, bundle.D
        self.device = torch.device(device)
        self.classifier = JsonClassifier(spec["classifier"])
        self.evidence = EvidenceModel(spec["evidence"]) if "evidence" in spec["contents"] else None
        if self.evidence is not None and self.evidence.artifacts is not None and artifact_net is None:
            raise DetectorError("the detector weighs the artifact CNN, but none was given")
        self.artifact_net = artifact_net.to(device) if artifact_net is not None else None
        # the two-stage cascade, when the file has one and it is switched on
        self.first_stage = FirstStage(spec["cascade"]) if cascade and "cascade" in spec["contents"] else None
        self.latent_map = LatentMap(spec["latent_map"]) if "latent_map" in spec["contents"] else None
        # 'fake' when p_fake > threshold: the combined evidence's threshold, or the classifier's alone
        self.threshold: float = self.evidence.threshold if self.evidence else self.classifier.threshold
        self.feature_cfg = FeatureConfig.from_dict(spec["features"])
        self.fitted_refine_steps = self.feature_cfg.refine_steps
        if refine_steps is not None and refine_steps != self.fitted_refine_steps:
            self.feature_cfg = dataclasses.replace(self.feature_cfg, refine_steps=refine_steps)
        self.model_id: str = spec["model_id"]
        if self.first_stage is not None:  # scores differ from the full detector's: say so in the id
            self.model_id += spec["cascade"]["id_suffix"]
        self.max_pixels = max_pixels
        self.attribution: AttributionModel | None = None  # set by attach_attribution
        self.members: list[Member] = []
        self.primary_name: str | None = None
        dom = spec["domain"]
        self._lo = np.asarray(dom["feature_lo"], dtype=np.float64)
        self._hi = np.asarray(dom["feature_hi"], dtype=np.float64)
        self._colour_limit = float(dom["colour_limit"])
        # Perceptual heatmaps share one colour scale (comparable across images): twice the largest mean
        # perceptual distance seen in fitting.
        names = spec["classifier"]["feature_names"]
        self._perc_vmax = 2.0 * float(self._hi[names.index("perc_total")]) if len(self._hi) else None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path, *, device="cpu", perceptual: PerceptualDistance | None = None,
             max_pixels: int = DEFAULT_MAX_PIXELS, refine_steps: int | None = None,
             policy: VerdictPolicy = VerdictPolicy(), cascade: bool = False) -> Detector:
        """Load a detector file and the networks it names (detector/runtime/loader.py).

        cascade=True uses the file's cascade, when it has one: clear cases are decided on the encoder's guess; by
        default every image is refined.
        """
        path = Path(path)
        spec = read_spec(path)
        kw = dict(max_pixels=max_pixels, refine_steps=refine_steps, policy=policy)
        if spec["kind"] == "attribution":
            if cascade:
                raise DetectorError(f"{path}: an attribution detector is scored without the cascade")
            det = cls.load(path.parent / spec["attribution_of"]["file"], device=device, perceptual=perceptual, **kw)
            if det.spec["model_id"] != spec["attribution_of"]["model_id"]:
                raise DetectorError(f"{path}: fitted over detector {spec['attribution_of']['model_id']}, but "
                                    f"{spec['attribution_of']['file']} is {det.spec['model_id']}; refit the "
                                    "attribution")
            try:
                det.attach_attribution(spec, load_members(path, spec, device=device))
            except AttributionError as exc:
                raise DetectorError(f"{path}: {exc}") from exc
            return det
        p = load_parts(path, spec, device=device, perceptual=perceptual)
        return cls(spec, bundle=p.bundle, encoder=p.encoder, perceptual=p.perceptual, device=device, cascade=cascade,
                   artifact_net=p.artifact_net, **kw)

    def attach_attribution(self, spec: dict, members: list[Member]) -> None:
        """Score as the attribution detector `spec` over this (primary) detector and `members`."""
        model = AttributionModel(spec["attribution"])
        if model.classes != [NONE, spec["attribution_of"]["name"]] + [m.name for m in members]:
            raise AttributionError(f"classes {model.classes} do not match the registered generators")
        self.attribution, self.members = model, members
        self.primary_name = spec["attribution_of"]["name"]
        self.model_id, self.threshold = spec["model_id"], model.threshold

    def feature_context(self, feature_cfg: FeatureConfig | None = None) -> dict:
        """The feature cache's context for this detector's features (or for another feature config of them)."""
        return feature_context(self, feature_cfg)

    @property
    def info(self) -> dict:
        G = self.G
        return {"model_id": self.model_id, "data": self.bundle.data.get("name"), "resolution": G.img_resolution,
                "channels": G.img_channels, "perceptual": self.spec["perceptual"],
                "refine_steps": self.feature_cfg.refine_steps, "space": self.feature_cfg.space,
                "degradations": [list(d) for d in self.feature_cfg.degradations],
                "threshold": self.threshold,
                "target_fpr": (self.spec.get("evidence") or self.spec["classifier"]).get("target_fpr"),
                "evidence": list(self.evidence.names) if self.evidence else ["generator"],
                "cascade": None if self.first_stage is None else
                {"band": self.first_stage.spec["band"], "held_out": self.first_stage.spec.get("held_out")},
                "kimg": self.bundle.progress.get("kimg"), "metrics": self.spec.get("metrics", {}),
                "calibration": self.spec.get("calibration"), "framing": self.bundle.framing,
                "attribution": None if self.attribution is None else
                {"generators": self.attribution.classes[1:], "primary": self.primary_name}}

    # ------------------------------------------------------------------ scoring
    def prepare(self, data, *, source: str | None = None, max_pixels: int | None = None) -> PreparedImage:
        return prepare_image(data, channels=self.G.img_channels, resolution=self.G.img_resolution,
                             framing=self.bundle.framing, source=source, max_pixels=max_pixels or self.max_pixels)

    def prepare_faces(self, data, *, source: str | None = None, max_pixels: int | None = None
                      ) -> list[PreparedImage]:
        """Every face of an image as a model input (audits' --crop faces), framed as the bundle says."""
        return prepare_faces(data, channels=self.G.img_channels, resolution=self.G.img_resolution,
                             framing=self.bundle.framing, source=source, max_pixels=max_pixels or self.max_pixels)

    @property
    def is_face_model(self) -> bool:
        return self.bundle.framing.get("kind") == "face"

    def verdicts(self, X: np.ndarray, names: list[str], p: np.ndarray, *, X1: np.ndarray | None = None,
                 decided: np.ndarray | None = None) -> list[str]:
        """Verdicts of feature rows [N, F] with their probabilities (the input decoding's own warnings aside);
        with a cascade, the rows decided at stage 1 are judged on their stage-1 rows X1."""
        out = []
        for i, pi in enumerate(p):
            first = decided is not None and bool(decided[i])
            x = X1[i] if first else X[i]
            out.append(self.policy.verdict(float(pi), self.threshold,
                                           self._warnings(None, x, names, first_stage=first)))
        return out

    def artifact_scores(self, images: torch.Tensor) -> np.ndarray | None:
        """[N] the artifact CNN's logits of images [N, C, H, W] (None: the detector does not weigh it)."""
        return None if self.artifact_net is None else artifact_logits(self.artifact_net, images.to(self.device))

    def probabilities(self, X: np.ndarray, images: torch.Tensor | None, *, appearance: np.ndarray | None = None,
                      artifacts: np.ndarray | None = None) -> Evidence:
        """Calibrated p_fake of full inversion feature rows [N, F] and their images [N, C, H, W] (the appearance
        features and the artifact CNN's logits are computed from the images unless given); a detector without a
        real-photo model uses its classifier alone. The full detector only: `cascade_probabilities` is what
        serving computes."""
        if self.evidence is None:
            p = self.classifier.predict_proba(X)
            nan = np.full(len(p), np.nan)
            return Evidence(p_fake=p, q={"generator": nan})
        A = appearance if appearance is not None else appearance_features(self.perceptual, images.to(self.device))
        if artifacts is None and images is not None:
            artifacts = self.artifact_scores(images)  # None for a detector without the artifact CNN
        return self.evidence.evaluate(self.classifier.decision(X), A, degradation_columns(X, self.classifier),
                                      artifacts=artifacts, threshold=self._reason_threshold())

    def first_stage_probabilities(self, X1: np.ndarray, appearance: np.ndarray) -> Evidence:
        fs = self.first_stage
        return fs.evidence.evaluate(fs.classifier.decision(X1), appearance, degradation_columns(X1, fs.classifier),
                                    threshold=self._reason_threshold())

    def _reason_threshold(self) -> float | None:
        """Reasons are named at the threshold in use; an attribution detector's at its primary's own."""
        return None if self.attribution is not None else self.threshold

    def cascade_probabilities(self, X1: np.ndarray, X: np.ndarray, images: torch.Tensor | None, *,
                              appearance: np.ndarray | None = None, artifacts: np.ndarray | None = None
                              ) -> tuple[np.ndarray, np.ndarray]:
        """(p_fake [N], decided at stage 1 [N]) as served, from both stages' feature rows (benchmarks); the
        appearance features and the artifact CNN's logits are computed from the images unless given."""
        A = appearance if appearance is not None else appearance_features(self.perceptual, images.to(self.device))
        p2 = self.probabilities(X, images, appearance=A, artifacts=artifacts).p_fake
        if self.first_stage is None:
            return p2, np.zeros(len(p2), dtype=bool)
        p1 = self.first_stage_probabilities(X1, A).p_fake
        decided = self.first_stage.decided(p1, self.threshold)
        return np.where(decided, p1, p2), decided

    def reasons(self, ev: Evidence, i: int) -> list[str]:
        if self.evidence is None:
            return [REASON_GENERATOR] if ev.p_fake[i] > self.threshold and self.attribution is None else []
        return ev.reasons(i)  # an attribution detector's: the primary's evidence at the primary's own threshold

    def attribute(self, X: np.ndarray, names: list[str], ev: Evidence, images: torch.Tensor
                  ) -> tuple[np.ndarray, float]:
        """Class probabilities [N, K] of images whose primary features are X (attribution detectors), and the ms
        per image the members' inversions took."""
        cfg = member_invert_config(self.feature_cfg)
        inv = [member_features(m, images, perceptual=self.perceptual, cfg=cfg) for m in self.members]
        R = attribution_rows(X, names, self.classifier.decision(X), ev.photo_score, [m.features for m in inv])
        return self.attribution.probabilities(R), sum(m.ms_per_image for m in inv)

    def _warnings(self, prep: PreparedImage | None, feats: np.ndarray, names: list[str], *,
                  first_stage: bool = False) -> list[str]:
        out = []
        if not first_stage and self.feature_cfg.refine_steps != self.fitted_refine_steps:
            out.append(f"refinement steps ({self.feature_cfg.refine_steps}) differ from those the classifier was "
                       f"fitted with ({self.fitted_refine_steps}): the probability is less well calibrated")
        if prep is not None:
            if self.G.img_channels == 1 and prep.colourfulness > self._colour_limit:
                out.append(f"out of domain: a colour image (colourfulness {prep.colourfulness:.1f}) given to a "
                           "grayscale model; it was converted to gray and the probability is unreliable")
            out += prep.notes
        dlo, dhi = (self.first_stage.feature_lo, self.first_stage.feature_hi) if first_stage else (self._lo, self._hi)
        if len(dlo):
            span = np.maximum(dhi - dlo, 1e-12)
            outside = [n for n, v, lo, hi, s in zip(names, feats, dlo, dhi, span, strict=True)
                       if v < lo - 0.5 * s or v > hi + 0.5 * s]
            if outside:
                out.append("out of domain: features far outside the range seen in fitting ("
                           + ", ".join(outside[:5]) + ("…" if len(outside) > 5 else "") + ")")
        return out

    def _score(self, images: torch.Tensor, *, explain: bool = False) -> _Scored:
        """Features and evidence of images [N, C, H, W], through the cascade when there is one."""
        N = images.shape[0]
        images = images.to(self.device)
        t0 = time.perf_counter()
        A = appearance_features(self.perceptual, images) if self.evidence is not None else None
        L = self.artifact_scores(images)  # [N] or None
        pixel_ms = {"appearance": 1000 * (time.perf_counter() - t0) / max(N, 1)} if A is not None else {}
        fs = self.first_stage
        if fs is None:
            fb = extract_features(self.G, self.D, self.encoder, self.perceptual, images, cfg=self.feature_cfg,
                                  explain=explain)
            self._check_names(fb.names, self.classifier)
            t0 = time.perf_counter()
            ev = self.probabilities(fb.values.numpy(), images, appearance=A, artifacts=L)
            ms = 1000 * (time.perf_counter() - t0) / max(N, 1)
            timings, P = {**pixel_ms, **fb.timings_ms, "classify": ms}, None
            if self.attribution is not None:
                P, member_ms = self.attribute(fb.values.numpy(), fb.names, ev, images)
                ev.p_fake = self.attribution.p_fake(P)
                timings["attribution"] = member_ms
            return _Scored(ev=ev, stage1=np.zeros(N, dtype=bool), batches=[fb], rows=[(0, i) for i in range(N)],
                           timings=[timings] * N, attribution=P)
        fb1 = extract_features(self.G, self.D, self.encoder, self.perceptual, images, cfg=fs.feature_cfg,
                               explain=explain)
        self._check_names(fb1.names, fs.classifier)
        t0 = time.perf_counter()
        ev = self.first_stage_probabilities(fb1.values.numpy(), A)
        ms1 = 1000 * (time.perf_counter() - t0) / max(N, 1)
        decided = fs.decided(ev.p_fake, self.threshold)
        rest = np.flatnonzero(~decided)
        t1 = {f"first_{k}": v for k, v in fb1.timings_ms.items()}
        t1["first_classify"] = ms1
        t1.update(pixel_ms)
        timings = [dict(t1) for _ in range(N)]
        batches, rows = [fb1], [(0, i) for i in range(N)]
        if len(rest):
            fb = extract_features(self.G, self.D, self.encoder, self.perceptual, images[rest], cfg=self.feature_cfg,
                                  explain=explain)
            self._check_names(fb.names, self.classifier)
            t0 = time.perf_counter()
            ev2 = self.probabilities(fb.values.numpy(), None, appearance=A[rest],
                                     artifacts=None if L is None else L[rest])
            ms2 = 1000 * (time.perf_counter() - t0) / len(rest)
            batches.append(fb)
            ev.update(rest, ev2)
            for k, i in enumerate(rest):
                rows[i] = (1, k)
                timings[i].update({**fb.timings_ms, "classify": ms2})
        return _Scored(ev=ev, stage1=decided, batches=batches, rows=rows, timings=timings)

    @staticmethod
    def _check_names(names: list[str], classifier: JsonClassifier) -> None:
        if names != classifier.feature_names:
            raise DetectorError("feature names differ from those the classifier was fitted on")

    def score_tensors(self, images: torch.Tensor, *, preps: list[PreparedImage | None] | None = None,
                      sources: list[str] | None = None, explain: bool = False,
                      decode_ms: list[float] | None = None) -> list[ScoreResult]:
        """images [N, C, H, W] in [-1, 1] (already the model's input)."""
        N = images.shape[0]
        sc = self._score(images, explain=explain)
        p = sc.ev.p_fake
        flips: list[list[str]] = [[] for _ in range(N)]
        for kind, strength in STABILITY_CHECKS[: self.policy.stability_checks]:
            moved = laundering.apply(images.cpu(), kind, strength).to(self.device)
            pk = self._score(moved).ev.p_fake
            for i in np.flatnonzero((pk > self.threshold) != (p > self.threshold)):
                flips[i].append(f"{kind} {strength:g}")
        results = []
        for i in range(N):
            b, k = sc.rows[i]
            fb = sc.batches[b]
            x = fb.values[k].numpy()
            timings = {"decode": (decode_ms or [0.0] * N)[i], **sc.timings[i]}
            timings = {key: round(v, 2) for key, v in timings.items()}
            timings["total"] = round(sum(timings.values()), 2)
            prep = preps[i] if preps else None
            first = bool(sc.stage1[i])
            warnings = self._warnings(prep, x, fb.names, first_stage=first)
            if flips[i]:
                warnings.append(f"{UNSTABLE}: the verdict flips under mild re-degradation ({', '.join(flips[i])})")
            r = ScoreResult(
                source=(sources[i] if sources else f"image{i}"), p_fake=float(p[i]),
                verdict=self.policy.verdict(float(p[i]), self.threshold, warnings),
                threshold=self.threshold, reasons=self.reasons(sc.ev, i),
                tail_probabilities=None if self.evidence is None else sc.ev.tail_probabilities(i),
                model_id=self.model_id, features=dict(zip(fb.names, map(float, x), strict=True)),
                timings_ms=timings, warnings=warnings,
                degradation=fb.degradations[k] if fb.degradations else None,
                stage=None if self.first_stage is None else ("first" if first else "refined"))
            if sc.attribution is not None:
                r.attribution = self.attribution.as_dicts(sc.attribution[i : i + 1])[0]
                r.attributed_to = self.attribution.classes[int(sc.attribution[i].argmax())]
                if r.verdict == "fake" and r.attributed_to != NONE:
                    r.reasons.insert(0, f"{REASON_ATTRIBUTED} '{r.attributed_to}'")
            if prep is not None and prep.face is not None:
                r.face = dict(prep.face)
            if self.latent_map is not None and fb.ws is not None:
                r.latent_2d = [round(float(v), 4) for v in self.latent_map.project(ws_code(fb.ws[k:k + 1]))[0]]
            if explain:
                r.evidence = {"input": image_png(images[i]), "reconstruction": image_png(fb.reconstructions[k]),
                              "pixel_heatmap": heatmap_png(fb.pixel_map[k], vmax=1.0),
                              "perceptual_heatmap": heatmap_png(fb.perceptual_map[k], vmax=self._perc_vmax)}
                if r.latent_2d is not None:
                    r.evidence["latent_2d"] = self.latent_map.png(np.asarray(r.latent_2d))
            results.append(r)
        return results

    def score_batch(self, inputs: list, *, explain: bool = False, sources: list[str] | None = None,
                    max_pixels: int | None = None) -> list[ScoreResult]:
        """Decode and score several images (paths or bytes) together. Decoding errors raise ImageDecodeError."""
        preps, decode_ms = [], []
        for i, data in enumerate(inputs):
            t0 = time.perf_counter()
            preps.append(self.prepare(data, source=sources[i] if sources else None, max_pixels=max_pixels))
            decode_ms.append(1000 * (time.perf_counter() - t0))
        images = torch.stack([pr.tensor for pr in preps])
        return self.score_tensors(images, preps=preps, sources=[pr.source for pr in preps], explain=explain,
                                  decode_ms=decode_ms)

    def score(self, data, *, explain: bool = False, source: str | None = None,
              max_pixels: int | None = None) -> ScoreResult:
        """One image (path, bytes): p_fake, verdict, threshold, features, timings, model id, warnings."""
        return self.score_batch([data], explain=explain, sources=[source] if source else None,
                                max_pixels=max_pixels)[0]
