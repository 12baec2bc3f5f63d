"""The service as a hostile client tries it: links out of the audit root, slow and vanishing uploads, audit
floods, malformed requests; and audit workers that must not outlive a killed audit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.app import create_app
from api.settings import Settings
from detector.audit import AuditConfig, ResultRow, audit_rows, open_db, run_audit, walk
from detector.audit.walk import OUTSIDE, Confinement, OutsideRoot, file_hash, walk_media

ROOT = Path(__file__).resolve().parent.parent


def _img(path: Path, seed: int, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    """An audit root with an audited folder full of links, and a secret folder beside the root."""
    secret = tmp_path / "secret"
    _img(secret / "photo.png", 1)
    (secret / "shadow").write_text("root:*:0:0")
    _img(secret / "sub" / "deep.png", 2)
    root = tmp_path / "root"
    media = root / "media"
    _img(media / "a.png", 3)
    _img(root / "elsewhere" / "inside.png", 4)
    (media / "file_out.png").symlink_to(secret / "photo.png")                  # file link out
    (media / "dir_out").symlink_to(secret, target_is_directory=True)           # directory link out
    (media / "rel_out.png").symlink_to(Path("..") / ".." / "secret" / "photo.png")  # relative escape
    (media / "up").symlink_to("..", target_is_directory=True)                  # .. (inside the root: media/..)
    (media / "upup").symlink_to("../..", target_is_directory=True)             # .. .. leaves the root
    (media / "self").symlink_to(".", target_is_directory=True)                 # loop
    (media / "in_link.png").symlink_to(root / "elsewhere" / "inside.png")      # a link that stays inside
    os.mkfifo(media / "pipe.png")                                              # never opened
    return root, media, secret


def _secret_hashes(secret: Path) -> set[str]:
    return {file_hash(p) for p in secret.rglob("*") if p.is_file()}


def test_confined_walk_never_leaves_the_root(tree):
    root, media, secret = tree
    entries = {e.rel: e for e in walk_media(media, guard=Confinement(root))}
    for name in ("file_out.png", "dir_out", "rel_out.png", "upup"):
        assert entries[name].reason == OUTSIDE and entries[name].path is None and entries[name].size is None, name
    assert not any(rel.startswith(("dir_out/", "upup/")) for rel in entries)  # nothing listed through them
    assert entries["self"].reason.startswith("symlink loop")
    assert entries["pipe.png"].reason == "not a regular file"
    assert entries["in_link.png"].kind == "image" and entries["up/elsewhere/inside.png"].kind == "image"
    # Without a root (the CLI's default) links are followed, loops still cut.
    free = {e.rel: e for e in walk_media(media)}
    assert free["file_out.png"].kind == "image" and "dir_out/shadow" in free and free["self"].kind == "error"


def test_a_confined_walk_never_looks_at_what_lies_outside(tree, monkeypatch):
    """Not even a stat: every path the walk hands to the system lies inside the root (os.path.realpath would
    lstat a link's target outside it)."""
    root, media, secret = tree
    guard = Confinement(root)  # the operator's root itself is resolved once, before any client path
    touched = []
    for name in ("stat", "lstat", "readlink", "open", "listdir", "scandir"):
        real = getattr(os, name)

        def spy(p, *a, _real=real, **k):
            touched.append(p)
            return _real(p, *a, **k)

        monkeypatch.setattr(os, name, spy)
    entries = {e.rel: e for e in walk_media(media, guard=guard)}
    monkeypatch.undo()
    assert entries["dir_out"].reason == OUTSIDE and entries["in_link.png"].kind == "image"
    paths = [os.path.abspath(p) for p in touched if isinstance(p, (str, os.PathLike))
             and not str(p).startswith("/proc/self/fd/")]  # the opened descriptor's own path, checked after opening
    assert paths and all(guard.inside(p) for p in paths), [p for p in paths if not guard.inside(p)]
    assert not any(str(secret) in p for p in paths)
    # and the resolution agrees with the kernel's wherever it stays inside
    assert guard.check(media / "up" / "elsewhere" / "inside.png") == os.path.realpath(root / "elsewhere/inside.png")
    assert guard.check(media / "in_link.png") == os.path.realpath(root / "elsewhere" / "inside.png")
    for out in ("rel_out.png", "upup", "dir_out/shadow", "file_out.png"):
        with pytest.raises(OutsideRoot):
            guard.check(media / out)
    with pytest.raises(OutsideRoot):
        guard.check(secret / "photo.png")


def test_confined_audit_reads_nothing_outside(tree, tiny_detector, tmp_path):
    root, media, secret = tree
    engine = open_db(tmp_path / "a.sqlite")
    aid = run_audit(engine, media, detector=tiny_detector[1], cfg=AuditConfig(confine_to=str(root)), progress=False)
    _, rows = audit_rows(engine, aid)
    by = {r["path"]: r for r in rows}
    for name in ("file_out.png", "dir_out", "rel_out.png", "upup"):
        assert by[name]["state"] == "skipped" and by[name]["reason"] == OUTSIDE and by[name]["content_hash"] is None
    assert by["a.png"]["state"] == by["in_link.png"]["state"] == "scored"
    report = json.dumps([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
    assert "shadow" not in report and "photo" not in report
    with Session(engine) as s:
        hashes = set(s.scalars(select(ResultRow.content_hash)))
    assert not hashes & _secret_hashes(secret)
    with pytest.raises(OutsideRoot):  # the folder itself must lie under the root
        run_audit(engine, secret, detector=tiny_detector[1], cfg=AuditConfig(confine_to=str(root)), progress=False)


def test_cli_root_option(tree, tiny_detector, tmp_path, capsys):
    from detector.cli import main

    root, media, secret = tree
    base = ["--db", str(tmp_path / "c.sqlite"), "--detector", str(tiny_detector[0] / "det.json"), "--device", "cpu"]
    assert main(["audit", str(media), "--root", str(root), *base, "--out", str(tmp_path / "r.csv")]) == 0
    csv = (tmp_path / "r.csv").read_text()
    assert "dir_out,other,,,skipped,outside the audit root" in csv and "dir_out/shadow" not in csv
    assert main(["audit", str(secret), "--root", str(root), *base]) == 2
    assert "outside the audit root" in capsys.readouterr().err


def test_link_swapped_in_during_the_audit(tmp_path, tiny_detector):
    root, secret = tmp_path / "root", tmp_path / "secret"
    _img(secret / "photo.png", 1)
    (root / "0.txt").parent.mkdir(parents=True)
    (root / "0.txt").write_text("recorded first")
    _img(root / "1.png", 2)

    def swap(_counts):  # after the walk listed 1.png as a regular file, before it is hashed
        if (root / "1.png").is_symlink():
            return
        (root / "1.png").unlink()
        (root / "1.png").symlink_to(secret / "photo.png")

    engine = open_db(tmp_path / "s.sqlite")
    aid = run_audit(engine, root, detector=tiny_detector[1], cfg=AuditConfig(confine_to=str(root)), progress=False,
                    on_progress=swap)
    by = {r["path"]: r for r in audit_rows(engine, aid)[1]}
    assert by["1.png"]["state"] == "skipped" and by["1.png"]["reason"] == OUTSIDE


def test_descriptor_check_catches_a_swap_after_the_path_check(tmp_path, monkeypatch):
    """A folder swapped for a link between the path check and the open is caught on the opened descriptor."""
    root, secret = tmp_path / "root", tmp_path / "secret"
    _img(secret / "photo.png", 1)
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "photo.png").write_bytes(b"inside")
    guard = Confinement(root)
    assert walk.read_media(root / "sub" / "photo.png", guard) == b"inside"
    checked = guard.check(root / "sub" / "photo.png")
    (root / "sub" / "photo.png").unlink()
    (root / "sub").rmdir()
    (root / "sub").symlink_to(secret, target_is_directory=True)
    monkeypatch.setattr(guard, "check", lambda path: checked)  # the path check ran before the swap
    with pytest.raises(OutsideRoot):
        guard.open(checked)


# ------------------------------------------------------------------------------------------ over HTTP

def _app(tiny_detector, tmp_path, root, **kw):
    s = Settings(audit_root=str(root), audit_db=str(tmp_path / "audits.sqlite"), torch_threads=1, **kw)
    return create_app(s, loader=lambda _: tiny_detector[1])


def _wait(client, aid):
    deadline = time.monotonic() + 120
    while (p := client.get(f"/v1/audits/{aid}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, p
        time.sleep(0.05)
    return p


def test_audit_over_http_stays_in_its_root(tree, tiny_detector, tmp_path):
    root, media, secret = tree
    with TestClient(_app(tiny_detector, tmp_path, root)) as c:
        r = c.post("/v1/audits", json={"folder": "media"})
        assert r.status_code == 202, r.text
        assert r.json()["folder"] == "media" and str(tmp_path) not in r.text  # no server paths given out
        assert _wait(c, r.json()["id"])["status"] == "done"
        js = c.get(f"/v1/audits/{r.json()['id']}/report?format=json").json()
        html = c.get(f"/v1/audits/{r.json()['id']}/report").text
    reasons = {f["path"]: f["reason"] for f in js["files"]}
    assert reasons["dir_out"] == reasons["file_out.png"] == reasons["rel_out.png"] == OUTSIDE
    assert "shadow" not in html and "shadow" not in json.dumps(js)
    assert not {f["content_hash"] for f in js["files"]} & _secret_hashes(secret)


def test_audit_flood_is_bounded(tiny_detector, tmp_path):
    root = tmp_path / "root"
    for i in range(20):
        _img(root / f"f{i:02d}" / "x.png", i)
    with TestClient(_app(tiny_detector, tmp_path, root, max_inflight=2, max_audits=1, audit_queue=2)) as c:
        cap = c.app.state.capacity
        holders = [object(), object()]
        for h in holders:  # every scoring slot busy: no audit can start while the flood arrives
            c.portal.call(cap.acquire_on_behalf_of_nowait, h)
        answers = [c.post("/v1/audits", json={"folder": f"f{i:02d}"}) for i in range(20)]
        accepted = [a.json()["id"] for a in answers if a.status_code == 202]
        refused = [a for a in answers if a.status_code != 202]
        assert len(accepted) == 3 and {a.json()["status"] for a in answers[:3]} == {"queued"}
        assert all(a.status_code == 503 and a.json()["code"] == "audit_queue_full" and a.headers["retry-after"]
                   for a in refused)
        assert c.post("/v1/audits", json={"folder": "f00"}).status_code == 202  # the same audit: no new place
        for h in holders:
            c.portal.call(cap.release_on_behalf_of, h)
        assert [_wait(c, aid)["status"] for aid in accepted] == ["done"] * 3
        assert c.post("/v1/audits", json={"folder": "f10"}).status_code == 202  # room again


@pytest.mark.parametrize("body,what", [
    ({"folder": "media\u0000x"}, "NUL byte"),
    ({"folder": "media", "frames_per_second": True}, "boolean rate"),
    ({"folder": "media", "frames_per_second": "2"}, "string rate"),
    ({"folder": "media", "surprise": 1}, "unknown field"),
    ({"folder": ""}, "empty folder"),
])
def test_bad_audit_requests_are_422(body, what, tiny_detector, tmp_path):
    (tmp_path / "root" / "media").mkdir(parents=True)
    with TestClient(_app(tiny_detector, tmp_path, tmp_path / "root")) as c:
        r = c.post("/v1/audits", json=body)
        assert r.status_code == 422 and r.json()["code"] == "invalid_request", (what, r.text)


def test_request_contract(tiny_detector, tmp_path):
    (tmp_path / "root" / "media").mkdir(parents=True)
    png = _img(tmp_path / "p.png", 0).read_bytes()
    with TestClient(_app(tiny_detector, tmp_path, tmp_path / "root", max_bytes=20_000)) as c:
        for raw in (b"{not json", b'{"folder": "\xff\xfe"}'):
            r = c.post("/v1/audits", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 422 and r.json()["code"] == "invalid_request", r.text
        r = c.put("/v1/detect", content=png)
        assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["code"] == "method_not_allowed"
        r = c.post("/v1/detect", files=[("file", ("a.png", png, "image/png")), ("file", ("b.png", png, "image/png"))])
        assert r.status_code == 422 and r.json()["code"] == "duplicate_file"
        big = b'{"folder": "' + b"a" * 200_000 + b'"}'  # every route has a byte limit, not only /v1/detect
        r = c.post("/v1/audits", content=big, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["code"] == "payload_too_large"

        def chunks():  # no content-length: refused while streaming
            for _ in range(100):
                yield b" " * 4096

        r = c.post("/v1/audits", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        spec = c.get("/openapi.json").json()
        assert spec["paths"]["/v1/detect"]["post"]["requestBody"]["required"] is True
        assert spec["components"]["schemas"]["AuditRequest"]["additionalProperties"] is False


def test_server_error_names_no_exception(tiny_detector, tmp_path):
    class Broken:
        model_id, info = "broken", {}

        def score(self, *a, **k):
            raise RuntimeError("secret internals at /srv/x")

    s = Settings(audit_db=str(tmp_path / "a.sqlite"), torch_threads=1)
    png = _img(tmp_path / "p.png", 0).read_bytes()
    with TestClient(create_app(s, loader=lambda _: Broken()), raise_server_exceptions=False) as c:
        r = c.post("/v1/detect", content=png, headers={"content-type": "image/png"})
        assert r.status_code == 500 and r.json()["code"] == "internal_error"
        assert "RuntimeError" not in r.text and "secret" not in r.text


# ------------------------------------------------------------------------------------------ a real server

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tiny_detector, tmp_path):
    port = _free_port()
    env = {**os.environ, "RESYNTH_DETECTOR": str(tiny_detector[0] / "det.json"), "RESYNTH_PORT": str(port),
           "RESYNTH_MAX_INFLIGHT": "2", "RESYNTH_BODY_TIMEOUT": "3", "RESYNTH_DEVICE": "cpu",
           "RESYNTH_TORCH_THREADS": "1", "RESYNTH_AUDIT_DB": str(tmp_path / "srv.sqlite")}
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "api.cli", "serve"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    import httpx

    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
        time.sleep(0.2)
    yield base, port, tmp_path / "server.log"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    log.close()


def _slow_upload(port: int, sent: bytes, declared: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
              b"Content-Length: %d\r\n\r\n" % declared + sent)
    return s


def _response(s: socket.socket) -> tuple[int, dict]:
    s.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.mark.slow
def test_slow_clients_do_not_lock_the_service_out(server, tmp_path):
    import httpx

    base, port, log = server
    png = _img(tmp_path / "p.png", 0).read_bytes()
    slow = [_slow_upload(port, png[:10], len(png)) for _ in range(2)]  # as many as there are scoring slots
    try:
        for _ in range(3):  # meanwhile everyone else is served
            r = httpx.post(f"{base}/v1/detect", content=png, headers={"content-type": "image/png"}, timeout=60)
            assert r.status_code == 200, r.text
        for s in slow:  # and the slow bodies get 408 in the error shape
            status, body = _response(s)
            assert status == 408 and body["code"] == "request_timeout"
    finally:
        for s in slow:
            s.close()
    gone = _slow_upload(port, png[:10], len(png))  # a client that vanishes mid-upload
    gone.close()
    deadline = time.monotonic() + 30
    while 'status="499"' not in (metrics := httpx.get(f"{base}/metrics").text):
        assert time.monotonic() < deadline, metrics
        time.sleep(0.1)
    assert 'status="500"' not in metrics and 'route="/v1/detect",status="499"' in metrics
    assert "Traceback" not in log.read_text()


# ------------------------------------------------------------------------------------------ audit workers

def _children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.add(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
def test_workers_die_with_a_killed_audit(tiny_detector, tmp_path):
    root = tmp_path / "many"
    for i in range(200):
        _img(root / f"img{i:03d}.png", 500 + i)
    cmd = [sys.executable, "-m", "api.cli", "audit", str(root), "--db", str(tmp_path / "w.sqlite"), "--batch", "1",
           "--workers", "2", "--detector", str(tiny_detector[0] / "det.json"), "--device", "cpu"]
    log = open(tmp_path / "audit.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while len(kids := _children(proc.pid)) < 3:  # two workers and the resource tracker
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "audit.log").read_text()[-2000:]
            time.sleep(0.1)
        time.sleep(1.0)  # let the workers start scoring
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while alive := {k for k in kids if _alive(k)}:
            if time.monotonic() > deadline:
                for k in alive:
                    os.kill(k, signal.SIGKILL)
                pytest.fail(f"processes {sorted(alive)} outlived their killed audit")
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
