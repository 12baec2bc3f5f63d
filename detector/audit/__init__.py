"""Batch audit of a media folder (images and videos) into a database, resumably, with reports.

Every file ends in exactly one state: `scored`, or `skipped` with a reason. Results are stored in a
database (SQLite by default, any SQLAlchemy URL otherwise) keyed by (content hash, model id, mode) and
committed as they are produced, together with the file rows that point at them: a run killed at any
moment and rerun finishes with every file recorded exactly once, and identical files are scored once.

Videos are sampled at `frames_per_second`; each frame is scored and the video is summarised: mean
p_fake (its probability), max, share of frames over the threshold (verdict 'fake' when at least half
are), and the worst frame's timestamp. With `crop_faces`, faces found by OpenCV's bundled Haar cascade
are scored instead of the whole image (an image's probability is its most suspicious face).

Rooms: `config` (what an audit does), `walk` (the folder walk and its root confinement), `media` (video
frames, face crops), `db` (tables, audit rows, progress), `run` (planning, scoring, storing), `report`.
"""

from .config import AuditConfig
from .db import AuditRow, FileRow, ResultRow, audit_id_for, audit_progress, ensure_audit, open_db
from .report import REPORT_FORMATS, audit_rows, render_report, write_report
from .run import AuditInterrupted, run_audit
from .tasks import ImageTask, Outcome, VideoTask, score_task
from .walk import OUTSIDE, Confinement, Entry, OutsideRoot, walk_media

__all__ = ["AuditConfig", "AuditRow", "FileRow", "ResultRow", "audit_id_for", "audit_progress", "ensure_audit",
           "open_db", "REPORT_FORMATS", "audit_rows", "render_report", "write_report", "AuditInterrupted",
           "ImageTask", "Outcome", "VideoTask", "run_audit", "score_task", "OUTSIDE", "Confinement", "Entry",
           "OutsideRoot", "walk_media"]
