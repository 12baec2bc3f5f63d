"""Audits through the service: start one on a folder under the allowed root, follow it, fetch its report.

Security model: an audit reads only inside `RESYNTH_AUDIT_ROOT`. The folder must resolve inside it, and so
must every path the walk lists, hashes or opens (links included, checked again on the opened descriptor): a
link leading out is recorded as skipped, "outside the audit root", and never read. Audits share the scoring
slots with detections (`RESYNTH_MAX_INFLIGHT`): at most `RESYNTH_MAX_AUDITS` run at once, at most
`RESYNTH_AUDIT_QUEUE` wait for a slot, and any further request gets 503 with Retry-After.

Audits run in worker threads of the server process, write into the audit database as they go, and are
resumed (queued first) when the server starts again; their work so far is kept (see detector/audit/).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import anyio
from anyio.abc import TaskGroup
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from detector.audit import (
    REPORT_FORMATS,
    AuditConfig,
    AuditInterrupted,
    AuditRow,
    Confinement,
    OutsideRoot,
    audit_id_for,
    audit_progress,
    ensure_audit,
    open_db,
    render_report,
    run_audit,
)
from detector.runtime import Detector

from .errors import ApiError, error_responses
from .guard import Metrics
from .settings import Settings

log = logging.getLogger("resynth.audits")


class AuditRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    folder: str = Field(min_length=1, max_length=4096, pattern=r"^[^\x00]*$",
                        description="folder to audit, absolute or relative to the allowed audit root")
    frames_per_second: float = Field(1.0, gt=0, le=30, description="video frames scored per second of video")
    crop_faces: bool = Field(False, description="score the faces found in each image instead of the whole image")


class AuditStatus(BaseModel):
    id: str
    folder: str = Field(description="the audited folder, relative to the audit root")
    model_id: str
    status: str = Field(description="queued | running | done | failed | interrupted")
    message: str | None
    created: str
    updated: str
    files_recorded: int
    scored: int
    skipped: int
    total_files: int | None


def resolve_under_root(folder: str, root: str | None) -> Path:
    """The real path of `folder` if it lies under the real path of `root` (symlinks resolved), else 403."""
    if not root:
        raise ApiError(403, "audits_disabled", "audits are disabled: set RESYNTH_AUDIT_ROOT to allow a folder tree")
    if "\x00" in folder:
        raise ApiError(422, "invalid_request", "folder: contains a NUL byte")
    guard = Confinement(root)
    try:
        real = guard.check(folder if os.path.isabs(folder) else os.path.join(guard.root, folder))
    except OutsideRoot:
        raise ApiError(403, "forbidden_path", f"{folder!r} is outside the allowed audit root") from None
    if not os.path.isdir(real):
        raise ApiError(404, "not_found", f"{folder!r} is not a folder under the audit root")
    return Path(real)


class AuditManager:
    """Audits of the server: queued in the lifespan's task group, run in threads, bounded in number."""

    def __init__(self, settings: Settings, detector: Detector, capacity: anyio.CapacityLimiter, tg: TaskGroup,
                 metrics: Metrics):
        self.settings, self.detector, self.capacity, self.tg, self.metrics = settings, detector, capacity, tg, metrics
        self.real_root = os.path.realpath(settings.audit_root) if settings.audit_root else None
        self.engine = open_db(settings.audit_db) if self.real_root else None  # audits off: no database at all
        self.running = anyio.CapacityLimiter(max(settings.max_audits, 1))
        self.active: dict[str, str] = {}  # audit id -> 'queued' | 'running'
        self.stop = threading.Event()

    def _count(self) -> None:
        for state in ("queued", "running"):
            self.metrics.audits.labels(state).set(sum(v == state for v in self.active.values()))

    def _run_sync(self, aid: str, root: Path, cfg: AuditConfig) -> None:
        def check(_counts):
            if self.stop.is_set():
                raise AuditInterrupted("server shutting down")

        try:
            run_audit(self.engine, root, detector=self.detector, cfg=cfg, progress=False, on_progress=check)
            log.info("audit %s done", aid)
        except AuditInterrupted:
            log.info("audit %s interrupted; it resumes when the server starts again", aid)
        except Exception:  # the state ('failed') and its message are in the database
            log.exception("audit %s failed", aid)

    async def _run(self, aid: str, root: Path, cfg: AuditConfig) -> None:
        try:
            async with self.running, self.capacity:  # waits in line (FIFO) for an audit turn, then a scoring slot
                self.active[aid] = "running"
                self._count()
                await anyio.to_thread.run_sync(self._run_sync, aid, root, cfg)  # ended by `stop`, not cancelled
        finally:
            self.active.pop(aid, None)
            self._count()

    async def start(self, root: Path, cfg: AuditConfig, *, force: bool = False) -> str:
        """Queue an audit (or return the id of the same audit already queued or running)."""
        aid = audit_id_for(root, self.detector.model_id, cfg)
        if aid in self.active:
            return aid
        if self.settings.max_audits < 1:
            raise ApiError(403, "audits_disabled", "audits are disabled: RESYNTH_MAX_AUDITS is 0")
        if not force and len(self.active) >= self.settings.max_audits + self.settings.audit_queue:
            raise ApiError(503, "audit_queue_full", f"{len(self.active)} audits are running or queued; retry later",
                           headers={"Retry-After": str(self.settings.retry_after_s)})
        self.active[aid] = "queued"
        self._count()
        try:
            await anyio.to_thread.run_sync(lambda: ensure_audit(self.engine, root, self.detector.model_id, cfg,
                                                                status="queued"))
        except BaseException:
            self.active.pop(aid, None)
            raise
        self.tg.start_soon(self._run, aid, root, cfg, name=f"audit-{aid}")
        return aid

    def config(self, frames_per_second: float = 1.0, crop_faces: bool = False) -> AuditConfig:
        return AuditConfig(frames_per_second=frames_per_second, crop_faces=crop_faces, confine_to=self.real_root)

    async def resume_unfinished(self) -> list[str]:
        """Queue again the audits of this model and root left queued, running or interrupted by a restart."""
        if not self.real_root:
            return []

        def unfinished() -> list[AuditRow]:
            with Session(self.engine) as s:
                return list(s.scalars(select(AuditRow).where(
                    AuditRow.status.in_(("queued", "running", "interrupted")),
                    AuditRow.model_id == self.detector.model_id)))

        out = []
        for r in await anyio.to_thread.run_sync(unfinished):
            cfg = AuditConfig(**json.loads(r.options))
            if cfg.confine_to != self.real_root:  # made under another root (or by the CLI): not ours to resume
                continue
            try:
                root = resolve_under_root(r.root, self.real_root)
            except ApiError:
                continue
            out.append(await self.start(root, cfg, force=True))
        return out

    def engine_for(self, aid: str):
        """The audit database, or 404 for any audit when audits are off (there is no database then)."""
        if self.engine is None:
            raise ApiError(404, "not_found", f"no audit {aid!r} (audits are disabled)")
        return self.engine

    async def status(self, aid: str) -> dict:
        try:
            p = await anyio.to_thread.run_sync(audit_progress, self.engine_for(aid), aid)
        except KeyError as exc:
            raise ApiError(404, "not_found", f"no audit {aid!r}") from exc
        p["folder"] = self.folder_of(p.pop("root"))
        return p

    def folder_of(self, root: str) -> str:
        """How a client sees an audited folder: relative to the audit root, never as a server path."""
        return os.path.relpath(root, self.real_root) if self.real_root else os.path.basename(root)

    def report(self, aid: str, fmt: str) -> bytes:
        engine = self.engine_for(aid)
        return render_report(engine, aid, fmt, folder=self.folder_of(audit_progress(engine, aid)["root"]))

    async def shutdown(self) -> None:
        """Stop: running audits end at their next file (resumable), queued ones stay queued in the database."""
        self.stop.set()
        self.tg.cancel_scope.cancel()


