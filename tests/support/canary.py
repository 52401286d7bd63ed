"""A loopback HTTP canary: records every request it gets, answers 200.

Use it to prove that the engine never reaches out to the network::

    with CanaryServer() as canary:
        make_hls_trap(path, canary.url, secret)
        ...  # run the engine on path
    assert canary.hits == []
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["CanaryHit", "CanaryServer"]


@dataclass(frozen=True, slots=True)
class CanaryHit:
    """One request seen by the canary (``time`` is ``time.monotonic()``)."""

    method: str
    path: str
    time: float
    user_agent: str | None


class CanaryServer:
    """An HTTP server on 127.0.0.1 (free port) in a daemon thread.

    ``url`` is ``http://127.0.0.1:<port>`` (no trailing slash); ``hits`` is a
    snapshot list of every request so far, in arrival order. Every method is
    answered ``200`` with ``body``.
    """

    def __init__(self, body: bytes = b"canary\n") -> None:
        self.body = body
        self._hits: list[CanaryHit] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> CanaryServer:
        if self._server is not None:
            raise RuntimeError("canary already started")
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="canary-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> CanaryServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- results

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("canary not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hits(self) -> list[CanaryHit]:
        with self._lock:
            return list(self._hits)

    @property
    def paths(self) -> list[str]:
        return [hit.path for hit in self.hits]

    def _record(self, hit: CanaryHit) -> None:
        with self._lock:
            self._hits.append(hit)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        canary = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "canary/1"

            def _answer(self, *, with_body: bool = True) -> None:
                canary._record(CanaryHit(self.command, self.path, time.monotonic(), self.headers.get("User-Agent")))
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(min(length, 1 << 20))
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(canary.body)))
                self.end_headers()
                if with_body:
                    self.wfile.write(canary.body)

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def do_PUT(self) -> None:
                self._answer()

            def do_OPTIONS(self) -> None:
                self._answer()

            def do_HEAD(self) -> None:
                self._answer(with_body=False)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
