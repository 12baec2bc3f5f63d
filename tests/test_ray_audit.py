"""The audit on Ray (detector/audit/ray_engine.py): video chunks put together as the local engine scores a whole
video, and, on a real two-process Ray cluster started here, the same rows as the local engine, every file
once, and an actor killed mid-run losing and duplicating nothing."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from detector.audit import AuditConfig, FileRow, ResultRow, audit_rows, open_db, run_audit
from detector.audit.ray_engine import FrameTask, read_frames, score_frames, split_video, video_outcome
from detector.audit.tasks import VideoTask, _score_video
from detector.runtime import Detector

from .test_audit import _img, _video


def test_video_chunks_give_the_whole_video_outcome(tiny_detector, tmp_path):
    from detector.audit.media import video_frames

    det = tiny_detector[1]
    path = tmp_path / "clip.avi"
    _video(path, frames=30, fps=10.0)
    cfg = AuditConfig(batch=2, frames_per_second=3)  # 10 sampled frames, in chunks of 2
    whole, stamps = video_frames(path, cfg.frames_per_second, cfg.max_frames)
    task = VideoTask("h", str(path))
    parts = split_video(task, cfg, cfg.batch)
    assert len(parts) == 5 and parts[-1].stop is None and [p.start for p in parts] == [0, 2, 4, 6, 8]
    got = [read_frames(p, cfg) for p in parts]
    assert [f for fr, _ in got for f in fr] == whole and [t for _, ts in got for t in ts] == stamps
    # a wrong frame count in the header never loses frames: the last chunk reads to the end
    assert read_frames(FrameTask("h", str(path), 6, None), cfg)[0] == whole[6:]
    local = _score_video(task, cfg, det)[0]
    chunked = video_outcome("h", [score_frames(p, cfg, det) for p in parts])
    assert chunked.verdict == local.verdict and chunked.kind == "video"
    assert chunked.p_fake == pytest.approx(local.p_fake, abs=1e-6)
    assert {k: v for k, v in chunked.summary.items() if k not in ("mean", "max")} == \
        {k: v for k, v in local.summary.items() if k not in ("mean", "max")}
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    out = video_outcome("b", [score_frames(p, cfg, det) for p in split_video(VideoTask("b", str(bad)), cfg, 2)])
    assert not out.ok and "cannot open video" in out.reason


# ------------------------------------------------------------------------------------------ a real cluster

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head and one worker node on loopback ports (two `ray start` processes), torn down afterwards."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]' (make test installs it)")
    ray_bin = Path(sys.executable).parent / "ray"
    port = _free_port()
    tmp = tmp_path_factory.mktemp("ray")
    # A HOME of its own: a Ray token left in ~/.ray by an earlier local instance would make the head demand a
    # token the joining worker does not send.
    (tmp / "home").mkdir()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HOME": str(tmp / "home"),
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    common = ["--num-cpus", "1", "--object-store-memory", str(80 * 2**20), "--disable-usage-stats"]
    def ray_cmd(*args):
        r = subprocess.run([str(ray_bin), *args], env=env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, f"ray {' '.join(args)} failed:\n{r.stderr[-3000:]}"

    ray_cmd("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--include-dashboard", "false",
            "--temp-dir", str(tmp), *common)
    address = f"127.0.0.1:{port}"
    try:
        ray_cmd("start", "--address", address, "--node-ip-address", "127.0.0.1", *common)
        import ray

        ray.init(address=address, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2  # a head and a worker node
        yield address
    finally:
        import ray

        ray.shutdown()
        subprocess.run([str(ray_bin), "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def _folder(root: Path, n_images: int) -> Path:
    for i in range(n_images):
        _img(root / f"img{i:03d}.png", 100 + i)
    (root / "dup.png").write_bytes((root / "img000.png").read_bytes())
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (root / "notes.txt").write_text("not media")
    _video(root / "clip.avi", frames=30, fps=10.0)
    return root


def _rows(engine, aid) -> dict[str, dict]:
    _, rows = audit_rows(engine, aid)
    return {r["path"]: r for r in rows}


@pytest.mark.slow
def test_ray_engine_writes_the_local_engines_rows(ray_cluster, tiny_detector, tmp_path):
    from detector.audit.ray_engine import RayConfig

    folder, det = tiny_detector
    media = _folder(tmp_path / "media", 8)
    cfg = AuditConfig(batch=2, frames_per_second=3)
    loader = functools.partial(Detector.load, folder / "det.json", device="cpu")
    local = open_db(tmp_path / "local.sqlite")
    aid = run_audit(local, media, detector=det, cfg=cfg, progress=False)
    on_ray = open_db(tmp_path / "ray.sqlite")
    aid_r = run_audit(on_ray, media, detector=det, cfg=cfg, loader=loader, progress=False,
                      ray=RayConfig(address=ray_cluster, actors=2))
    assert aid_r == aid
    a, b = _rows(local, aid), _rows(on_ray, aid)
    assert set(a) == set(b) and len(a) == 12
    for path in a:
        for k in ("state", "reason", "content_hash", "kind", "verdict", "deduplicated"):
            assert a[path].get(k) == b[path].get(k), (path, k)
        if a[path].get("p_fake") is not None:
            assert b[path]["p_fake"] == pytest.approx(a[path]["p_fake"], abs=1e-4), path
    assert b["clip.avi"]["kind"] == "video" and b["dup.png"]["deduplicated"] + b["img000.png"]["deduplicated"] == 1
    # interchangeable: the local engine on the Ray engine's database has nothing left to do
    run_audit(on_ray, media, detector=det, cfg=cfg, progress=False)
    with Session(on_ray) as s:
        assert s.scalar(select(func.count()).select_from(FileRow)) == 12
        assert s.scalar(select(func.count()).select_from(ResultRow)) == 9  # 8 images (one shared) + the video


def _actor_pids() -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if "ScoringActor" in line]


@pytest.mark.slow
def test_an_actor_killed_mid_run_loses_and_duplicates_nothing(ray_cluster, tiny_detector, tmp_path):
    from detector.audit.ray_engine import RayConfig

    folder, det = tiny_detector
    media = _folder(tmp_path / "media", 24)
    cfg = AuditConfig(batch=2, frames_per_second=3)
    loader = functools.partial(Detector.load, folder / "det.json", device="cpu")
    engine = open_db(tmp_path / "kill.sqlite")
    killed = []

    def kill_one(counts):  # on the driver, once the first outcomes are stored: kill -9 a scoring actor
        if not killed and counts["scored"] >= 2:
            pids = _actor_pids()
            assert pids, "no scoring actor process found"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    aid = run_audit(engine, media, detector=det, cfg=cfg, loader=loader, progress=False, on_progress=kill_one,
                    ray=RayConfig(address=ray_cluster, actors=2))
    assert killed
    rows = _rows(engine, aid)
    assert len(rows) == 28  # 24 images, a duplicate, a broken file, a text file, a video: each once
    assert sum(r["state"] == "scored" for r in rows.values()) == 26
    with Session(engine) as s:
        paths = s.scalars(select(FileRow.path).where(FileRow.audit_id == aid)).all()
        assert len(paths) == len(set(paths))
    run_audit(engine, media, detector=det, cfg=cfg, loader=loader, progress=False,
              ray=RayConfig(address=ray_cluster, actors=1))  # a rerun: nothing new, nothing twice
    assert _rows(engine, aid) == rows
    assert np.isfinite([r["p_fake"] for r in rows.values() if r.get("p_fake") is not None]).all()


@pytest.mark.slow
def test_the_command_runs_against_the_cluster(ray_cluster, tiny_detector, tmp_path):
    folder, _ = tiny_detector
    media = _folder(tmp_path / "media", 3)
    db = tmp_path / "cli.sqlite"
    cmd = [str(Path(sys.executable).parent / "resynth"), "audit", str(media), "--engine", "ray", "--ray-address",
           ray_cluster, "--actors", "2", "--batch", "2", "--detector", str(folder / "det.json"), "--db", str(db),
           "--out", str(tmp_path / "report.csv")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = (tmp_path / "report.csv").read_text()
    assert all(name in report for name in ("img000.png", "dup.png", "clip.avi", "broken.jpg", "notes.txt"))
    assert '"done"' in r.stdout or "'done'" in r.stdout or "done" in r.stdout


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch, tiny_detector, tmp_path, capsys):
    from detector.audit.ray_engine import RayUnavailable, import_ray
    from detector.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(RayUnavailable, match=r"pip install -e \"\.\[ray\]\""):
        import_ray()
    media = _folder(tmp_path / "media", 1)
    rc = main(["audit", str(media), "--engine", "ray", "--detector", str(tiny_detector[0] / "det.json"),
               "--db", str(tmp_path / "x.sqlite")])
    assert rc == 2 and "needs Ray" in capsys.readouterr().err
