"""A loopback HTTP reverse proxy that injects faults between an S3 client and a server.

Put it in front of SeaweedFS's S3 port and point the client's endpoint at it.
Requests pass through unchanged (the ``Host`` header too, so SigV4 signatures
still verify) unless a :class:`Rule` matches; the first matching rule with hits
left decides what happens to that request:

* ``reset``: read the request (half of its body), then reset the connection
  (TCP RST) without answering: the client sees a connection reset mid-upload.
* ``reset_body``: forward the request, send the response's status, headers
  and half of its body, then reset: a download cut mid-stream.
* ``status``: answer ``status`` (500, 503, 429 ...) with an S3-style XML error
  without forwarding.
* ``delay``: wait ``delay_s`` before forwarding (a slow server; longer than
  the client's read timeout, a timeout).
* ``throttle``: forward, pacing the request and response bodies at
  ``bytes_per_s``.

Besides rules, ``up_bps``/``down_bps`` throttle every byte sent upstream
(request bodies) or downstream (response bodies), shared across connections
like one network link: the overlap benchmark uses that.

Only for loopback tests: bounded by the test's own requests; stops with
:meth:`FaultProxy.stop` (or as a context manager).
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Action = Literal["reset", "reset_body", "status", "delay", "throttle"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}
_ERROR_CODES = {
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}
_SLICE_S = 0.05  # pacing granularity of throttled transfers


@dataclass
class Rule:
    """Which requests to hit and how. ``times`` None: every matching request.

    ``method`` matches the HTTP method exactly; ``path`` is a regular
    expression searched in the request target (path and query), e.g.
    ``r"partNumber="`` for UploadPart or ``r"/seg_\\d+\\.ts$"``.
    """

    action: Action
    method: str | None = None
    path: str | None = None
    times: int | None = 1
    status: int = 503
    delay_s: float = 0.0
    bytes_per_s: int = 0
    hits: int = field(default=0, init=False)

    def matches(self, method: str, target: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        return self.path is None or re.search(self.path, target) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


class TokenBucket:
    """Bytes per second shared by every connection that takes from it (a link)."""

    def __init__(self, bytes_per_s: int) -> None:
        self.rate = bytes_per_s
        self._lock = threading.Lock()
        self._next_free = time.monotonic()

    def take(self, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_free)
            self._next_free = start + n / self.rate
            wait = self._next_free - now
        if wait > 0:
            time.sleep(wait)


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    target: str
    action: str  # "pass" or the rule's action


class FaultProxy:
    """A threaded reverse proxy to ``http://upstream_host:upstream_port`` on a free loopback port."""

    def __init__(
        self,
        upstream_port: int,
        *,
        upstream_host: str = "127.0.0.1",
        up_bps: int | None = None,
        down_bps: int | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rules: list[Rule] = []
        self.log: list[LoggedRequest] = []
        self.up = TokenBucket(up_bps) if up_bps else None
        self.down = TokenBucket(down_bps) if down_bps else None
        # A condition, not a plain lock: wait_for_hits sleeps until a rule acts.
        self._lock = threading.Condition()
        self.in_flight = 0
        self.peak_in_flight = 0  # most requests handled at once: shows a client's concurrency
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fault-proxy", daemon=True
        )
        self._thread.start()

    def add(self, *rules: Rule) -> FaultProxy:
        with self._lock:
            self.rules.extend(rules)
        return self

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.log.clear()
            self.peak_in_flight = self.in_flight

    def hits(self) -> int:
        """Requests a rule acted on so far."""
        with self._lock:
            return sum(rule.hits for rule in self.rules)

    def wait_for_hits(self, count: int = 1, timeout_s: float = 10.0) -> bool:
        """Wait until rules acted on at least ``count`` requests; False if ``timeout_s`` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: sum(rule.hits for rule in self.rules) >= count, timeout_s)

    def choose(self, method: str, target: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if not rule.exhausted and rule.matches(method, target):
                    rule.hits += 1
                    self.log.append(LoggedRequest(method, target, rule.action))
                    self._lock.notify_all()
                    return rule
            self.log.append(LoggedRequest(method, target, "pass"))
            return None

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Reset(Exception):
    """Raised inside the handler after the connection was reset on purpose."""


class _ProxyHandler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as real S3 endpoints do

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: the proxy's log is FaultProxy.log

    def do_GET(self) -> None:
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    # -- one request -------------------------------------------------------------------

    def _handle(self) -> None:
        self.owner.enter()
        try:
            self._handle_request()
        finally:
            self.owner.leave()

    def _handle_request(self) -> None:
        rule = self.owner.choose(self.command, self.path)
        pace = rule.bytes_per_s if rule is not None and rule.action == "throttle" else 0
        try:
            if rule is not None and rule.action == "reset":
                self._read_body(pace, stop_after_half=True)
                self._reset()
            body = self._read_body(pace)
            if rule is not None and rule.action == "status":
                self._send_error(rule.status)
                return
            if rule is not None and rule.action == "delay":
                time.sleep(rule.delay_s)
            status, reason, headers, payload = self._forward(body)
            cut = rule is not None and rule.action == "reset_body"
            self._respond(status, reason, headers, payload, pace=pace, reset_half_way=cut)
        except _Reset:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            # The client gave up (its read timeout during a delay): nothing to answer.
            self.close_connection = True

    def _read_body(self, pace: int, *, stop_after_half: bool = False) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if stop_after_half:
            length //= 2
        chunks = []
        left = length
        while left > 0:
            step = min(left, self._slice(pace))
            data = self.rfile.read(step)
            if not data:
                break
            chunks.append(data)
            left -= len(data)
            self._pace(len(data), pace, self.owner.up)
        return b"".join(chunks)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        connection = http.client.HTTPConnection(*self.owner.upstream, timeout=120)
        try:
            # The client's Host header is kept: the request's signature covers it.
            connection.request(self.command, self.path, body=body if body else None, headers=headers)
            response = connection.getresponse()
            payload = response.read()
            return response.status, response.reason, response.getheaders(), payload
        finally:
            connection.close()

    def _respond(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        payload: bytes,
        *,
        pace: int,
        reset_half_way: bool,
    ) -> None:
        lines = [f"HTTP/1.1 {status} {reason}"]
        for name, value in headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP or (lower == "content-length" and self.command != "HEAD"):
                continue
            lines.append(f"{name}: {value}")
        if self.command != "HEAD":
            lines.append(f"Content-Length: {len(payload)}")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if self.command == "HEAD":
            return
        end = len(payload) // 2 if reset_half_way else len(payload)
        sent = 0
        while sent < end:
            step = min(end - sent, self._slice(pace))
            self.wfile.write(payload[sent : sent + step])
            sent += step
            self._pace(step, pace, self.owner.down)
        if reset_half_way:
            self._reset()

    def _send_error(self, status: int) -> None:
        code = _ERROR_CODES.get(status, "InjectedFault")
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f"<Error><Code>{code}</Code><Message>injected by the fault proxy</Message>"
            f"<RequestId>fault</RequestId></Error>"
        ).encode()
        if self.command == "HEAD":
            body = b""
        head = (
            f"HTTP/1.1 {status} {http.client.responses.get(status, 'Error')}\r\n"
            "Content-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.wfile.write(head.encode("latin-1") + body)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        raise _Reset

    @staticmethod
    def _slice(pace: int) -> int:
        return max(1024, int(pace * _SLICE_S)) if pace else 1 << 20

    @staticmethod
    def _pace(n: int, pace: int, link: TokenBucket | None) -> None:
        if link is not None:
            link.take(n)
        if pace:
            time.sleep(n / pace)
