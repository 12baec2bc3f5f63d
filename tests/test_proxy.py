"""The reverse proxy of the compose file (nginx.conf), as an attacker meets it: the shipped configuration checked by
nginx itself, then run on loopback in front of a stand-in service. Its own refusals are JSON in the service's shape,
the service's answers pass through as written, half-open connections do not lock a normal client out, and one
address cannot take every scoring slot."""

import json
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
import uvicorn
import yaml
from fastapi import FastAPI, Request

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="needs nginx (Debian nginx-light; `make test` installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render(tmp: Path, *, listen: int, upstream: int) -> Path:
    """The shipped nginx.conf with only its addresses and writable paths moved to this test's."""
    text = (ROOT / "nginx.conf").read_text()
    for needle in ("server resynth:8000 ", "listen 8080;", "pid /tmp/nginx.pid;", "http {\n"):
        assert needle in text, f"nginx.conf no longer holds {needle!r}: update the test's rendering"
    text = (text.replace("server resynth:8000 ", f"server 127.0.0.1:{upstream} ")
            .replace("listen 8080;", f"listen 127.0.0.1:{listen};")
            .replace("pid /tmp/nginx.pid;", f"pid {tmp}/nginx.pid;")
            .replace("access_log /dev/stdout;", "access_log off;")
            .replace("http {\n", "http {\n" + "".join(f"    {k}_temp_path {tmp}/{k};\n" for k in
                                                      ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")), 1))
    conf = tmp / "nginx.conf"
    conf.write_text(text)
    return conf


@pytest.fixture
def upstream():
    """A stand-in for `resynth serve`: /healthz, and /v1/detect that reads the body and waits ?sleep= seconds."""
    app = FastAPI()

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.post("/v1/detect")
    async def detect(request: Request):
        body = await request.body()
        await anyio.sleep(float(request.query_params.get("sleep", 0)))
        return {"bytes": len(body)}

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "upstream did not start"
        time.sleep(0.05)
    yield port
    srv.should_exit = True
    thread.join(10)


def _start_nginx(tmp: Path, upstream_port: int):
    port = _free_port()
    conf = render(tmp, listen=port, upstream=upstream_port)
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port, proc
        except OSError:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)


@pytest.fixture
def proxy(tmp_path, upstream):
    port, proc = _start_nginx(tmp_path, upstream)
    yield port
    proc.terminate()
    proc.wait(10)


def _exchange(port: int, raw: bytes, timeout: float = 20) -> tuple[int | None, dict, bytes]:
    """Send raw bytes, read until the server closes or a whole response is in: status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                headers = {k.lower(): v.strip() for k, v in
                           (ln.split(":", 1) for ln in head.decode("latin-1").split("\r\n")[1:])}
                if len(body) >= int(headers.get("content-length", 10**9)):
                    break
    if not data:
        return None, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _get(port: int, path: str = "/healthz", extra: str = "") -> tuple[int | None, dict, bytes]:
    return _exchange(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n".encode())


def _assert_json_error(status, headers, body, expected: int) -> dict:
    assert status == expected, (status, body[:300])
    assert headers["content-type"].startswith("application/json"), headers
    doc = json.loads(body)
    assert set(doc) == {"code", "message"} and doc["message"], doc
    return doc


@needs_nginx
def test_the_shipped_configuration_passes_nginx_t(tmp_path):
    r = subprocess.run([NGINX, "-t", "-c", str(render(tmp_path, listen=_free_port(), upstream=9)), "-p",
                        str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    broken = tmp_path / "broken.conf"
    broken.write_text((tmp_path / "nginx.conf").read_text().replace("client_header_timeout 10s;",
                                                                     "client_header_timeout ten;"))
    r = subprocess.run([NGINX, "-t", "-c", str(broken), "-p", str(tmp_path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "client_header_timeout" in r.stderr  # the check really checks


@pytest.mark.slow
@needs_nginx
def test_the_service_is_reached_and_its_answers_pass_through(proxy):
    status, headers, body = _get(proxy)
    assert status == 200 and json.loads(body) == {"ok": True}
    status, _, body = _get(proxy, "/nowhere")   # the service's own 404, untouched by the proxy
    assert status == 404 and json.loads(body) == {"detail": "Not Found"}
    img = b"\x89PNG" + b"\0" * 5000
    status, _, body = _exchange(proxy, b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                                       b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(img) + img)
    assert status == 200 and json.loads(body) == {"bytes": len(img)}


@pytest.mark.slow
@needs_nginx
@pytest.mark.parametrize(("raw", "expected"), [
    (b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: 12000000\r\n\r\n", 413),   # body over 11 MB
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),                   # request line over 16 KB
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 400),  # a header over 16 KB
    (b"GARBAGE\r\n\r\n", 400),                                                             # no request line at all
    (b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),         # unreadable length
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 403),              # internal only
])
def test_the_proxys_own_refusals_are_json(proxy, raw, expected):
    _assert_json_error(*_exchange(proxy, raw), expected)


@pytest.mark.slow
@needs_nginx
def test_a_service_that_does_not_answer_gets_a_json_503_with_retry_after(tmp_path):
    port, proc = _start_nginx(tmp_path, _free_port())   # nothing listens upstream
    try:
        status, headers, body = _get(port)
        assert _assert_json_error(status, headers, body, 503)["code"] == "unavailable"
        assert headers["retry-after"].isdigit()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
@needs_nginx
def test_half_open_connections_do_not_lock_out_a_normal_client(proxy):
    """300 connections that never finish their request head: a normal client is still served at once, and the
    stalled ones are cut at client_header_timeout (10 s) without reaching the service."""
    stalled = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", proxy), timeout=30)
            s.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\n")
            stalled.append(s)
        t0 = time.monotonic()
        status, _, body = _get(proxy)
        assert status == 200 and json.loads(body) == {"ok": True}
        # every stalled connection is closed by the proxy; none waits past the header timeout by much
        for s in stalled[:20]:
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
        assert time.monotonic() - t0 < 25
    finally:
        for s in stalled:
            s.close()


@pytest.mark.slow
@needs_nginx
def test_one_address_cannot_take_every_scoring_slot(proxy):
    """Past 16 requests at once from one address on /v1/, the proxy answers 503 with Retry-After (the service
    holds 32 images in flight: another address still finds room)."""
    raw = (b"POST /v1/detect?sleep=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n\r\nabcd")
    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(lambda _: _exchange(proxy, raw), range(24)))
    codes = [a[0] for a in answers]
    assert codes.count(200) >= 16 and codes.count(503) >= 1 and set(codes) <= {200, 503}, codes
    for status, headers, body in answers:
        if status == 503:
            assert _assert_json_error(status, headers, body, 503)["code"] == "overloaded"
            assert headers["retry-after"] == "2"


def test_compose_puts_the_proxy_in_front_of_an_internal_service():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services, networks = compose["services"], compose["networks"]
    proxy, svc = services["proxy"], services["resynth"]
    assert proxy["image"].startswith("nginx:") and "profiles" not in proxy
    assert any(v.startswith("./nginx.conf:/etc/nginx/nginx.conf") and v.endswith(":ro") for v in proxy["volumes"])
    assert proxy["ports"] == ["127.0.0.1:8000:8080"]
    assert "ports" not in svc                                   # reached through the proxy only
    internal = list(svc["networks"])
    assert internal and all(networks[n].get("internal") for n in internal)
    assert set(internal) <= set(proxy["networks"]) and len(proxy["networks"]) > len(internal)
    assert "resynth" in proxy["depends_on"]
