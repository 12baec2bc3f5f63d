"""Audits into PostgreSQL (a database several machines reach): a real server on a loopback port, started here
from Debian's `postgresql` package (make test installs it where apt can), torn down afterwards."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from detector.audit import AuditConfig, FileRow, audit_rows, open_db, run_audit, write_report

from .test_audit import _img, _video


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is in the `ray` extra (make test installs it)")
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins and shutil.which("initdb") is None:
        pytest.skip("PostgreSQL is not installed (Debian package `postgresql`; make test installs it where apt can)")
    bindir = Path(bins[-1]).parent if bins else Path(shutil.which("initdb")).parent
    base = Path(tempfile.mkdtemp(prefix="resynth-pg-"))  # outside pytest's 0700 folders: another user reads it
    data = base / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: as the package's `postgres` user
        run_as = ["runuser", "-u", "postgres", "--"]
        base.chmod(0o777)
    port = _free_port()
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "resynth"],
                   check=True, capture_output=True, timeout=120)
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-t", "60", "-l",
                    str(data / "log"), "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql+psycopg://resynth@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_audit_into_postgresql_resumes_and_matches_sqlite(postgres_url, tiny_detector, tmp_path):
    det = tiny_detector[1]
    media = tmp_path / "media"
    for i in range(5):
        _img(media / f"sub/img{i}.png", 200 + i)
    (media / "copy.png").write_bytes((media / "sub/img0.png").read_bytes())
    (media / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    _video(media / "clip.avi")
    cfg = AuditConfig(batch=2, frames_per_second=3)
    pg = open_db(postgres_url)
    assert pg.dialect.name == "postgresql"
    aid = run_audit(pg, media, detector=det, cfg=cfg, progress=False)
    lite = open_db(tmp_path / "a.sqlite")
    run_audit(lite, media, detector=det, cfg=cfg, progress=False)
    _, a = audit_rows(pg, aid)
    _, b = audit_rows(lite, aid)
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]  # noqa: E731
    assert strip(a) == strip(b) and len(a) == 8
    run_audit(pg, media, detector=det, cfg=cfg, progress=False)  # a rerun: nothing new, nothing twice
    with Session(pg) as s:
        assert s.scalar(select(func.count()).select_from(FileRow).where(FileRow.audit_id == aid)) == 8
    out = write_report(pg, aid, tmp_path / "report.csv")
    assert "clip.avi" in Path(out).read_text()
