"""Batch audit of a media folder (images and videos) into a database, resumably, with reports.

Every file ends in exactly one state: `scored`, or `skipped` with a reason. Results are stored in a
database (SQLite by default, any SQLAlchemy URL otherwise) keyed by (content hash, model id, mode) and
committed as they are produced, together with the file rows that point at them: a run killed at any
moment and rerun finishes with every file recorded exactly once, and identical files are scored once.

Videos are sampled at `frames_per_second`; each frame is scored and the video is summarised: mean
p_fake (its probability), max, share of frames over the threshold (verdict 'fake' when at least half
are), and the worst frame's timestamp. With `crop_faces`, faces found by OpenCV's bundled Haar cascade
are scored instead of the whole image (an image's probability is its most suspicious face).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import torch
from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from tqdm import tqdm

from .imageio import ImageDecodeError, decode
from .walk import OUTSIDE, Confinement, Entry, OutsideRoot, file_hash, open_media, read_media, walk_media

__all__ = ["AuditConfig", "walk_media", "Entry", "run_audit", "audit_rows", "write_report", "render_report"]
log = logging.getLogger(__name__)



@dataclass(frozen=True)
class AuditConfig:
    workers: int = 1
    batch: int = 16                  # images scored together
    frames_per_second: float = 1.0   # video sampling rate
    max_frames: int = 300            # per video
    crop_faces: bool = False
    max_file_bytes: int = 500 * 2**20
    confine_to: str | None = None    # audit root: every path listed, hashed or opened must resolve inside it

    @property
    def guard(self) -> Confinement | None:
        return Confinement(self.confine_to) if self.confine_to else None

    @property
    def mode(self) -> str:
        """What a stored result depends on besides the file and the model."""
        return ("faces" if self.crop_faces else "full") + f"|fps={self.frames_per_second:g}|max={self.max_frames}"


# ------------------------------------------------------------------------------------------ database

class Base(DeclarativeBase):
    pass


class AuditRow(Base):
    __tablename__ = "audits"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    root: Mapped[str] = mapped_column(Text)
    model_id: Mapped[str] = mapped_column(String(128))
    options: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))          # queued | running | done | failed | interrupted
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[str] = mapped_column(String(40))
    updated: Mapped[str] = mapped_column(String(40))
    total_files: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ResultRow(Base):
    __tablename__ = "results"
    content_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    mode: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))              # image | video
    p_fake: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(8))
    summary: Mapped[str] = mapped_column(Text)                # JSON: frames, faces, warnings, ...
    thumbnail: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    heatmap: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class FileRow(Base):
    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("audit_id", "path"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    audit_id: Mapped[str] = mapped_column(ForeignKey("audits.id"), index=True)
    path: Mapped[str] = mapped_column(Text)                   # relative to the audit root
    kind: Mapped[str] = mapped_column(String(8))              # image | video | other
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    content_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(8))             # scored | skipped
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    deduplicated: Mapped[int] = mapped_column(Integer, default=0)


def open_db(url_or_path: str | Path) -> Engine:
    """An engine for an SQLAlchemy URL, or a path to an SQLite file (created with the tables)."""
    s = str(url_or_path)
    url = s if "://" in s else f"sqlite:///{Path(s).resolve()}"
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(conn, _):
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    try:
        Base.metadata.create_all(engine)
    except OperationalError:  # another process created the tables at the same moment
        Base.metadata.create_all(engine)
    return engine


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def audit_id_for(root: Path, model_id: str, cfg: AuditConfig) -> str:
    key = f"{root}|{model_id}|{cfg.mode}" + (f"|confined={os.path.realpath(cfg.confine_to)}" if cfg.confine_to else "")
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ scoring

_WORKER_DETECTOR = None


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


_PARENT_GONE = threading.Event()  # never set: the watcher's sleep


def _worker_init(loader: Callable[[], object], parent: int) -> None:
    global _WORKER_DETECTOR
    _die_with_parent(parent)
    torch.set_num_threads(1)
    _WORKER_DETECTOR = loader()


def _face_crops(data: bytes, source: str) -> list[bytes]:
    img, _, _ = decode(data, source)
    rgb = np.asarray(img.convert("RGB"))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    crops = []
    for x, y, w, h in faces:
        m = int(0.2 * max(w, h))
        crop = rgb[max(0, y - m):y + h + m, max(0, x - m):x + w + m]
        ok, buf = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        if ok:
            crops.append(buf.tobytes())
    return crops


def _video_frames(path: Path, fps_target: float, max_frames: int,
                  guard: Confinement | None = None) -> tuple[list[bytes], list[float]]:
    if guard is None:
        return _read_frames(str(path), fps_target, max_frames)
    with open_media(path, guard) as f:  # OpenCV reads the checked descriptor, never the path again
        opened = f"/proc/self/fd/{f.fileno()}"
        return _read_frames(opened if os.path.exists(opened) else guard.check(path), fps_target, max_frames)


def _read_frames(source: str, fps_target: float, max_frames: int) -> tuple[list[bytes], list[float]]:
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise ValueError("cannot open video (corrupt or unsupported codec)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    step = max(1, round(fps / fps_target))
    frames, stamps, i = [], [], 0
    try:
        while len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if i % step == 0:
                ok, buf = cv2.imencode(".png", frame)
                if ok:
                    frames.append(buf.tobytes())
                    stamps.append(i / fps)
            i += 1
    finally:
        cap.release()
    if not frames:
        raise ValueError("no decodable frames")
    return frames, stamps


def score_task(task: dict, cfg: AuditConfig, detector=None) -> list[dict]:
    """Score one task ({'kind': 'images', 'items': [(hash, path)]} or {'kind': 'video', ...}).

    Returns one dict per content hash: {'hash', 'ok': True, result fields} or {'hash', 'ok': False, 'reason'}.
    """
    det = detector if detector is not None else _WORKER_DETECTOR
    out = []
    if task["kind"] == "video":
        h, path = task["hash"], Path(task["path"])
        try:
            frames, stamps = _video_frames(path, cfg.frames_per_second, cfg.max_frames, cfg.guard)
            preps = [det.prepare(f, source=f"{path.name}@{t:.2f}s") for f, t in zip(frames, stamps, strict=True)]
        except OutsideRoot:
            return [{"hash": h, "ok": False, "reason": OUTSIDE}]
        except OSError as exc:
            return [{"hash": h, "ok": False, "reason": f"unreadable: {exc.strerror or exc}"}]
        except (ValueError, ImageDecodeError) as exc:
            return [{"hash": h, "ok": False, "reason": f"corrupt: {exc}"}]
        results = []
        for i in range(0, len(preps), cfg.batch):
            chunk = preps[i:i + cfg.batch]
            results += det.score_tensors(torch.stack([p.tensor for p in chunk]), preps=chunk, explain=False)
        p = np.asarray([r.p_fake for r in results])
        worst = int(p.argmax())
        over = float((p > det.classifier.threshold).mean())
        best = det.score(frames[worst], explain=True)
        out.append({"hash": h, "ok": True, "kind": "video", "p_fake": float(p.mean()),
                    "verdict": "fake" if over >= 0.5 else "real",
                    "summary": {"frames": len(p), "max": float(p.max()), "mean": float(p.mean()),
                                "share_over_threshold": over, "worst_frame_s": round(stamps[worst], 3),
                                "warnings": sorted({w for r in results for w in r.warnings})},
                    "thumbnail": best.evidence["input"], "heatmap": best.evidence["perceptual_heatmap"]})
        return out
    preps, owners, order = [], [], []  # images of the whole task are scored as one batch
    for h, path in task["items"]:
        try:
            data = read_media(path, cfg.guard)
            inputs = _face_crops(data, str(path)) if cfg.crop_faces else [data]
            if not inputs:
                out.append({"hash": h, "ok": False, "reason": "no face found"})
                continue
            mine = [det.prepare(x, source=str(path)) for x in inputs]
        except ImageDecodeError as exc:
            reason = {"too_large": "too large", "unsupported": "unsupported or not an image"}.get(exc.kind, "corrupt")
            out.append({"hash": h, "ok": False, "reason": f"{reason}: {exc.reason}"})
            continue
        except OutsideRoot:
            out.append({"hash": h, "ok": False, "reason": OUTSIDE})
            continue
        except OSError as exc:
            out.append({"hash": h, "ok": False, "reason": f"unreadable: {exc.strerror or exc}"})
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
        summary = {"warnings": worst.warnings}
        if cfg.crop_faces:
            summary["faces"] = [r.p_fake for r in mine]
        out.append({"hash": h, "ok": True, "kind": "image", "p_fake": worst.p_fake, "verdict": worst.verdict,
                    "summary": summary, "thumbnail": worst.evidence["input"],
                    "heatmap": worst.evidence["perceptual_heatmap"]})
    return out


# ------------------------------------------------------------------------------------------ the run

class AuditInterrupted(Exception):
    """Raised from an on_progress callback to stop a run; the audit stays resumable ('interrupted')."""


def ensure_audit(engine: Engine, root: Path, model_id: str, cfg: AuditConfig, *, status: str = "running") -> str:
    """Create the audit row (or mark an existing one running, or queued, again); returns its id."""
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    aid = audit_id_for(root, model_id, cfg)
    with Session(engine) as s:
        row = s.get(AuditRow, aid)
        if row is None:
            s.add(AuditRow(id=aid, root=str(root), model_id=model_id, options=json.dumps(asdict(cfg)),
                           status=status, created=_now(), updated=_now()))
        else:
            row.status, row.updated, row.message = status, _now(), None
        s.commit()
    return aid


def run_audit(engine: Engine, root: str | Path, *, detector, cfg: AuditConfig = AuditConfig(),
              loader: Callable[[], object] | None = None, progress: bool = True,
              on_progress: Callable[[dict], None] | None = None) -> str:
    """Audit `root` into the database; resumes an earlier run of the same audit. Returns the audit id.

    `detector` scores in this process (workers=1); with workers > 1, `loader` (picklable, no arguments)
    builds a detector in each worker process.
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
    counts = {"scored": 0, "skipped": 0, "deduplicated": 0, "done_before": len(done)}
    bar = tqdm(total=len(entries) + len(done), initial=len(done), disable=not progress, desc="audit",
               unit="file", dynamic_ncols=True)

    def record(rows: list[FileRow], result: ResultRow | None = None) -> None:
        with Session(engine, expire_on_commit=False) as s:
            if result is not None:
                s.merge(result)
            s.add_all(rows)
            s.commit()
        for r in rows:
            counts["scored" if r.state == "scored" else "skipped"] += 1
            counts["deduplicated"] += r.deduplicated
        bar.update(len(rows))
        bar.set_postfix({k: v for k, v in counts.items() if k != "done_before"})
        if on_progress:
            on_progress(dict(counts))

    pending: dict[str, list[Entry]] = {}   # content hash -> entries waiting for its score
    tasks, image_batch = [], []
    for e in entries:
        if e.kind in ("other", "error"):
            record([FileRow(audit_id=aid, path=e.rel, kind="other", size=e.size, state="skipped", reason=e.reason)])
            continue
        if e.size is not None and e.size > cfg.max_file_bytes:
            record([FileRow(audit_id=aid, path=e.rel, kind=e.kind, size=e.size, state="skipped",
                            reason=f"too large: {e.size} bytes > {cfg.max_file_bytes}")])
            continue
        try:
            h = file_hash(e.path, guard)
        except OutsideRoot:
            record([FileRow(audit_id=aid, path=e.rel, kind=e.kind, size=None, state="skipped", reason=OUTSIDE)])
            continue
        except OSError as exc:
            record([FileRow(audit_id=aid, path=e.rel, kind=e.kind, size=e.size, state="skipped",
                            reason=f"unreadable: {exc.strerror or exc}")])
            continue
        if h in known:
            record([FileRow(audit_id=aid, path=e.rel, kind=e.kind, size=e.size, content_hash=h, state="scored",
                            deduplicated=1)])
            continue
        if h in pending:
            pending[h].append(e)
            continue
        pending[h] = [e]
        if e.kind == "video":
            tasks.append({"kind": "video", "hash": h, "path": str(e.path)})
        else:
            image_batch.append((h, str(e.path)))
            if len(image_batch) == cfg.batch:
                tasks.append({"kind": "images", "items": image_batch})
                image_batch = []
    if image_batch:
        tasks.append({"kind": "images", "items": image_batch})

    def store(res: dict) -> None:
        group = pending.pop(res["hash"])
        result = None
        if res["ok"]:
            result = ResultRow(content_hash=res["hash"], model_id=model_id, mode=cfg.mode, kind=res["kind"],
                               p_fake=res["p_fake"], verdict=res["verdict"], summary=json.dumps(res["summary"]),
                               thumbnail=res["thumbnail"], heatmap=res["heatmap"])
            rows = [FileRow(audit_id=aid, path=e.rel, kind=e.kind, size=e.size, content_hash=res["hash"],
                            state="scored", deduplicated=int(i > 0)) for i, e in enumerate(group)]
        else:
            rows = [FileRow(audit_id=aid, path=e.rel, kind=e.kind, size=e.size, content_hash=res["hash"],
                            state="skipped", reason=res["reason"]) for e in group]
        record(rows, result)

    try:
        if cfg.workers <= 1 or len(tasks) <= 1:
            for t in tasks:
                for res in score_task(t, cfg, detector):
                    store(res)
        else:
            if loader is None:
                raise ValueError("workers > 1 needs a picklable detector loader")
            import multiprocessing as mp

            with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                     initargs=(loader, os.getpid())) as pool:
                for results in pool.map(score_task, tasks, [cfg] * len(tasks)):
                    for res in results:
                        store(res)
    except BaseException as exc:
        with Session(engine) as s:
            row = s.get(AuditRow, aid)
            row.status = "interrupted" if isinstance(exc, (AuditInterrupted, KeyboardInterrupt)) else "failed"
            row.message, row.updated = f"{type(exc).__name__}: {exc}", _now()
            s.commit()
        raise
    finally:
        bar.close()
    with Session(engine) as s:
        row = s.get(AuditRow, aid)
        row.status, row.updated = "done", _now()
        row.total_files = s.query(FileRow).filter(FileRow.audit_id == aid).count()
        s.commit()
    return aid


