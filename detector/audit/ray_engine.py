"""The audit on a Ray cluster: the same walk, plan, scoring and store as the local engine, through Ray Data.

The driver walks the folder and plans exactly as the local engine does (run.Planner: skips, duplicates, image
batches, videos), and it is the database's only writer (run.Store). The scoring tasks become a Ray Dataset;
`map_batches` runs them on a pool of actors, each of which loads the detector once (`loader`), and the outcomes
stream back to the driver, which stores each as it arrives. A video is split into frame chunks (`FrameTask`:
the sampled frames k0..k1 of one video), scored by whichever actors are free, and its outcome is put together
on the driver once all its chunks are back, so one long video does not pin one actor.

Failure: an actor that dies is restarted by Ray Data and its task retried (its actor pools default to
max_restarts=-1, max_task_retries=-1); an outcome that
arrives twice is stored once (the driver keeps what is pending); a run stopped at any moment is resumed by a
rerun with either engine, which skips what is stored. Both engines write the same rows (content hash, model
id, mode), so they are interchangeable on one database.

The files are read by the actors: on a cluster of several machines the media folder (and the detector files)
must be at the same path on every node. Ray is an optional dependency: `pip install -e ".[ray]"`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import AuditConfig
from .media import video_capture
from .tasks import ImageTask, Outcome, VideoTask, read_reason, score_task, summary_extras

RAY_MISSING = ("the Ray engine needs Ray: pip install -e \".[ray]\" (or pip install \"ray[data]\"); "
               "the local engine (--engine local, the default) needs nothing more")


class RayUnavailable(RuntimeError):
    pass


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise RayUnavailable(RAY_MISSING) from exc
    return ray


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None    # None: start a local Ray instance; 'auto' or 'ray://HOST:PORT': join a cluster
    actors: int = 1               # scoring actors, each with its own detector
    cpus_per_actor: float = 1.0   # torch threads per actor follow it
    batch_size: int = 1           # scoring tasks per map_batches call (a task is already a batch of images)


# ------------------------------------------------------------------------------------------ video chunks

@dataclass(frozen=True)
class FrameTask:
    """Sampled frames [start, stop) of one video (stop None: to the end, at most max_frames)."""

    content_hash: str
    path: str
    start: int
    stop: int | None


def sampled_frame_count(path: str, cfg: AuditConfig) -> int:
    """How many frames the local engine samples from this video, from its header (a guess: the last chunk is
    open-ended, so a wrong count never loses frames)."""
    import cv2

    with video_capture(path, cfg.guard) as cap:
        if not cap.isOpened():
            return 0
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    step = max(1, round(fps / cfg.frames_per_second))
    return min(cfg.max_frames, (n + step - 1) // step)


def split_video(task: VideoTask, cfg: AuditConfig, chunk: int) -> list[FrameTask]:
    n = sampled_frame_count(task.path, cfg)
    starts = list(range(0, max(n, 1), chunk))
    return [FrameTask(task.content_hash, task.path, s, starts[i + 1] if i + 1 < len(starts) else None)
            for i, s in enumerate(starts)]


def read_frames(task: FrameTask, cfg: AuditConfig) -> tuple[list[bytes], list[float]]:
    """The PNG frames and times of a chunk, sampled exactly as media.video_frames samples the whole video."""
    import cv2

    with video_capture(task.path, cfg.guard) as cap:
        if not cap.isOpened():
            raise ValueError("cannot open video (corrupt or unsupported codec)")
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        step = max(1, round(fps / cfg.frames_per_second))
        stop = cfg.max_frames if task.stop is None else min(task.stop, cfg.max_frames)
        frames, stamps, i, k = [], [], 0, 0  # i: decoded frame, k: sampled frame
        while k < stop:
            ok, frame = cap.read()
            if not ok:
                break
            if i % step == 0:
                if k >= task.start:
                    ok, buf = cv2.imencode(".png", frame)
                    if ok:
                        frames.append(buf.tobytes())
                        stamps.append(i / fps)
                k += 1
            i += 1
    return frames, stamps


def score_frames(task: FrameTask, cfg: AuditConfig, det) -> dict:
    """Per-frame scores of a chunk, with the evidence of its worst frame (what the driver needs)."""
    import torch

    from ..imageio import ImageDecodeError

    try:
        frames, stamps = read_frames(task, cfg)
        name = Path(task.path).name
        preps = [det.prepare(fr, source=f"{name}@{t:.2f}s") for fr, t in zip(frames, stamps, strict=True)]
    except (OSError, ValueError, ImageDecodeError) as exc:
        return {"error": read_reason(exc)}
    results = []
    for i in range(0, len(preps), cfg.batch):
        part = preps[i:i + cfg.batch]
        results += det.score_tensors(torch.stack([p.tensor for p in part]), preps=part, explain=True)
    out = {"p": [r.p_fake for r in results], "uncertain": [r.verdict == "uncertain" for r in results],
           "stamps": stamps, "warnings": sorted({w for r in results for w in r.warnings}),
           "reasons": sorted({x for r in results for x in r.reasons}),
           "doubts": sorted({x for r in results for x in r.doubts}),
           "over": [r.p_fake > r.threshold for r in results]}  # each frame over its own threshold
    if results:
        worst = results[int(np.argmax(out["p"]))]
        out["thumbnail"], out["heatmap"] = worst.evidence["input"], worst.evidence["perceptual_heatmap"]
        out["extras"] = summary_extras(worst)
    return out


def video_outcome(content_hash: str, chunks: list[dict]) -> Outcome:
    """One video's outcome from all its chunks (in order), as run._score_video computes it for a whole video."""
    errors = [c["error"] for c in chunks if "error" in c]
    if errors and chunks[0].get("error"):
        return Outcome(content_hash, reason=errors[0])
    ok = [c for c in chunks if "error" not in c and c["p"]]
    if not ok:
        return Outcome(content_hash, reason=errors[0] if errors else "corrupt: no decodable frames")
    p = np.concatenate([c["p"] for c in ok])
    stamps = [t for c in ok for t in c["stamps"]]
    over = float(np.mean([o for c in ok for o in c["over"]]))
    unsure = float(np.mean([u for c in ok for u in c["uncertain"]]))
    verdict = "uncertain" if unsure >= 0.5 else "fake" if over >= 0.5 else "real"
    worst = int(p.argmax())
    owner = next(c for c in ok if max(c["p"]) == p[worst])
    return Outcome(content_hash, kind="video", p_fake=float(p.mean()), verdict=verdict,
                   summary={"frames": len(p), "max": float(p.max()), "mean": float(p.mean()),
                            "share_over_threshold": over, "share_uncertain": unsure,
                            "worst_frame_s": round(stamps[worst], 3),
                            "warnings": sorted({w for c in ok for w in c["warnings"]}),
                            "reasons": sorted({x for c in ok for x in c["reasons"]}) if verdict == "fake" else [],
                            "doubts": sorted({x for c in ok for x in c.get("doubts", [])}) if verdict == "uncertain"
                            else [], **owner.get("extras", {})},
                   thumbnail=owner["thumbnail"], heatmap=owner["heatmap"])