def get_audits(request: Request) -> AuditManager:
    m = getattr(request.app.state, "audits", None)
    if m is None:
        raise ApiError(503, "not_ready", "the model is not loaded (yet)")
    return m


router = APIRouter()


@router.post("/v1/audits", status_code=202, response_model=AuditStatus,
             responses=error_responses(403, 404, 408, 413, 422, 503),
             summary="Start (or resume) an audit of a folder under the allowed root")
async def start_audit(body: AuditRequest, request: Request, audits: AuditManager = Depends(get_audits)):
    root = await anyio.to_thread.run_sync(resolve_under_root, body.folder, request.app.state.settings.audit_root)
    aid = await audits.start(root, audits.config(body.frames_per_second, body.crop_faces))
    return await audits.status(aid)


@router.get("/v1/audits/{audit_id}", response_model=AuditStatus, responses=error_responses(404, 503),
            summary="Progress of an audit")
async def get_audit(audit_id: str, audits: AuditManager = Depends(get_audits)):
    return await audits.status(audit_id)


@router.get("/v1/audits/{audit_id}/report", responses={
    200: {"description": "the report", "content": {
        t: {"schema": {"type": "object"} if f == "json" else {"type": "string"}} for f, t in REPORT_FORMATS.items()}},
    **error_responses(404, 422, 503)}, response_class=Response,
            summary="The audit's report (html, json or csv), rebuilt from the database")
async def get_report(audit_id: str, format: str = Query("html", pattern="^(html|json|csv)$"),
                     audits: AuditManager = Depends(get_audits)):
    try:
        data = await anyio.to_thread.run_sync(audits.report, audit_id, format)
    except KeyError as exc:
        raise ApiError(404, "not_found", f"no audit {audit_id!r}") from exc
    return Response(data, media_type=REPORT_FORMATS[format])
