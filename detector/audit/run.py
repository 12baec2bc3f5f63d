"""The audit run: plan what each walked file needs, score the tasks, store every outcome as it comes.

Planning (`Planner`) decides from the walk and the results already in the database: a file is skipped with
a reason, is a duplicate of content already scored, waits for content already queued in this run, or joins
a scoring task (`ImageTask`, a batch of images; `VideoTask`, one video). Scoring (`score_task`) turns a task
into `Outcome`s, one per content hash, in this process or in worker processes. Storing (`Store`) commits
each outcome with the file rows that point at it, so a run killed at any moment and rerun records every
file exactly once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from tqdm import tqdm

from .config import AuditConfig
from .db import AuditRow, FileRow, ResultRow, ensure_audit, now
from .ray_engine import score_on_ray
from .tasks import Duplicate, ImageTask, Outcome, Skip, VideoTask, read_reason, score_task
from .walk import OUTSIDE, Entry, file_hash, walk_media

log = logging.getLogger(__name__)


class AuditInterrupted(Exception):
    """Raised from an on_progress callback to stop a run; the audit stays resumable ('interrupted')."""


# ------------------------------------------------------------------------------------------ tasks


class Planner:
    """Turns walked entries into skips, duplicates and scoring tasks; holds the entries waiting for a score."""

    def __init__(self, cfg: AuditConfig, known: set[str]):
        self.cfg, self.known, self.guard = cfg, known, cfg.guard
        self.pending: dict[str, list[Entry]] = {}  # content hash -> entries waiting for its outcome

    def plan(self, entries: Iterable[Entry]) -> Iterator[Skip | Duplicate | ImageTask | VideoTask]:
        batch: list[tuple[str, str]] = []
        for e in entries:
            if e.kind in ("other", "error"):
                yield Skip(e, e.reason or "not a media file")
                continue
            if e.size is not None and e.size > self.cfg.max_file_bytes:
                yield Skip(e, f"too large: {e.size} bytes > {self.cfg.max_file_bytes}")
                continue
            try:
                h = file_hash(e.path, self.guard)
            except OSError as exc:
                yield Skip(e, read_reason(exc))
                continue
            if h in self.known:
                yield Duplicate(e, h)
            elif h in self.pending:
                self.pending[h].append(e)
            else:
                self.pending[h] = [e]
                if e.kind == "video":
                    yield VideoTask(h, str(e.path))
                else:
                    batch.append((h, str(e.path)))
                    if len(batch) == self.cfg.batch:
                        yield ImageTask(tuple(batch))
                        batch = []
        if batch:
            yield ImageTask(tuple(batch))


# ------------------------------------------------------------------------------------------ scoring


_WORKER_DETECTOR = None
_PARENT_GONE = threading.Event()  # never set: the watcher's sleep


def _die_with_parent(parent: int) -> None:
    """End this worker process as soon as the audit process that started it is gone, even after SIGKILL:
    the kernel's parent-death signal where Linux offers it, and a watcher thread everywhere."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while not _PARENT_GONE.wait(1.0):
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _worker_score(task: ImageTask | VideoTask, cfg: AuditConfig) -> list[Outcome]:
    """score_task with the worker process's own detector."""
    return score_task(task, cfg, _WORKER_DETECTOR)


def _worker_init(loader: Callable[[], object], parent: int) -> None:
    global _WORKER_DETECTOR
    _die_with_parent(parent)
    torch.set_num_threads(1)
    _WORKER_DETECTOR = loader()










# ------------------------------------------------------------------------------------------ storing