# ------------------------------------------------------------------------------------------ reports

def audit_rows(engine: Engine, audit_id: str) -> tuple[AuditRow, list[dict]]:
    """The audit and one dict per file (joined with its result), without rescoring anything."""
    with Session(engine) as s:
        audit = s.get(AuditRow, audit_id)
        if audit is None:
            raise KeyError(f"no audit {audit_id!r} in this database")
        s.expunge(audit)
        mode = AuditConfig(**json.loads(audit.options)).mode
        rows = []
        for f in s.scalars(select(FileRow).where(FileRow.audit_id == audit_id).order_by(FileRow.path)):
            r = s.get(ResultRow, (f.content_hash, audit.model_id, mode)) if f.state == "scored" else None
            d = {"path": f.path, "kind": f.kind, "size": f.size, "content_hash": f.content_hash, "state": f.state,
                 "reason": f.reason, "deduplicated": bool(f.deduplicated), "p_fake": None, "verdict": None}
            if r is not None:
                summary = json.loads(r.summary)
                d.update(p_fake=r.p_fake, verdict=r.verdict, summary=summary, _thumb=r.thumbnail, _heat=r.heatmap)
                if r.kind == "video":
                    d.update(frames=summary["frames"], max_p=summary["max"], mean_p=summary["mean"],
                             share_over_threshold=summary["share_over_threshold"],
                             worst_frame_s=summary["worst_frame_s"])
            rows.append(d)
    return audit, rows


