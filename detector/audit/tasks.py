"""Audit tasks: what is scored together (`ImageTask`, a batch of images; `VideoTask`, one video) and how a task
becomes its outcomes (`score_task`), whichever engine runs it (detector/audit/run.py's processes or
detector/audit/ray_engine.py's actors)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..imageio import ImageDecodeError
from .config import LATENT_PNG, AuditConfig
from .media import video_frames
from .walk import OUTSIDE, Entry, OutsideRoot, read_media


@dataclass(frozen=True)
class ImageTask:
    items: tuple[tuple[str, str], ...]  # (content hash, path): images scored together as one batch


@dataclass(frozen=True)
class VideoTask:
    content_hash: str
    path: str


@dataclass
class Outcome:
    """What scoring one content hash gave: a result, or the reason it could not be scored."""

    content_hash: str
    reason: str | None = None          # set when the content could not be scored
    kind: str = "image"                # image | video
    p_fake: float = 0.0
    verdict: str = "real"
    summary: dict = field(default_factory=dict)
    thumbnail: bytes | None = None     # the input as the model saw it (PNG)
    heatmap: bytes | None = None       # its perceptual residual (PNG)

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class Skip:
    entry: Entry
    reason: str
    content_hash: str | None = None


@dataclass(frozen=True)
class Duplicate:
    entry: Entry
    content_hash: str


def read_reason(exc: Exception) -> str:
    if isinstance(exc, OutsideRoot):
        return OUTSIDE
    if isinstance(exc, ImageDecodeError):
        what = {"too_large": "too large", "unsupported": "unsupported or not an image"}.get(exc.kind, "corrupt")
        return f"{what}: {exc.reason}"
    if isinstance(exc, OSError):
        return f"unreadable: {exc.strerror or exc}"
    return f"corrupt: {exc}"


def _score_video(task: VideoTask, cfg: AuditConfig, det) -> list[Outcome]:
    path = Path(task.path)
    try:
        frames, stamps = video_frames(path, cfg.frames_per_second, cfg.max_frames, cfg.guard)
        preps = [det.prepare(f, source=f"{path.name}@{t:.2f}s") for f, t in zip(frames, stamps, strict=True)]
    except (OSError, ValueError, ImageDecodeError) as exc:
        return [Outcome(task.content_hash, reason=read_reason(exc))]
    results = []
    for i in range(0, len(preps), cfg.batch):  # evidence for every frame: the worst one is not inverted again
        chunk = preps[i:i + cfg.batch]
        results += det.score_tensors(torch.stack([p.tensor for p in chunk]), preps=chunk, explain=True)
    p = np.asarray([r.p_fake for r in results])
    worst = int(p.argmax())
    over = float(np.mean([p_i > r.threshold for p_i, r in zip(p, results, strict=True)]))
    unsure = float(np.mean([r.verdict == "uncertain" for r in results]))
    verdict = "uncertain" if unsure >= 0.5 else "fake" if over >= 0.5 else "real"
    return [Outcome(task.content_hash, kind="video", p_fake=float(p.mean()), verdict=verdict,
                    summary={"frames": len(p), "max": float(p.max()), "mean": float(p.mean()),
                             "share_over_threshold": over, "share_uncertain": unsure,
                             "worst_frame_s": round(stamps[worst], 3),
                             "warnings": sorted({w for r in results for w in r.warnings}),
                             "reasons": sorted({x for r in results for x in r.reasons}) if verdict == "fake" else [],
                             "doubts": sorted({x for r in results for x in r.doubts}) if verdict == "uncertain" else [],
                             **summary_extras(results[worst])},
                    thumbnail=results[worst].evidence["input"],
                    heatmap=results[worst].evidence["perceptual_heatmap"])]


def summary_extras(r) -> dict:
    """The attribution (attribution detectors) and, for a flagged item, the 2D latent plot of a result, as
    stored in an outcome's summary."""
    out = {} if r.attribution is None else {"attribution": r.attribution, "attributed_to": r.attributed_to}
    if r.verdict == "fake" and "latent_2d" in r.evidence:
        out[LATENT_PNG] = base64.b64encode(r.evidence["latent_2d"]).decode()
    return out


def _score_images(task: ImageTask, cfg: AuditConfig, det) -> list[Outcome]:
    out, preps, owners, order = [], [], [], []  # the images of a task are scored as one batch
    for h, path in task.items:
        try:
            data = read_media(path, cfg.guard)
            src = str(path)
            mine = det.prepare_faces(data, source=src) if cfg.crop_faces else [det.prepare(data, source=src)]
        except (OSError, ImageDecodeError) as exc:
            out.append(Outcome(h, reason=read_reason(exc)))
            continue
        if not mine:
            out.append(Outcome(h, reason="no face found"))
            continue
        preps += mine
        owners += [h] * len(mine)
        order.append(h)
    if not preps:
        return out
    results = det.score_tensors(torch.stack([p.tensor for p in preps]), preps=preps,
                                sources=[p.source for p in preps], explain=True)
    for h in order:
        mine = [r for r, o in zip(results, owners, strict=True) if o == h]
        worst = max(mine, key=lambda r: r.p_fake)
        summary = {"warnings": worst.warnings, "reasons": worst.reasons, "doubts": worst.doubts}
        summary.update(summary_extras(worst))
        if cfg.crop_faces:
            summary["faces"] = [r.p_fake for r in mine]
        out.append(Outcome(h, kind="image", p_fake=worst.p_fake, verdict=worst.verdict, summary=summary,
                           thumbnail=worst.evidence["input"], heatmap=worst.evidence["perceptual_heatmap"]))
    return out


def score_task(task: ImageTask | VideoTask, cfg: AuditConfig, detector) -> list[Outcome]:
    """One outcome per content hash of the task."""
    return _score_video(task, cfg, detector) if isinstance(task, VideoTask) else _score_images(task, cfg, detector)
