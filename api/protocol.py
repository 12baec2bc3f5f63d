"""The HTTP layer under the app: uvicorn's h11 protocol with the service's error contract where the app cannot
answer, because no request has reached it yet.

- A request that h11 cannot parse (a `Content-Length: abc`, a request line or headers past the size limit)
  gets a JSON 400 `{"code": "bad_request", ...}`, not uvicorn's plain text.
- A connection that has not sent a complete request head within `header_timeout_s` (a slow-loris client) gets a
  JSON 408 and is closed; an idle keep-alive connection is closed by uvicorn's keep-alive timer as before.
- At most `max_connections` connections are held. One more arriving at the limit first evicts the oldest
  connection still waiting for its request head (it gets a JSON 408); only when every connection is a request
  in progress does the newcomer get a JSON 503 with `Retry-After`. So connections that never finish their
  headers cannot lock anyone out, `/healthz` included.

The app's own limits (body size and time, scoring slots, the audit queue) stay in api/guard.py and the routes.
"""

from __future__ import annotations

import json
import logging
import time

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("resynth.api")


def raw_response(status: int, reason: str, code: str, message: str, headers: dict | None = None) -> bytes:
    """A complete HTTP/1.1 response with the service's error body, closing the connection."""
    body = json.dumps({"code": code, "message": message}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """H11Protocol with JSON errors, a request-head timeout and eviction at the connection limit (module
    docstring). `guarded_protocol` makes the class with the service's settings."""

    max_connections: int = 128     # connections held at once
    header_timeout_s: float = 10.0  # seconds a connection may take to send a complete request head
    retry_after_s: int = 2          # Retry-After of the 503 at the limit

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.opened_at = time.monotonic()
        self.head_timer = None
        self._arm_head_timer()
        if len(self.connections) > self.max_connections and not self._evict_one():
            log.warning("connection limit (%d) reached: 503", self.max_connections)
            self._refuse(503, "Service Unavailable", "overloaded",
                         f"the service holds its limit of {self.max_connections} connections; retry later",
                         {"retry-after": str(self.retry_after_s)})

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            self._cancel_head_timer()
        elif self.waiting_for_head:
            self._arm_head_timer()
        else:
            self._cancel_head_timer()

    @property
    def waiting_for_head(self) -> bool:
        """No request of this connection is in progress: it has not sent (all of) a request head yet."""
        return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

    def send_400_response(self, msg: str) -> None:
        self._cancel_head_timer()
        self._refuse(400, "Bad Request", "bad_request",
                     "malformed HTTP request (request line, headers or Content-Length unreadable or too large)")

    # ------------------------------------------------------------------ helpers
    def _refuse(self, status: int, reason: str, code: str, message: str, headers: dict | None = None) -> None:
        if not self.transport.is_closing():
            self.transport.write(raw_response(status, reason, code, message, headers))
            self.transport.close()

    def _arm_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.header_timeout_s, self._head_late)

    def _cancel_head_timer(self) -> None:
        timer, self.head_timer = getattr(self, "head_timer", None), None
        if timer is not None:
            timer.cancel()

    def _head_late(self) -> None:
        self.head_timer = None
        if self.waiting_for_head:  # connected, or between requests with part of a head sent, and nothing since
            self._refuse(408, "Request Timeout", "request_timeout",
                         f"the request head did not arrive within {self.header_timeout_s:g} s")

    def _evict_one(self) -> bool:
        """Close the oldest other connection still waiting for its request head; whether there was one."""
        waiting = [c for c in self.connections
                   if c is not self and isinstance(c, GuardedH11Protocol) and c.waiting_for_head
                   and not c.transport.is_closing()]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.opened_at)
        log.warning("connection limit (%d) reached: closing the oldest connection without a request",
                    self.max_connections)
        oldest._cancel_head_timer()
        oldest._refuse(408, "Request Timeout", "request_timeout",
                       "closed to make room: no complete request head was received on this connection")
        return True


def guarded_protocol(*, max_connections: int, header_timeout_s: float, retry_after_s: int) -> type[H11Protocol]:
    """The protocol class with these settings (uvicorn's `http=`)."""
    return type("ResynthH11Protocol", (GuardedH11Protocol,),
                {"max_connections": max_connections, "header_timeout_s": header_timeout_s,
                 "retry_after_s": retry_after_s})
