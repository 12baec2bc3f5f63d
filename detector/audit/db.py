"""The audit database: tables, opening, the audit row and its progress.

Results are keyed by (content hash, model id, mode) and shared by every audit of the database; file rows
belong to one audit and point at a result by content hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

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
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from .config import AuditConfig


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
    verdict: Mapped[str] = mapped_column(String(16))          # fake | real | uncertain
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


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def audit_id_for(root: Path, model_id: str, cfg: AuditConfig) -> str:
    key = f"{root}|{model_id}|{cfg.mode}" + (f"|confined={os.path.realpath(cfg.confine_to)}" if cfg.confine_to else "")
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def ensure_audit(engine: Engine, root: Path, model_id: str, cfg: AuditConfig, *, status: str = "running") -> str:
    """Create the audit row (or mark an existing one running, or queued, again); returns its id."""
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a directory")
    aid = audit_id_for(root, model_id, cfg)
    with Session(engine) as s:
        row = s.get(AuditRow, aid)
        if row is None:
            s.add(AuditRow(id=aid, root=str(root), model_id=model_id, options=json.dumps(asdict(cfg)),
                           status=status, created=now(), updated=now()))
        else:
            row.status, row.updated, row.message = status, now(), None
        s.commit()
    return aid


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