class Store:
    """Commits outcomes with their file rows, counts them, reports progress."""

    def __init__(self, engine: Engine, aid: str, model_id: str, cfg: AuditConfig, *, done_before: int,
                 total: int, progress: bool, on_progress: Callable[[dict], None] | None):
        self.engine, self.aid, self.model_id, self.cfg = engine, aid, model_id, cfg
        self.counts = {"scored": 0, "skipped": 0, "deduplicated": 0, "done_before": done_before}
        self.on_progress = on_progress
        self.bar = tqdm(total=total, initial=done_before, disable=not progress, desc="audit", unit="file",
                        dynamic_ncols=True)

    def _row(self, e: Entry, **kw) -> FileRow:
        return FileRow(audit_id=self.aid, path=e.rel, kind=kw.pop("kind", e.kind), size=kw.pop("size", e.size), **kw)

    def _commit(self, rows: list[FileRow], result: ResultRow | None = None) -> None:
        with Session(self.engine, expire_on_commit=False) as s:
            if result is not None:
                s.merge(result)
            s.add_all(rows)
            s.commit()
        for r in rows:
            self.counts["scored" if r.state == "scored" else "skipped"] += 1
            self.counts["deduplicated"] += r.deduplicated
        self.bar.update(len(rows))
        self.bar.set_postfix({k: v for k, v in self.counts.items() if k != "done_before"})
        if self.on_progress:
            self.on_progress(dict(self.counts))

    def skip(self, s: Skip) -> None:
        other = s.entry.kind in ("other", "error")
        outside = s.reason == OUTSIDE
        self._commit([self._row(s.entry, kind="other" if other else s.entry.kind,
                                size=None if outside else s.entry.size, content_hash=s.content_hash,
                                state="skipped", reason=s.reason)])

    def duplicate(self, d: Duplicate) -> None:
        self._commit([self._row(d.entry, content_hash=d.content_hash, state="scored", deduplicated=1)])

    def outcome(self, o: Outcome, group: list[Entry]) -> None:
        if not o.ok:
            self._commit([self._row(e, content_hash=o.content_hash, state="skipped", reason=o.reason)
                          for e in group])
            return
        result = ResultRow(content_hash=o.content_hash, model_id=self.model_id, mode=self.cfg.mode, kind=o.kind,
                           p_fake=o.p_fake, verdict=o.verdict, summary=json.dumps(o.summary),
                           thumbnail=o.thumbnail, heatmap=o.heatmap)
        self._commit([self._row(e, content_hash=o.content_hash, state="scored", deduplicated=int(i > 0))
                      for i, e in enumerate(group)], result)

    def close(self) -> None:
        self.bar.close()


# ------------------------------------------------------------------------------------------ the run


def _set_status(engine: Engine, aid: str, status: str, message: str | None = None) -> None:
    with Session(engine) as s:
        row = s.get(AuditRow, aid)
        row.status, row.message, row.updated = status, message, now()
        if status == "done":
            row.total_files = s.query(FileRow).filter(FileRow.audit_id == aid).count()
        s.commit()


def run_audit(engine: Engine, root: str | Path, *, detector, cfg: AuditConfig = AuditConfig(),
              loader: Callable[[], object] | None = None, progress: bool = True,
              on_progress: Callable[[dict], None] | None = None, ray=None) -> str:
    """Audit `root` into the database; resumes an earlier run of the same audit. Returns the audit id.

    `detector` scores in this process (workers=1); with workers > 1, `loader` (picklable, no arguments)
    builds a detector in each worker process. With `ray` (a ray_engine.RayConfig), the tasks are scored on
    a Ray cluster by actors that each build a detector with `loader`; this process still walks, plans and
    writes every row (detector/audit/ray_engine.py).
    """
    root = Path(root).resolve()
    guard = cfg.guard
    if guard is not None:
        guard.check(root)  # OutsideRoot for a folder that is not under the audit root
    model_id = detector.model_id
    aid = ensure_audit(engine, root, model_id, cfg)
    with Session(engine) as s:
        done = set(s.scalars(select(FileRow.path).where(FileRow.audit_id == aid)))
        known = set(s.scalars(select(ResultRow.content_hash).where(ResultRow.model_id == model_id,
                                                                  ResultRow.mode == cfg.mode)))
    entries = [e for e in walk_media(root, guard=guard) if e.rel not in done]
    store = Store(engine, aid, model_id, cfg, done_before=len(done), total=len(entries) + len(done),
                  progress=progress, on_progress=on_progress)
    planner = Planner(cfg, known)
    tasks: list[ImageTask | VideoTask] = []

    def stored(outcomes: list[Outcome]) -> None:
        for o in outcomes:
            group = planner.pending.pop(o.content_hash, None)
            if group is not None:  # an outcome that arrives twice (a retried task) is stored once
                store.outcome(o, group)

    try:
        for step in planner.plan(entries):  # skips and duplicates are stored while the plan is made
            if isinstance(step, Skip):
                store.skip(step)
            elif isinstance(step, Duplicate):
                store.duplicate(step)
            else:
                tasks.append(step)
        if ray is not None:
            if loader is None:
                raise ValueError("the Ray engine needs a picklable detector loader")
            score_on_ray(tasks, cfg, loader, ray, stored)
        elif cfg.workers <= 1 or len(tasks) <= 1:
            for t in tasks:
                stored(score_task(t, cfg, detector))
        else:
            if loader is None:
                raise ValueError("workers > 1 needs a picklable detector loader")
            import multiprocessing as mp

            with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                     initargs=(loader, os.getpid())) as pool:
                for outcomes in pool.map(_worker_score, tasks, [cfg] * len(tasks)):
                    stored(outcomes)
    except BaseException as exc:
        stopped = isinstance(exc, (AuditInterrupted, KeyboardInterrupt))
        _set_status(engine, aid, "interrupted" if stopped else "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        store.close()
    _set_status(engine, aid, "done")
    return aid
