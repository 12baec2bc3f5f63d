"""The HTTP layer as an attacker meets it (api/protocol.py), against a live server on loopback: malformed requests
get JSON errors, connections that never finish their request head cannot lock others out, and at the limit a
newcomer is told to retry later, in JSON."""

import json
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI

from api.cli import server_config
from api.settings import Settings

LIMIT = 4


@pytest.fixture
def server():
    app = FastAPI()

    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    @app.post("/echo")
    async def echo(payload: dict):
        return payload

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = Settings(max_connections=LIMIT, header_timeout_s=1.0, retry_after_s=7)
    srv = uvicorn.Server(server_config(app, settings, log_level="warning", timeout_keep_alive=30))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield port
    srv.should_exit = True
    thread.join(10)


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    return s


def _response(s: socket.socket) -> tuple[int, dict, dict]:
    """Read one whole response (the server closes or sends Content-Length): status, headers, JSON body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, json.loads(body) if body else {}


def _get(port: int, path: str = "/healthz") -> tuple[int, dict, dict]:
    with _connect(port) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return _response(s)


@pytest.mark.parametrize("request_bytes", [
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}",   # an unreadable Content-Length
    b"GET /" + b"a" * 100_000,                                    # a request line past the limit, unfinished
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 200_000,          # a 200 KB header, unfinished
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # TLS spoken to plain HTTP
])
def test_malformed_requests_get_a_json_400(server, request_bytes):
    with _connect(server) as s:
        try:
            s.sendall(request_bytes)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before it has read everything
        status, headers, body = _response(s)
    assert status == 400 and headers["content-type"] == "application/json"
    assert body["code"] == "bad_request" and "malformed" in body["message"]
    assert _get(server)[0] == 200  # and the service goes on


def test_connections_without_a_request_head_cannot_lock_anyone_out(server):
    loris = []
    for _ in range(LIMIT * 2):  # twice the limit, each sending half a request head and then nothing
        s = _connect(server)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        loris.append(s)
    status, _, body = _get(server)
    assert status == 200 and body == {"ok": True}  # healthz still answers: the oldest waiting were evicted
    evicted = 0
    for s in loris:
        s.settimeout(20)
        st, headers, b = _response(s)  # each one is closed with a JSON 408: evicted, or at its head timeout
        assert st == 408 and headers["content-type"] == "application/json" and b["code"] == "request_timeout"
        evicted += "make room" in b["message"]
        s.close()
    assert evicted >= LIMIT  # the newcomers pushed the oldest out, not the other way round


def test_a_head_that_never_completes_gets_a_408(server):
    with _connect(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        status, _, body = _response(s)  # arrives after the 1 s head timeout, without more bytes sent
    assert status == 408 and "did not arrive within 1 s" in body["message"]


def test_at_the_limit_of_requests_in_progress_a_newcomer_gets_a_json_503(server):
    busy = []
    for _ in range(LIMIT):  # requests in progress: heads complete, bodies still arriving
        s = _connect(server)
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{")
        busy.append(s)
    time.sleep(0.3)  # let the server read the heads (ordering, not timing, is asserted)
    status, headers, body = _get(server)
    assert status == 503 and headers["retry-after"] == "7" and headers["content-type"] == "application/json"
    assert body["code"] == "overloaded"
    for s in busy:  # and the requests in progress complete
        s.sendall(b'"a": 1}' + b" " * 12)
        st, _, b = _response(s)
        assert st == 200 and b == {"a": 1}
        s.close()
    assert _get(server)[0] == 200


def test_an_upgrade_request_gets_the_apps_answer_not_uvicorns_bare_403(server):
    """The service speaks no WebSocket: an upgrade request is an ordinary request to the app (uvicorn's WebSocket
    protocol would refuse it with an empty 403 of its own)."""
    with _connect(server) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        status, headers, body = _response(s)
    assert status == 200 and headers["content-type"] == "application/json" and body == {"ok": True}
