import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from detector.audit import AuditConfig, FileRow, ResultRow, audit_rows, open_db, run_audit, walk_media, write_report

ROOT = Path(__file__).resolve().parent.parent


def _img(path: Path, seed: int, size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)).save(path)


def _video(path: Path, frames=12, fps=6.0):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (32, 32))
    for i in range(frames):
        w.write(np.full((32, 32, 3), 20 * i % 255, dtype=np.uint8))
    w.release()


@pytest.fixture
def media(tmp_path):
    root = tmp_path / "media"
    _img(root / "a.png", 1)
    _img(root / "nested" / "deep" / "b.png", 2)
    (root / "nested" / "copy_of_a.png").write_bytes((root / "a.png").read_bytes())  # duplicate content
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (root / "notes.txt").write_text("not media")
    (root / "loop").symlink_to(root, target_is_directory=True)  # symlink loop
    _video(root / "clip.avi")
    (root / "bad.mp4").write_bytes(b"not a video")
    return root


def test_walk_handles_loops_and_non_media(media):
    entries = {e.rel: e for e in walk_media(media)}
    assert entries["notes.txt"].reason == "not a media file"
    assert entries["loop"].kind == "error" and "loop" in entries["loop"].reason
    assert entries["clip.avi"].kind == "video" and entries["nested/deep/b.png"].kind == "image"


def test_mixed_folder_every_file_one_state(media, tiny_detector, tmp_path):
    det = tiny_detector[1]
    engine = open_db(tmp_path / "a.sqlite")
    aid = run_audit(engine, media, detector=det, cfg=AuditConfig(batch=2, frames_per_second=3), progress=False)
    _, rows = audit_rows(engine, aid)
    by = {r["path"]: r for r in rows}
    assert set(by) == {"a.png", "nested/deep/b.png", "nested/copy_of_a.png", "broken.jpg", "notes.txt", "loop",
                       "clip.avi", "bad.mp4"}
    assert by["a.png"]["state"] == "scored" and 0 <= by["a.png"]["p_fake"] <= 1
    assert by["nested/copy_of_a.png"]["deduplicated"] and by["nested/copy_of_a.png"]["p_fake"] == by["a.png"]["p_fake"]
    assert by["broken.jpg"]["state"] == "skipped" and by["broken.jpg"]["reason"].startswith(("corrupt", "unsupported"))
    assert by["notes.txt"]["reason"] == "not a media file"
    assert by["bad.mp4"]["state"] == "skipped" and "corrupt" in by["bad.mp4"]["reason"]
    v = by["clip.avi"]
    assert v["state"] == "scored" and v["frames"] == 6 and 0 <= v["worst_frame_s"] < 2
    assert v["max_p"] >= v["mean_p"] == pytest.approx(v["p_fake"])
    with Session(engine) as s:  # identical content scored once
        assert s.scalar(select(func.count()).select_from(ResultRow)) == 3  # a (and its copy), b, clip
    # A rerun does nothing new.
    again = run_audit(engine, media, detector=det, cfg=AuditConfig(batch=2, frames_per_second=3), progress=False)
    assert again == aid and len(audit_rows(engine, aid)[1]) == len(rows)

    for fmt in ("csv", "json", "html"):
        out = write_report(engine, aid, tmp_path / f"r.{fmt}")
        text = out.read_text()
        assert "broken.jpg" in text and ("nested/deep/b.png" in text or fmt == "html")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["audit"]["status"] == "done" and len(data["files"]) == 8
    import csv

    with open(tmp_path / "r.csv", newline="") as f:
        rows_csv = {r["path"]: r for r in csv.DictReader(f)}
    for path, r in rows_csv.items():  # reasons named for every scored item flagged fake, none for the others
        if r["state"] == "scored":
            assert bool(r["reasons"]) == (r["verdict"] == "fake"), path
    html = (tmp_path / "r.html").read_text()
    assert "<svg" in html and "Skipped files (4)" in html and "not a media file" in html
    with pytest.raises(ValueError, match="report format"):
        write_report(engine, aid, tmp_path / "r.xlsx")