CSV_FIELDS = ["path", "kind", "size", "content_hash", "state", "reason", "deduplicated", "p_fake", "verdict",
              "frames", "max_p", "mean_p", "share_over_threshold", "worst_frame_s"]


def audit_progress(engine: Engine, audit_id: str) -> dict:
    with Session(engine) as s:
        a = s.get(AuditRow, audit_id)
        if a is None:
            raise KeyError(audit_id)
        q = s.query(FileRow).filter(FileRow.audit_id == audit_id)
        return {"id": a.id, "root": a.root, "model_id": a.model_id, "status": a.status, "message": a.message,
                "created": a.created, "updated": a.updated, "files_recorded": q.count(),
                "scored": q.filter(FileRow.state == "scored").count(),
                "skipped": q.filter(FileRow.state == "skipped").count(), "total_files": a.total_files}


REPORT_FORMATS = {"csv": "text/csv", "json": "application/json", "html": "text/html"}


def render_report(engine: Engine, audit_id: str, fmt: str) -> bytes:
    """The report of an audit as bytes: 'csv', 'json' or 'html', rebuilt from the database (KeyError: no audit)."""
    import csv
    import io

    if fmt not in REPORT_FORMATS:
        raise ValueError(f"report format {fmt!r}: use one of {', '.join(REPORT_FORMATS)}")
    audit, rows = audit_rows(engine, audit_id)
    if fmt == "csv":
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue().encode()
    if fmt == "json":
        clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        return json.dumps({"audit": audit_progress(engine, audit_id), "files": clean}, indent=1).encode()
    return html_report(audit, rows, audit_progress(engine, audit_id)).encode()