# ------------------------------------------------------------------------------------------ on the cluster

def encode_task(task: ImageTask | FrameTask) -> str:
    if isinstance(task, FrameTask):
        return json.dumps({"kind": "frames", "hash": task.content_hash, "path": task.path, "start": task.start,
                           "stop": task.stop})
    return json.dumps({"kind": "images", "items": [list(x) for x in task.items]})


def decode_task(s: str) -> ImageTask | FrameTask:
    d = json.loads(s)
    if d["kind"] == "frames":
        return FrameTask(d["hash"], d["path"], d["start"], d["stop"])
    return ImageTask(tuple((h, p) for h, p in d["items"]))


def _outcome_row(task_id: int, o: Outcome) -> dict:
    return {"task": task_id, "hash": o.content_hash, "chunk": "", "reason": o.reason or "", "kind": o.kind,
            "p_fake": o.p_fake, "verdict": o.verdict, "summary": json.dumps(o.summary),
            "thumbnail": o.thumbnail or b"", "heatmap": o.heatmap or b""}


class ScoringActor:
    """A Ray Data actor: loads the detector once, scores a batch of encoded tasks into outcome rows."""

    def __init__(self, loader: Callable[[], object], cfg: AuditConfig, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.det, self.cfg = loader(), cfg

    def __call__(self, batch: dict) -> dict:
        rows = []
        for task_id, s in zip(batch["id"], batch["task"], strict=True):
            task = decode_task(str(s))
            if isinstance(task, FrameTask):
                chunk = score_frames(task, self.cfg, self.det)
                rows.append({**_outcome_row(int(task_id), Outcome(task.content_hash, kind="frames")),
                             "chunk": json.dumps({k: v for k, v in chunk.items() if k not in ("thumbnail", "heatmap")}),
                             "thumbnail": chunk.get("thumbnail", b""), "heatmap": chunk.get("heatmap", b"")})
            else:
                rows += [_outcome_row(int(task_id), o) for o in score_task(task, self.cfg, self.det)]
        cols = ("task", "hash", "chunk", "reason", "kind", "p_fake", "verdict", "summary", "thumbnail", "heatmap")
        return {c: [r[c] for r in rows] for c in cols}


@dataclass
class _VideoParts:
    n: int
    chunks: dict[int, dict] = field(default_factory=dict)


def score_on_ray(tasks: list[ImageTask | VideoTask], cfg: AuditConfig, loader: Callable[[], object],
                 rcfg: RayConfig, on_outcomes: Callable[[list[Outcome]], None]) -> None:
    """Score the planned tasks on Ray; every outcome goes to `on_outcomes` on the driver as it arrives."""
    ray = import_ray()
    if not ray.is_initialized():  # a cluster to join, or a local instance sized for the actors
        kw = {"address": rcfg.address} if rcfg.address else {
            "num_cpus": max(1, int(rcfg.actors * rcfg.cpus_per_actor)), "include_dashboard": False}
        ray.init(**kw, log_to_driver=False, configure_logging=False)
    flat: list[ImageTask | FrameTask] = []
    videos: dict[int, tuple[str, _VideoParts]] = {}
    for t in tasks:
        if isinstance(t, VideoTask):
            parts = split_video(t, cfg, cfg.batch)
            group = _VideoParts(n=len(parts))
            for k in range(len(parts)):
                videos[len(flat) + k] = (t.content_hash, group)
            flat += parts
        else:
            flat.append(t)
    if not flat:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the audit's own progress bar counts files
    items = [{"id": i, "task": encode_task(t)} for i, t in enumerate(flat)]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # Ray Data restarts a dead actor and retries its tasks (its actor pools' defaults)
    out = ds.map_batches(ScoringActor, batch_size=rcfg.batch_size, concurrency=rcfg.actors,
                         num_cpus=rcfg.cpus_per_actor,
                         fn_constructor_kwargs={"loader": loader, "cfg": cfg,
                                                "threads": int(max(1, rcfg.cpus_per_actor))})
    seen: set[int] = set()
    for row in out.iter_rows():
        task_id = int(row["task"])
        if row["kind"] == "frames":
            h, group = videos[task_id]
            group.chunks[task_id] = {**json.loads(row["chunk"]), "thumbnail": bytes(row["thumbnail"]),
                                     "heatmap": bytes(row["heatmap"])}
            if len(group.chunks) == group.n and task_id not in seen:
                on_outcomes([video_outcome(h, [group.chunks[k] for k in sorted(group.chunks)])])
            seen.add(task_id)
            continue
        o = Outcome(row["hash"], reason=row["reason"] or None, kind=row["kind"], p_fake=float(row["p_fake"]),
                    verdict=row["verdict"], summary=json.loads(row["summary"]),
                    thumbnail=bytes(row["thumbnail"]) or None, heatmap=bytes(row["heatmap"]) or None)
        on_outcomes([o])
