"""The outermost layer of the service: every request is counted, and its body is received in full, within a
byte limit and a time limit, before any route sees it.

So a slow or oversized upload never holds a scoring slot (slots are taken by the routes, after this), every
route has a body limit (the image route its own, the JSON routes a small one), a body that does not arrive in
time gets 408, and a client that goes away mid-upload is logged as such (status 499 in the metrics, the
nginx convention), not as a server error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger("resynth.api")

Scope, Message = dict, dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
CLIENT_GONE = 499


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("resynth_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("resynth_request_latency_seconds", "Request latency", ["route"],
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=self.registry)
        self.inflight = Gauge("resynth_inflight_requests", "Images being scored now", registry=self.registry)
        self.batch_size = Histogram("resynth_batch_size", "Images scored together (micro-batching)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.scored = Counter("resynth_images_scored_total", "Images scored", ["verdict"], registry=self.registry)
        self.audits = Gauge("resynth_audits", "Audits through the service", ["state"], registry=self.registry)


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _ClientGone(Exception):
    pass


class RequestGuard:
    """Pure ASGI middleware; `body_limit(path)` gives the largest body accepted on a path."""

    def __init__(self, app, *, body_limit: Callable[[str], int], timeout_s: float, metrics: Metrics,
                 routes: Callable[[], set[str]] = set):
        self.app, self.body_limit, self.timeout_s, self.metrics = app, body_limit, timeout_s, metrics
        self._routes, self._known = routes, None  # the app's parameter-free paths, read once on first use

    def _label(self, scope: Scope) -> str:
        """The route's path for the metrics (for requests refused before routing: the path if it is a route)."""
        route = scope.get("route")
        if route is not None:
            return route.path
        if self._known is None:
            self._known = self._routes()
        path = scope.get("path", "")
        return path if path in self._known else "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), [None]

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            body = await self._receive_body(scope, receive)
        except _Refused as r:
            response = JSONResponse({"code": r.code, "message": r.message}, status_code=r.status,
                                    headers={"Connection": "close"})
            await response(scope, receive, send_counted)
        except _ClientGone:
            status[0] = CLIENT_GONE
            log.info("client %s went away during the upload to %s", _peer(scope), scope.get("path"))
        else:
            delivered = False

            async def replay() -> Message:
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # after the body: only the disconnect is left to wait for

            await self.app(scope, replay, send_counted)
        finally:
            route = self._label(scope)
            self.metrics.requests.labels(route, scope.get("method", ""), str(status[0] or 500)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)

    async def _receive_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.body_limit(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _Refused(413, "payload_too_large", f"request body of {int(declared)} bytes exceeds the limit of "
                                                     f"{limit} bytes on this route")
        chunks, total = [], 0
        with anyio.move_on_after(self.timeout_s) as deadline:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk = message.get("body", b"")
                total += len(chunk)
                if total > limit:
                    raise _Refused(413, "payload_too_large", f"request body exceeds the limit of {limit} bytes on "
                                                             "this route")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        assert deadline.cancelled_caught
        raise _Refused(408, "request_timeout", f"the request body did not arrive within {self.timeout_s:g} s "
                                               f"({total} bytes received)")


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "?"
