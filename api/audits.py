"""Audits through the service: start one on a folder under the allowed root, follow it, fetch its report.

Audits run in background threads of the server process, write into the audit database as they go, and
are resumed when the server starts again (their work so far is kept; see detector/audit.py).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from detector.audit import (
    AuditConfig,
    AuditInterrupted,
    AuditRow,
    audit_id_for,
    audit_progress,
    ensure_audit,
    open_db,
    run_audit,
    write_report,
)
from detector.scoring import Detector

from .errors import ApiError, error_responses


class AuditRequest(BaseModel):
    folder: str = Field(description="folder to audit, absolute or relative to the allowed audit root")
    frames_per_second: float = Field(1.0, gt=0, le=30)
    crop_faces: bool = False


def resolve_under_root(folder: str, root: str | None) -> Path:
    """The real path of `folder` if it lies under the real path of `root` (symlinks resolved), else 403."""
    if not root:
        raise ApiError(403, "audits_disabled", "audits are disabled: set RESYNTH_AUDIT_ROOT to allow a folder tree")
    real_root = os.path.realpath(root)
    candidate = folder if os.path.isabs(folder) else os.path.join(real_root, folder)
    real = os.path.realpath(candidate)
    if real != real_root and not real.startswith(real_root + os.sep):
        raise ApiError(403, "forbidden_path", f"{folder!r} is outside the allowed audit root")
    if not os.path.isdir(real):
        raise ApiError(404, "not_found", f"{folder!r} is not a folder under the audit root")
    return Path(real)


class AuditManager:
    """Background audit threads sharing the server's detector."""

    def __init__(self, db: str, detector: Detector):
        self.engine = open_db(db)
        self.detector = detector
        self.stop = threading.Event()
        self.threads: dict[str, threading.Thread] = {}

    def _run(self, root: Path, cfg: AuditConfig) -> None:
        def check(_counts):
            if self.stop.is_set():
                raise AuditInterrupted("server shutting down")

        try:
            run_audit(self.engine, root, detector=self.detector, cfg=cfg, progress=False, on_progress=check)
        except Exception:  # noqa: BLE001 - the state (failed / interrupted) is in the database
            pass

    def start(self, root: Path, cfg: AuditConfig) -> str:
        aid = audit_id_for(root, self.detector.model_id, cfg)
        t = self.threads.get(aid)
        if t is None or not t.is_alive():
            ensure_audit(self.engine, root, self.detector.model_id, cfg)  # the id is known before the thread runs
            t = threading.Thread(target=self._run, args=(root, cfg), daemon=True, name=f"audit-{aid}")
            self.threads[aid] = t
            t.start()
        return aid

    def resume_unfinished(self, allowed_root: str | None) -> list[str]:
        """Restart audits of this model left running or interrupted (e.g. by a restart)."""
        if not allowed_root:
            return []
        with Session(self.engine) as s:
            rows = list(s.scalars(select(AuditRow).where(AuditRow.status.in_(("running", "interrupted")),
                                                         AuditRow.model_id == self.detector.model_id)))
        out = []
        for r in rows:
            try:
                root = resolve_under_root(r.root, allowed_root)
            except ApiError:
                continue
            out.append(self.start(root, AuditConfig(**json.loads(r.options))))
        return out

    def shutdown(self, timeout: float = 30) -> None:
        self.stop.set()
        for t in self.threads.values():
            t.join(timeout=timeout)


def get_audits(request: Request) -> AuditManager:
    m = getattr(request.app.state, "audits", None)
    if m is None:
        raise ApiError(503, "not_ready", "the model is not loaded (yet)")
    return m


router = APIRouter()


@router.post("/v1/audits", status_code=202, responses=error_responses(403, 404, 422, 503),
             summary="Start (or resume) an audit of a folder under the allowed root")
async def start_audit(body: AuditRequest, request: Request, audits: AuditManager = Depends(get_audits)):
    root = resolve_under_root(body.folder, request.app.state.settings.audit_root)
    aid = audits.start(root, AuditConfig(frames_per_second=body.frames_per_second, crop_faces=body.crop_faces))
    return audit_progress(audits.engine, aid)


@router.get("/v1/audits/{audit_id}", responses=error_responses(404, 503), summary="Progress of an audit")
async def get_audit(audit_id: str, audits: AuditManager = Depends(get_audits)):
    try:
        return audit_progress(audits.engine, audit_id)
    except KeyError as exc:
        raise ApiError(404, "not_found", f"no audit {audit_id!r}") from exc


@router.get("/v1/audits/{audit_id}/report", responses=error_responses(404, 503),
            summary="The audit's report (html, json or csv), rebuilt from the database")
async def get_report(audit_id: str, format: str = Query("html", pattern="^(html|json|csv)$"),
                     audits: AuditManager = Depends(get_audits)):
    media = {"html": "text/html", "json": "application/json", "csv": "text/csv"}[format]
    with tempfile.TemporaryDirectory() as d:
        try:
            path = write_report(audits.engine, audit_id, Path(d) / f"report.{format}")
        except KeyError as exc:
            raise ApiError(404, "not_found", f"no audit {audit_id!r}") from exc
        return Response(path.read_bytes(), media_type=media)