@pytest.mark.slow
def test_workers(media, tiny_detector, tmp_path):
    import functools

    from detector.runtime import Detector

    folder, det = tiny_detector
    loader = functools.partial(Detector.load, str(folder / "det.json"))
    engine = open_db(tmp_path / "w.sqlite")
    aid = run_audit(engine, media, detector=det, loader=loader,
                    cfg=AuditConfig(workers=2, batch=1, frames_per_second=3), progress=False)
    rows = {r["path"]: r for r in audit_rows(engine, aid)[1]}
    assert rows["a.png"]["state"] == "scored" and rows["clip.avi"]["state"] == "scored"


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT count(*) FROM files").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        con.close()


@pytest.mark.slow
def test_kill_and_resume(tiny_detector, tmp_path):
    folder, _ = tiny_detector
    root = tmp_path / "many"
    n = 120
    for i in range(n):
        _img(root / f"d{i % 7}" / f"img{i:03d}.png", seed=100 + i)
    db = tmp_path / "k.sqlite"
    cmd = [sys.executable, "-m", "api.cli", "audit", str(root), "--db", str(db), "--batch", "1",
           "--detector", str(folder / "det.json"), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "audit.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
    recorded = 0
    try:
        while proc.poll() is None:
            recorded = _rows(db)  # read-only: never races the audit's own table creation
            if recorded >= 3:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        log.close()
    assert 3 <= recorded < n, f"the audit must be killed part-way: {(tmp_path / 'audit.log').read_text()[-2000:]}"
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    engine = open_db(db)
    with Session(engine) as s:
        paths = list(s.scalars(select(FileRow.path)))
        states = set(s.scalars(select(FileRow.state)))
    assert len(paths) == n and len(set(paths)) == n and states == {"scored"}


def test_crop_faces_without_faces_is_skipped_with_reason(tiny_detector, tmp_path):
    root = tmp_path / "nofaces"
    _img(root / "garment.png", 5, size=64)
    engine = open_db(tmp_path / "f.sqlite")
    aid = run_audit(engine, root, detector=tiny_detector[1], cfg=AuditConfig(crop_faces=True), progress=False)
    (row,) = audit_rows(engine, aid)[1]
    assert row["state"] == "skipped" and row["reason"] == "no face found"


def test_cli_audit_and_report_only(tiny_detector, tmp_path, capsys):
    from detector.cli import main

    folder, _ = tiny_detector
    root = tmp_path / "m"
    _img(root / "x.png", 7)
    (root / "y.txt").write_text("no")
    db = str(tmp_path / "cli.sqlite")
    base = [str(root), "--db", db, "--detector", str(folder / "det.json"), "--device", "cpu"]
    assert main(["audit", *base, "--out", str(tmp_path / "r.html")]) == 0
    progress = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert progress["status"] == "done" and progress["scored"] == 1 and progress["skipped"] == 1
    assert main(["audit", *base, "--report-only", "--out", str(tmp_path / "r.csv")]) == 0
    assert "x.png" in (tmp_path / "r.csv").read_text()
    assert main(["audit", str(tmp_path / "nowhere"), "--db", db, "--detector", str(folder / "det.json")]) == 2


def test_planning_without_a_database(media, tmp_path):
    """The planner alone: skips with reasons, duplicates of known content, one batch per `batch` new images,
    one task per video, and a second copy of queued content waiting for the first one's outcome."""
    from detector.audit.run import Planner
    from detector.audit.tasks import Duplicate, ImageTask, Skip, VideoTask
    from detector.audit.walk import file_hash

    known = {file_hash(media / "nested" / "deep" / "b.png")}
    planner = Planner(AuditConfig(batch=2), known)
    steps = list(planner.plan(walk_media(media)))
    skips = {s.entry.rel: s.reason for s in steps if isinstance(s, Skip)}
    assert skips["notes.txt"] == "not a media file" and "loop" in skips["loop"]
    assert [d.entry.rel for d in steps if isinstance(d, Duplicate)] == ["nested/deep/b.png"]
    images = [t for t in steps if isinstance(t, ImageTask)]
    videos = [t for t in steps if isinstance(t, VideoTask)]
    assert [len(t.items) for t in images] == [2]  # a.png and broken.jpg; the copy of a.png waits
    assert {Path(v.path).name for v in videos} == {"bad.mp4", "clip.avi"}
    h_a = file_hash(media / "a.png")
    assert [e.rel for e in planner.pending[h_a]] == ["a.png", "nested/copy_of_a.png"]


def test_video_frames_are_inverted_once(media, tiny_detector):
    """Every sampled frame goes through the detector exactly once; the worst frame's evidence is reused."""
    from detector.audit.tasks import VideoTask, score_task
    from detector.audit.walk import file_hash

    det = tiny_detector[1]
    calls = {"images": 0, "score": 0}

    class Counting:
        classifier, threshold, model_id = det.classifier, det.threshold, det.model_id

        def prepare(self, *a, **k):
            return det.prepare(*a, **k)

        def score_tensors(self, images, **k):
            calls["images"] += len(images)
            return det.score_tensors(images, **k)

        def score(self, *a, **k):
            calls["score"] += 1
            return det.score(*a, **k)

    path = media / "clip.avi"
    (out,) = score_task(VideoTask(file_hash(path), str(path)), AuditConfig(frames_per_second=3, batch=4), Counting())
    assert out.ok and out.summary["frames"] == 6
    assert calls == {"images": 6, "score": 0}
    assert out.thumbnail.startswith(b"\x89PNG") and out.heatmap.startswith(b"\x89PNG")


def test_uncertain_items_counted_in_reports(tiny_detector, tmp_path):
    root = tmp_path / "mixed"
    _img(root / "gray.png", 1)
    root.mkdir(exist_ok=True)
    Image.fromarray(np.random.default_rng(9).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "colour.png")
    engine = open_db(tmp_path / "u.sqlite")
    aid = run_audit(engine, root, detector=tiny_detector[1], progress=False)
    by = {r["path"]: r for r in audit_rows(engine, aid)[1]}
    assert by["colour.png"]["verdict"] == "uncertain" and by["gray.png"]["verdict"] in ("real", "fake")
    html = write_report(engine, aid, tmp_path / "r.html").read_text()
    flagged = int(by["gray.png"]["verdict"] == "fake")
    assert "<th>uncertain</th>" in html
    assert f"<tr><td>2</td><td>2</td><td>{flagged}</td><td>1</td><td>0</td>" in html.replace("\n", "")
    assert "uncertain" in write_report(engine, aid, tmp_path / "r.csv").read_text()
    # uncertain items are listed for review after the flagged ones, with what was inconclusive
    assert html.index("Flagged items") < html.index("Uncertain items (1), for review") < html.index("Skipped files")
    section = html[html.index("Uncertain items"):html.index("Skipped files")]
    assert "colour.png" in section and "gray.png" not in section and "out of domain: a colour image" in section


def test_an_uncertain_item_carries_its_doubts_into_every_report(tiny_detector, tmp_path, monkeypatch):
    """An image below the threshold that fails a check against photos: its doubts reach the HTML report's
    uncertain section and the CSV's `doubts` column."""
    import dataclasses

    det = tiny_detector[1]
    doubt = "the generator reconstructs it worse than it reconstructs photos (perceptual distance)"
    real_score = det.score_tensors

    def doubtful(images, **k):  # the detector's own results, with the operating point's doubts on every image
        return [dataclasses.replace(r, verdict="uncertain", doubts=[doubt]) for r in real_score(images, **k)]

    monkeypatch.setattr(det, "score_tensors", doubtful)
    root = tmp_path / "doubtful"
    _img(root / "a.png", 3)
    engine = open_db(tmp_path / "d.sqlite")
    aid = run_audit(engine, root, detector=det, progress=False)
    monkeypatch.undo()
    (row,) = audit_rows(engine, aid)[1]
    assert row["verdict"] == "uncertain" and row["summary"]["doubts"] == [doubt]
    html = write_report(engine, aid, tmp_path / "r.html").read_text()
    section = html[html.index("Uncertain items"):html.index("Skipped files")]
    assert "a.png" in section and "reconstructs it worse" in section
    csv_text = write_report(engine, aid, tmp_path / "r.csv").read_text()
    header, line = csv_text.splitlines()[:2]
    assert "doubts" in header.split(",") and "reconstructs it worse" in line
