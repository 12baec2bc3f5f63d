"""The scoring pipeline of a single detector: image -> calibrated fake-probability with its evidence.

`Detector.load(path)` reads a detector file and everything it names once (detector/runtime/loader.py) and
returns a `Detector`, or one of the detectors that wrap it: `CascadeDetector` (detector/runtime/cascade.py) and
`AttributionDetector` (detector/runtime/attributed.py). Scoring never mutates the models, so one detector
serves concurrent requests.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gan_inversion.ort import OrtConfig, OrtPerceptual
from gan_inversion.ort import available as ort_available
from gan_inversion.perceptual import PerceptualDistance

from .. import laundering
from ..components.artifact_cnn import ArtifactCNN, artifact_logits
from ..components.classifier import JsonClassifier
from ..components.domain import Domain
from ..components.evidence import REASON_GENERATOR, Evidence, EvidenceModel, degradation_columns
from ..components.latent_map import LatentMap, ws_code
from ..components.operating import Judgement, OperatingPoint, check_scores, presentation_stats
from ..features import FeatureConfig, appearance_features, extract_features, feature_context
from ..imageio import DEFAULT_MAX_PIXELS, PreparedImage, prepare_faces, prepare_image
from ..spec import DetectorError, read_spec
from .loader import load_parts
from .pngs import heatmap_png, image_png
from .result import ScoreResult
from .verdict import STABILITY_CHECKS, UNSTABLE, VerdictPolicy

RUNTIMES = ("torch", "onnx", "auto")


def uses_onnx(runtime: str, spec: dict, *, device="cpu", refine_steps: int | None = None) -> bool:
    """Whether a detector file is scored with ONNX Runtime under `runtime` (Detector.load). 'auto' picks it for a
    detector without refinement steps on the CPU, where every network call is forward-only: measured 3x faster at
    batch 1 for the fast detector, while with 25 refinement steps (torch's gradients) it gained nothing
    (benchmarks/RESULTS.md 'speed')."""
    if runtime not in RUNTIMES:
        raise DetectorError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime != "auto":
        return runtime == "onnx"
    if spec["kind"] == "attribution" or torch.device(device).type != "cpu" or not ort_available():
        return False
    steps = refine_steps if refine_steps is not None else spec["features"]["refine_steps"]
    return steps == 0


# The detectors that wrap a Detector, by what asks for them: "cascade" and "attribution" (registered by their
# modules, detector/runtime/cascade.py and attributed.py, which the package imports).
WRAPPERS: dict[str, type] = {}


@dataclass
class Scored:
    """What scoring a batch produced, before it becomes results."""

    ev: Evidence                     # per image, from the stage that decided it
    stage1: np.ndarray               # [N] decided at the cascade's first stage (all False without one)
    batches: list                    # FeatureBatch of each stage that ran
    rows: list[tuple[int, int]]      # per image: (batch, row in it)
    timings: list[dict]              # per image, ms per step
    attribution: np.ndarray | None = None  # [N, K] class probabilities (attribution detectors)
    judgement: Judgement | None = None     # the operating point's thresholds and doubts (detectors with one)


class Detector:
    """A detector for one generator: every image refined, scored by the file's classifier and evidences."""

    first_stage = None      # a CascadeDetector's first stage
    attribution = None      # an AttributionDetector's model
    members: list = []      # an AttributionDetector's other registered generators

    def __init__(self, spec: dict, *, bundle, encoder, perceptual: PerceptualDistance, device="cpu",
                 max_pixels: int = DEFAULT_MAX_PIXELS, refine_steps: int | None = None,
                 policy: VerdictPolicy = VerdictPolicy(), artifact_net: ArtifactCNN | None = None):
        self.spec, self.policy = spec, policy
        self.bundle, self.encoder, self.perceptual = bundle, encoder, perceptual
        self.G, self.D = bundle.G_ema, bundle.D
        self.device = torch.device(device)
        self.classifier = JsonClassifier(spec["classifier"])
        self.evidence = EvidenceModel(spec["evidence"]) if "evidence" in spec["contents"] else None
        if self.evidence is not None and self.evidence.artifacts is not None and artifact_net is None:
            raise DetectorError("the detector weighs the artifact CNN, but none was given")
        self.artifact_net = artifact_net.to(device) if artifact_net is not None else None
        self.latent_map = LatentMap(spec["latent_map"]) if "latent_map" in spec["contents"] else None
        # the operating point (detector/components/operating.py): a fake threshold per degradation stratum and the
        # uncertain band; without one, 'fake' when p_fake > the combined evidence's threshold (or the classifier's)
        self.operating = OperatingPoint(spec["operating"]) if "operating" in spec["contents"] else None
        self.threshold: float = (self.operating.headline_threshold if self.operating else
                                 self.evidence.threshold if self.evidence else self.classifier.threshold)
        self.feature_cfg = FeatureConfig.from_dict(spec["features"])
        self.fitted_refine_steps = self.feature_cfg.refine_steps
        if refine_steps is not None and refine_steps != self.fitted_refine_steps:
            self.feature_cfg = dataclasses.replace(self.feature_cfg, refine_steps=refine_steps)
        self.model_id: str = spec["model_id"]
        self.max_pixels = max_pixels
        self.domain = Domain(spec["domain"])
        # Perceptual heatmaps share one colour scale (comparable across images): twice the largest mean
        # perceptual distance seen in fitting.
        names = spec["classifier"]["feature_names"]
        self._perc_vmax = 2.0 * float(self.domain.hi[names.index("perc_total")]) if len(self.domain.hi) else None

    @classmethod
    def load(cls, path: str | Path, *, device="cpu", perceptual: PerceptualDistance | None = None,
             max_pixels: int = DEFAULT_MAX_PIXELS, refine_steps: int | None = None,
             policy: VerdictPolicy = VerdictPolicy(), cascade: bool = False,
             runtime: str = "torch", onnx: OrtConfig | None = None) -> Detector:
        """Load a detector file and the networks it names: a Detector, or the detector that wraps one
        (WRAPPERS): an AttributionDetector for an attribution file, a CascadeDetector with cascade=True for a file
        that has a cascade (clear cases decided on the encoder's guess; by default every image is refined).
        runtime: where the network calls that need no gradient run (RUNTIMES): 'torch' (the reference), 'onnx'
        (ONNX Runtime with the settings `onnx`, default OrtConfig(): gan_inversion/ort.py), or 'auto': ONNX
        Runtime for a detector that runs no refinement step on the CPU, torch otherwise."""
        path = Path(path)
        spec = read_spec(path)
        onnx = (onnx or OrtConfig()) if uses_onnx(runtime, spec, device=device, refine_steps=refine_steps) else None
        kw = dict(device=device, perceptual=perceptual, max_pixels=max_pixels, refine_steps=refine_steps,
                  policy=policy)
        if spec["kind"] == "attribution":
            if cascade:
                raise DetectorError(f"{path}: an attribution detector is scored without the cascade")
            return WRAPPERS["attribution"].from_spec(path, spec, onnx=onnx, **kw)
        parts = load_parts(path, spec, device=device, perceptual=perceptual, onnx=onnx)
        klass = WRAPPERS["cascade"] if cascade and "cascade" in spec["contents"] else Detector
        return klass(spec, bundle=parts.bundle, encoder=parts.encoder, perceptual=parts.perceptual,
                     artifact_net=parts.artifact_net, **{k: v for k, v in kw.items() if k != "perceptual"})

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
                "target_fpr": (self.spec["operating"] if self.operating else self.spec["evidence"] if self.evidence
                               else self.spec["classifier"])["target_fpr"],
                "operating": None if self.operating is None else {
                    "thresholds": {k: v["threshold"] for k, v in self.operating.per_stratum.items()},
                    "strata": self.operating.strata, "uncertain_rate": self.operating.uncertain_rate,
                    "checks": self.operating.checks},
                "evidence": list(self.evidence.names) if self.evidence else ["generator"], "cascade": None,
                "kimg": self.bundle.progress.get("kimg"), "metrics": self.spec.get("metrics", {}),
                "calibration": self.spec.get("calibration"), "framing": self.bundle.framing, "attribution": None,
                "runtime": "onnx" if isinstance(self.perceptual, OrtPerceptual) else "torch"}

    # ------------------------------------------------------------------ inputs
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

    # ------------------------------------------------------------------ probabilities
    def artifact_scores(self, images: torch.Tensor) -> np.ndarray | None:
        """[N] the artifact CNN's logits of images [N, C, H, W] (None: the detector does not weigh it)."""
        return None if self.artifact_net is None else artifact_logits(self.artifact_net, images.to(self.device))

    def probabilities(self, X: np.ndarray, images: torch.Tensor | None, *, appearance: np.ndarray | None = None,
                      artifacts: np.ndarray | None = None) -> Evidence:
        """Calibrated p_fake of full inversion feature rows [N, F] and their images [N, C, H, W] (the appearance
        features and the artifact CNN's logits are computed from the images unless given); a detector without a
        real-photo model uses its classifier alone."""
        if self.evidence is None:
            p = self.classifier.predict_proba(X)
            nan = np.full(len(p), np.nan)
            return Evidence(p_fake=p, q={"generator": nan})
        A = appearance if appearance is not None else appearance_features(self.perceptual, images.to(self.device))
        if artifacts is None and images is not None:
            artifacts = self.artifact_scores(images)  # None for a detector without the artifact CNN
        return self.evidence.evaluate(self.classifier.decision(X), A, degradation_columns(X, self.classifier),
                                      artifacts=artifacts, threshold=self.reason_threshold(X, images))

    def cascade_probabilities(self, X1: np.ndarray | None, X: np.ndarray, images: torch.Tensor | None, *,
                              appearance: np.ndarray | None = None, artifacts: np.ndarray | None = None
                              ) -> tuple[np.ndarray, np.ndarray]:
        """(p_fake [N], decided at the first stage [N]) as served, from feature rows (benchmarks); a detector
        without a cascade decides nothing early."""
        p = self.probabilities(X, images, appearance=appearance, artifacts=artifacts).p_fake
        return p, np.zeros(len(p), dtype=bool)

    def reason_threshold(self, X: np.ndarray | None = None, images: torch.Tensor | None = None):
        """The threshold the evidences' reasons are named at: each row's of feature rows X [N, F] and their images
        (its presentation cell's or stratum's, with an operating point), or the detector's."""
        return self.thresholds_for(X, images) if X is not None else self.threshold

    def thresholds_for(self, X: np.ndarray, images: torch.Tensor | None = None):
        """[N] the fake threshold of each feature row (with an operating point: its presentation cell's when the
        images are given, else its degradation stratum's), or the detector's one threshold."""
        if self.operating is None:
            return self.threshold
        stats = None if images is None else presentation_stats(images)
        return self.operating.thresholds(degradation_columns(X, self.classifier), len(X), stats)

    def judge(self, ev: Evidence, X: np.ndarray, names: list[str], images: torch.Tensor | None) -> Judgement | None:
        """The operating point's thresholds and doubts of these images (None: the detector has none)."""
        if self.operating is None:
            return None
        return self.operating.judge(ev.p_fake, check_scores(ev, X, names, images),
                                    degradation_columns(X, self.classifier),
                                    None if images is None else presentation_stats(images))

    def reasons(self, ev: Evidence, i: int) -> list[str]:
        if self.evidence is None:
            return [REASON_GENERATOR] if ev.p_fake[i] > self.threshold else []
        return ev.reasons(i)

    # ------------------------------------------------------------------ verdicts
    def warnings(self, prep: PreparedImage | None, feats: np.ndarray, names: list[str], *,
                 first_stage: bool = False) -> list[str]:
        """What makes an image's probability less reliable: settings that differ from the fit's, and inputs
        outside the fitted domain (the first stage's, for an image it decided)."""
        out = []
        if not first_stage and self.feature_cfg.refine_steps != self.fitted_refine_steps:
            out.append(f"refinement steps ({self.feature_cfg.refine_steps}) differ from those the classifier was "
                       f"fitted with ({self.fitted_refine_steps}): the probability is less well calibrated")
        domain = self.domain_of(first_stage)
        if prep is not None:
            out += self.domain.colour_warnings(prep.colourfulness, self.G.img_channels)
            out += prep.notes
        out += domain.feature_warnings(feats, names)
        return out

    def domain_of(self, first_stage: bool) -> Domain:
        """The fitted domain an image's features are checked against (a cascade's first stage has its own)."""
        return self.domain

    def verdicts(self, X: np.ndarray, names: list[str], p: np.ndarray, *, ev: Evidence | None = None,
                 images: torch.Tensor | None = None, X1: np.ndarray | None = None,
                 decided: np.ndarray | None = None) -> list[str]:
        """Verdicts of feature rows [N, F] with their probabilities (the input decoding's own warnings aside), and
        with an operating point, of the full evidence `ev` of the same rows and their images; with a cascade, the
        rows decided at stage 1 are judged on their stage-1 rows X1."""
        j = None if ev is None else self.judge(ev, X, names, images)
        if j is None and self.operating is not None:
            raise ValueError("a detector with an operating point judges images on their evidence: pass ev and images")
        out = []
        for i, pi in enumerate(p):
            first = decided is not None and bool(decided[i])
            x = X1[i] if first else X[i]
            t, doubts = (self.threshold, []) if j is None else (float(j.threshold[i]), j.doubts[i])
            out.append(self.policy.verdict(float(pi), t, self.warnings(None, x, names, first_stage=first),
                                           doubts=doubts))
        return out

    # ------------------------------------------------------------------ scoring
    def pixel_evidence(self, images: torch.Tensor) -> tuple[np.ndarray | None, np.ndarray | None, dict]:
        """The appearance features and artifact logits of images (what needs no inversion), and their ms."""
        t0 = time.perf_counter()
        A = appearance_features(self.perceptual, images) if self.evidence is not None else None
        L = self.artifact_scores(images)  # [N] or None
        ms = {"appearance": 1000 * (time.perf_counter() - t0) / max(len(images), 1)} if A is not None else {}
        return A, L, ms

    def features(self, images: torch.Tensor, cfg: FeatureConfig, classifier: JsonClassifier, *,
                 explain: bool = False):
        fb = extract_features(self.G, self.D, self.encoder, self.perceptual, images, cfg=cfg, explain=explain)
        if fb.names != classifier.feature_names:
            raise DetectorError("feature names differ from those the classifier was fitted on")
        return fb

    def _score(self, images: torch.Tensor, *, explain: bool = False) -> Scored:
        """Features and evidence of images [N, C, H, W]."""
        N = images.shape[0]
        images = images.to(self.device)
        A, L, pixel_ms = self.pixel_evidence(images)
        fb = self.features(images, self.feature_cfg, self.classifier, explain=explain)
        t0 = time.perf_counter()
        X = fb.values.numpy()
        ev = self.probabilities(X, images, appearance=A, artifacts=L)
        judgement = self.judge(ev, X, fb.names, images)
        timings = {**pixel_ms, **fb.timings_ms, "classify": 1000 * (time.perf_counter() - t0) / max(N, 1)}
        return Scored(ev=ev, stage1=np.zeros(N, dtype=bool), batches=[fb], rows=[(0, i) for i in range(N)],
                      timings=[timings] * N, judgement=judgement)

    def _stability(self, images: torch.Tensor, sc: Scored) -> list[list[str]]:
        """Per image, the mild re-degradations (STABILITY_CHECKS) under which its verdict flips."""
        flips: list[list[str]] = [[] for _ in range(len(images))]
        fake = sc.ev.p_fake > self.threshold if sc.judgement is None else sc.judgement.fake
        for kind, strength in STABILITY_CHECKS[: self.policy.stability_checks]:
            moved = laundering.apply(images.cpu(), kind, strength).to(self.device)
            mk = self._score(moved)
            fake_k = mk.ev.p_fake > self.threshold if mk.judgement is None else mk.judgement.fake
            for i in np.flatnonzero(fake_k != fake):
                flips[i].append(f"{kind} {strength:g}")
        return flips

    def _result(self, sc: Scored, i: int, *, images: torch.Tensor, prep: PreparedImage | None, source: str,
                decode_ms: float, flips: list[str], explain: bool) -> ScoreResult:
        b, k = sc.rows[i]
        fb = sc.batches[b]
        x, p = fb.values[k].numpy(), float(sc.ev.p_fake[i])
        timings = {key: round(v, 2) for key, v in {"decode": decode_ms, **sc.timings[i]}.items()}
        timings["total"] = round(sum(timings.values()), 2)
        warnings = self.warnings(prep, x, fb.names, first_stage=bool(sc.stage1[i]))
        if flips:
            warnings.append(f"{UNSTABLE}: the verdict flips under mild re-degradation ({', '.join(flips)})")
        j = sc.judgement
        t, doubts = (self.threshold, []) if j is None else (float(j.threshold[i]), j.doubts[i])
        verdict = self.policy.verdict(p, t, warnings, doubts=doubts)
        r = ScoreResult(
            source=source, p_fake=p, verdict=verdict, threshold=t, reasons=self.reasons(sc.ev, i),
            doubts=list(doubts) if verdict == "uncertain" else [],
            tail_probabilities=None if self.evidence is None else sc.ev.tail_probabilities(i),
            model_id=self.model_id, features=dict(zip(fb.names, map(float, x), strict=True)), timings_ms=timings,
            warnings=warnings, degradation=fb.degradations[k] if fb.degradations else None)
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
        return r

    def score_tensors(self, images: torch.Tensor, *, preps: list[PreparedImage | None] | None = None,
                      sources: list[str] | None = None, explain: bool = False,
                      decode_ms: list[float] | None = None) -> list[ScoreResult]:
        """images [N, C, H, W] in [-1, 1] (already the model's input)."""
        N = images.shape[0]
        sc = self._score(images, explain=explain)
        flips = self._stability(images, sc)
        return [self._result(sc, i, images=images, prep=preps[i] if preps else None,
                             source=sources[i] if sources else f"image{i}", decode_ms=(decode_ms or [0.0] * N)[i],
                             flips=flips[i], explain=explain) for i in range(N)]

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