def write_report(engine: Engine, audit_id: str, out: str | Path) -> Path:
    """CSV, JSON or HTML (by the file suffix), rebuilt from the database."""
    out = Path(out)
    fmt = {".htm": "html"}.get(out.suffix.lower(), out.suffix.lower().lstrip("."))
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"report format {out.suffix!r}: use .csv, .json or .html")
    data = render_report(engine, audit_id, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out


def _histogram_svg(ps: list[float], bins: int = 20) -> str:
    counts, _ = np.histogram(ps, bins=bins, range=(0, 1))
    top = max(int(counts.max()) if len(ps) else 1, 1)
    W, H, bw = 400, 120, 400 / bins
    bars = "".join(f'<rect x="{i * bw:.1f}" y="{H - c / top * H:.1f}" width="{bw - 1:.1f}" height="{c / top * H:.1f}" '
                   f'fill="#557"><title>{i / bins:.2f}-{(i + 1) / bins:.2f}: {c}</title></rect>'
                   for i, c in enumerate(counts))
    return (f'<svg width="{W}" height="{H + 16}" role="img" aria-label="histogram of p_fake">{bars}'
            f'<text x="0" y="{H + 14}" font-size="11">0</text><text x="{W - 10}" y="{H + 14}" font-size="11">1</text>'
            "</svg>")


def html_report(audit: AuditRow, rows: list[dict], progress: dict) -> str:
    import base64
    import html

    esc = html.escape
    scored = [r for r in rows if r["state"] == "scored"]
    skipped = [r for r in rows if r["state"] == "skipped"]
    flagged = sorted((r for r in scored if r["verdict"] == "fake"), key=lambda r: -r["p_fake"])

    def img(b: bytes | None) -> str:
        return f'<img src="data:image/png;base64,{base64.b64encode(b).decode()}" width="96" height="96">' if b else ""

    flagged_rows = "".join(
        f"<tr><td>{esc(r['path'])}</td><td>{r['kind']}</td><td>{r['p_fake']:.4f}</td>"
        f"<td>{img(r.get('_thumb'))}</td><td>{img(r.get('_heat'))}</td>"
        f"<td>{esc(json.dumps({k: v for k, v in r.get('summary', {}).items() if k != 'warnings'}))}</td></tr>"
        for r in flagged)
    skipped_rows = "".join(f"<tr><td>{esc(r['path'])}</td><td>{esc(r['reason'] or '')}</td></tr>" for r in skipped)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>resynth audit {esc(audit.id)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{image-rendering:pixelated}}</style></head><body>
<h1>resynth audit</h1>
<p>Folder <code>{esc(audit.root)}</code> · model <code>{esc(audit.model_id)}</code> · status {esc(progress['status'])}
 · updated {esc(progress['updated'])}</p>
<h2>Totals</h2>
<table><tr><th>files</th><th>scored</th><th>flagged fake</th><th>skipped</th><th>deduplicated</th></tr>
<tr><td>{len(rows)}</td><td>{len(scored)}</td><td>{len(flagged)}</td><td>{len(skipped)}</td>
<td>{sum(r['deduplicated'] for r in rows)}</td></tr></table>
<h2>Scores</h2>{_histogram_svg([r['p_fake'] for r in scored])}
<h2>Flagged items ({len(flagged)}), most suspicious first</h2>
<table><tr><th>file</th><th>kind</th><th>p_fake</th><th>input</th><th>perceptual residual</th><th>details</th></tr>
{flagged_rows}</table>
<h2>Skipped files ({len(skipped)})</h2><table><tr><th>file</th><th>reason</th></tr>{skipped_rows}</table>
</body></html>"""

