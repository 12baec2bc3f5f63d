import os
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.app import create_app
from api.settings import Settings
from detector.audit import AuditConfig, FileRow, audit_id_for, open_db, run_audit


def _media(root, n=4):
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16), dtype=np.uint8)).save(root / f"{i}.png")
    (root / "readme.txt").write_text("x")


def _app(tiny_detector, tmp_path, root):
    s = Settings(audit_root=str(root) if root else None, audit_db=str(tmp_path / "audits.sqlite"), torch_threads=1)
    return create_app(s, loader=lambda _: tiny_detector[1])


def _wait_done(client, aid):
    deadline = time.monotonic() + 120
    while True:
        p = client.get(f"/v1/audits/{aid}").json()
        if p["status"] in ("done", "failed"):
            return p
        assert time.monotonic() < deadline, p
        time.sleep(0.1)


def test_audit_over_http(tiny_detector, tmp_path):
    root = tmp_path / "allowed"
    _media(root / "batch1")
    with TestClient(_app(tiny_detector, tmp_path, root)) as c:
        r = c.post("/v1/audits", json={"folder": "batch1"})
        assert r.status_code == 202, r.text
        aid = r.json()["id"]
        p = _wait_done(c, aid)
        assert p["status"] == "done" and p["scored"] == 4 and p["skipped"] == 1
        html = c.get(f"/v1/audits/{aid}/report")
        assert html.status_code == 200 and "resynth audit" in html.text and "readme.txt" in html.text
        js = c.get(f"/v1/audits/{aid}/report?format=json").json()
        assert len(js["files"]) == 5
        # no server path reaches the client: the folder is named relative to the audit root
        assert js["audit"]["folder"] == "batch1" and "root" not in js["audit"]
        for text in (html.text, c.get(f"/v1/audits/{aid}/report?format=json").text,
                     c.get(f"/v1/audits/{aid}/report?format=csv").text, c.get(f"/v1/audits/{aid}").text):
            assert str(tmp_path) not in text
        assert "<code>batch1</code>" in html.text
        assert c.get(f"/v1/audits/{aid}/report?format=csv").text.startswith("path,kind")
        assert c.get("/v1/audits/nope").json()["code"] == "not_found"
        assert c.get(f"/v1/audits/{aid}/report?format=pdf").status_code == 422


def test_path_restriction(tiny_detector, tmp_path):
    root = tmp_path / "allowed"
    _media(root / "ok")
    outside = tmp_path / "secret"
    _media(outside)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    with TestClient(_app(tiny_detector, tmp_path, root)) as c:
        for folder in ("../secret", str(outside), "escape", "ok/../../secret", "/etc"):
            r = c.post("/v1/audits", json={"folder": folder})
            assert r.status_code == 403 and r.json()["code"] == "forbidden_path", (folder, r.text)
        assert c.post("/v1/audits", json={"folder": "missing"}).status_code == 404
        assert c.post("/v1/audits", json={"folder": "ok", "frames_per_second": -1}).status_code == 422
    with TestClient(_app(tiny_detector, tmp_path, None)) as c:
        assert c.post("/v1/audits", json={"folder": "ok"}).json()["code"] == "audits_disabled"


def test_unfinished_audit_resumes_on_start(tiny_detector, tmp_path):
    root = tmp_path / "allowed"
    _media(root / "f", n=6)
    engine = open_db(tmp_path / "audits.sqlite")
    from detector.audit import AuditInterrupted

    calls = {"n": 0}

    def stop_after_two(_counts):
        calls["n"] += 1
        if calls["n"] == 2:
            raise AuditInterrupted("simulated restart")

    cfg = AuditConfig(batch=1, confine_to=os.path.realpath(root))  # as the service starts its audits
    with pytest.raises(AuditInterrupted):
        run_audit(engine, root / "f", detector=tiny_detector[1], cfg=cfg, progress=False, on_progress=stop_after_two)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(FileRow)) == 2
    aid = audit_id_for(Path(os.path.realpath(root / "f")), tiny_detector[1].model_id, cfg)
    with TestClient(_app(tiny_detector, tmp_path, root)) as c:  # the lifespan queues it again
        p = _wait_done(c, aid)
        assert p["status"] == "done" and p["files_recorded"] == 7
