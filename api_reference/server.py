"""A reference implementation of the job API: standard-library HTTP server + SQLite.

It serves local end-to-end runs and the tests over real HTTP on loopback; it is
a reference and a test peer, not the production API (the platform's Django web
app implements openapi.json). Request bodies are checked against the schemas
in openapi.json itself, and the state machine is ``store.JobStore``.

In tests::

    with ReferenceServer(tmp_path / "jobs.db", token="t0ken-for-tests") as server:
        job_id = server.create_job("file:///tmp/in.mp4")
        client = JobApiClient(server.url, "t0ken-for-tests")
        ...
        server.scan_stuck_jobs(now=...)

From a shell (the token may come from the JOB_API_TOKEN environment variable
instead of ``--token``)::

    python -m api_reference --db jobs.db --token T [--port 8765] [--scan-interval-s 30]
    python -m api_reference create-job --db jobs.db --source-uri file:///abs/in.mp4
    python -m api_reference create-job --db jobs.db --video-id 7     # another job, same video
    python -m api_reference scan --db jobs.db [--stall-after-s 600]
    python -m api_reference cancel --db jobs.db --job-id 42
    python -m api_reference show --db jobs.db --job-id 42             # job + its transitions

The admin commands work on the SQLite file directly, also while a server runs.
The same actions exist over HTTP for scripts (bearer ``admin_token``, which
defaults to the API token; not part of the contract)::

    POST /admin/v1/jobs                     {"source_uri": "...", "max_attempts": 3} -> 201 job
    POST /admin/v1/videos/{video_id}/jobs   {"max_attempts": 3}                      -> 201 job
    POST /admin/v1/jobs/{job_id}/cancel     {}                                       -> 200 job
    POST /admin/v1/scan                     {"now": 1746090000.0}                    -> 200 {"transitions": [...]}
    GET  /admin/v1/jobs/{job_id}/history                                             -> 200 {"transitions": [...]}
    GET  /admin/v1/videos/{video_id}/manifest                                        -> 200 manifest (404 if none)
    GET  /healthz (no auth)                                                          -> 200 {"ok": true}
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from os import PathLike
from types import FrameType, TracebackType
from typing import Any, ClassVar
from urllib.parse import urlsplit

from api_client.schema import load_openapi, schema_errors

from .store import ACTIONS, CallError, JobStore, Outcome, ScanTransition

__all__ = ["ReferenceServer", "main"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
# ``complete`` may carry the ladder's manifest (~150 bytes per object: a 6 h
# lecture's 4-rung ladder at 4 s segments lists ~27,000 objects, ~4 MB).
MAX_COMPLETE_BODY_BYTES = 16 * 1024 * 1024
MAX_DRAIN_BYTES = 1024 * 1024
DEFAULT_PORT = 8765
TOKEN_ENV = "JOB_API_TOKEN"
_REQUEST_SCHEMAS = {
    "start": "StartRequest",
    "progress": "ProgressRequest",
    "complete": "CompleteRequest",
    "fail": "FailRequest",
}
_IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,255}$")
_ID = r"([1-9][0-9]{0,17})"
_JOB_PATH = re.compile(rf"^/api/v1/video-jobs/{_ID}(?:/({'|'.join(ACTIONS)}))?$")
_ADMIN_JOBS = re.compile(r"^/admin/v1/jobs$")
_ADMIN_VIDEO_JOBS = re.compile(rf"^/admin/v1/videos/{_ID}/jobs$")
_ADMIN_CANCEL = re.compile(rf"^/admin/v1/jobs/{_ID}/cancel$")
_ADMIN_HISTORY = re.compile(rf"^/admin/v1/jobs/{_ID}/history$")
_ADMIN_MANIFEST = re.compile(rf"^/admin/v1/videos/{_ID}/manifest$")
_ADMIN_SCAN = re.compile(r"^/admin/v1/scan$")


def _parse_json(raw: bytes) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def fingerprint(method: str, path: str, body: Any) -> str:
    """What an Idempotency-Key is bound to: method, path and the body's canonical JSON."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


class _App:
    """What every request handler shares: the store, the tokens and the request schemas."""

    def __init__(self, store: JobStore, token: str, admin_token: str) -> None:
        self.store = store
        self.token = token.encode()
        self.admin_token = admin_token.encode()
        self.openapi = load_openapi()
        self.schemas = {
            action: self.openapi["components"]["schemas"][name] for action, name in _REQUEST_SCHEMAS.items()
        }


class _Handler(BaseHTTPRequestHandler):
    """One request: route, authenticate, check, call the store, answer JSON."""

    protocol_version = "HTTP/1.1"  # keep-alive, so clients reuse connections
    server_version = "video-jobs-reference/1"
    app: ClassVar[_App]
    timeout = 30  # seconds an idle keep-alive connection may hold a thread

    def setup(self) -> None:
        super().setup()
        # Headers and body are separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every keep-alive call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        # The request line holds no secrets (the token travels in a header).
        log.info("%s %s", self.address_string(), format % args)

    # ---------------------------------------------------------------- routing

    def _handle(self, method: str) -> None:
        raw, too_large = self._read_body()
        try:
            status, body, headers = self._route(method, raw, too_large)
        except CallError as error:
            status, body, headers = error.status, error.body(), {}
            if error.status == 401:
                headers["WWW-Authenticate"] = 'Bearer realm="video-jobs"'
        except Exception:
            log.exception("internal error on %s %s", method, self.path)
            status, body, headers = 500, {"error": {"code": "internal", "message": "internal error"}}, {}
        self._send(status, body, headers)

    def _read_body(self) -> tuple[bytes, bool]:
        """Read the whole body now, so an early error still leaves the connection usable.

        An oversized body (flagged, answered 413) is read and dropped up to
        ``MAX_DRAIN_BYTES`` past the limit; beyond that the connection is
        closed instead.
        """
        try:
            length = max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            length = 0
        limit = self._body_limit()
        if length <= limit:
            return (self.rfile.read(length) if length else b""), False
        if length > limit + MAX_DRAIN_BYTES:
            self.close_connection = True  # the unread body would be taken for the next request
            return b"", True
        while length > 0:
            chunk = self.rfile.read(min(length, 65536))
            if not chunk:
                break
            length -= len(chunk)
        return b"", True

    def _body_limit(self) -> int:
        return MAX_COMPLETE_BODY_BYTES if urlsplit(self.path).path.endswith("/complete") else MAX_BODY_BYTES

    def _route(self, method: str, raw: bytes, too_large: bool) -> tuple[int, Any, dict[str, str]]:
        app = self.app
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._allow(method, "GET")
            return 200, {"ok": True}, {}
        match = _JOB_PATH.match(path)
        if match:
            self._authenticate(app.token)
            job_id, action = int(match[1]), match[2]
            if action is None:
                self._allow(method, "GET")
                return 200, app.store.get_job(job_id), {}
            self._allow(method, "POST")
            app.store.get_job(job_id)  # 404 before anything about the request itself
            outcome = self._worker_call(path, action, job_id, raw, too_large)
            return outcome.status, outcome.body, {"Idempotent-Replayed": "true"} if outcome.replayed else {}
        if path.startswith("/admin/"):
            self._authenticate(app.admin_token)
            return self._admin(method, path, raw, too_large)
        raise CallError(404, "not_found", f"no such path {path!r}")

    def _allow(self, method: str, allowed: str) -> None:
        if method != allowed:
            raise CallError(405, "method_not_allowed", f"{method} is not allowed here; use {allowed}")

    def _authenticate(self, expected: bytes) -> None:
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise CallError(401, "unauthorized", "missing or invalid bearer token")

    def _json_body(self, raw: bytes, too_large: bool) -> Any:
        if too_large:
            raise CallError(
                413,
                "payload_too_large",
                f"request body is {self.headers.get('Content-Length')} bytes; the limit is {self._body_limit()}",
            )
        try:
            return _parse_json(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CallError(400, "invalid_request", f"the body is not JSON: {exc}") from None

    def _worker_call(self, path: str, action: str, job_id: int, raw: bytes, too_large: bool) -> Outcome:
        key = self.headers.get("Idempotency-Key")
        if key is None or not _IDEMPOTENCY_KEY.match(key):
            raise CallError(
                400,
                "idempotency_key_required",
                "mutating calls need an Idempotency-Key header (1-255 visible ASCII characters)",
            )
        body = self._json_body(raw, too_large)
        errors = schema_errors(body, self.app.schemas[action], self.app.openapi)
        if errors:
            raise CallError(400, "invalid_request", "; ".join(errors[:5]))
        return self.app.store.call(
            action, job_id, body, idempotency_key=key, fingerprint=fingerprint("POST", path, body)
        )

    def _admin(self, method: str, path: str, raw: bytes, too_large: bool) -> tuple[int, Any, dict[str, str]]:
        store = self.app.store
        if match := _ADMIN_HISTORY.match(path):
            self._allow(method, "GET")
            return 200, {"transitions": store.history(int(match[1]))}, {}
        if match := _ADMIN_MANIFEST.match(path):
            self._allow(method, "GET")
            manifest = store.video_manifest(int(match[1]))
            if manifest is None:
                raise CallError(404, "not_found", f"video {match[1]} has no manifest")
            return 200, manifest, {}
        self._allow(method, "POST")
        body = self._json_body(raw, too_large) if raw or too_large else {}
        if not isinstance(body, dict):
            raise CallError(400, "invalid_request", "the body must be a JSON object")
        try:
            if _ADMIN_JOBS.match(path):
                job_id = store.create_job(_text(body, "source_uri"), max_attempts=_opt_int(body, "max_attempts"))
                return 201, store.get_job(job_id), {}
            if match := _ADMIN_VIDEO_JOBS.match(path):
                job_id = store.create_job_for_video(int(match[1]), max_attempts=_opt_int(body, "max_attempts"))
                return 201, store.get_job(job_id), {}
            if match := _ADMIN_CANCEL.match(path):
                return 200, store.cancel_job(int(match[1])), {}
            if _ADMIN_SCAN.match(path):
                now = body.get("now")
                if now is not None and (isinstance(now, bool) or not isinstance(now, (int, float))):
                    raise CallError(400, "invalid_request", "now must be epoch seconds")
                moved = store.scan_stuck_jobs(now=None if now is None else float(now))
                return 200, {"transitions": [transition.to_json() for transition in moved]}, {}
        except ValueError as exc:
            raise CallError(400, "invalid_request", str(exc)) from None
        raise CallError(404, "not_found", f"no such path {path!r}")

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise CallError(400, "invalid_request", f"{name} must be a string")
    return value


def _opt_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise CallError(400, "invalid_request", f"{name} must be an integer")
    return value


class ReferenceServer:
    """The reference API on ``host:port`` (0: a free port) in a daemon thread.

    ``url`` is ``http://host:port`` once started; use as a context manager or
    call ``start()``/``stop()``. ``clock`` (epoch seconds) stamps every change
    and is the scan's default ``now``. ``scan_interval_s`` runs the stuck-job
    scan periodically (off by default; tests call ``scan_stuck_jobs``). The
    admin helpers work on the store directly, without HTTP.
    """

    def __init__(
        self,
        db_path: str | PathLike[str],
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        admin_token: str | None = None,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 3,
        stall_after_s: float = 600.0,
        scan_interval_s: float | None = None,
    ) -> None:
        if not token:
            raise ValueError("token must not be empty")
        self.store = JobStore(db_path, clock=clock, max_attempts=max_attempts, stall_after_s=stall_after_s)
        self._app = _App(self.store, token, admin_token or token)
        self._host = host
        self._port = port
        self._scan_interval_s = scan_interval_s
        self._http: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def __repr__(self) -> str:
        where = self.url if self._http is not None else f"{self._host}:{self._port} (not started)"
        return f"ReferenceServer({where})"

    @property
    def url(self) -> str:
        if self._http is None:
            raise RuntimeError("the server is not started")
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> ReferenceServer:
        if self._http is not None:
            raise RuntimeError("already started")
        handler = type("Handler", (_Handler,), {"app": self._app})
        self._http = ThreadingHTTPServer((self._host, self._port), handler)
        self._http.daemon_threads = True
        serve = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.01}, name="reference-api-http", daemon=True
        )
        self._threads = [serve]
        if self._scan_interval_s:
            self._threads.append(threading.Thread(target=self._scan_loop, name="reference-api-scan", daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the database; idempotent."""
        self._stopping.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            for thread in self._threads:
                thread.join(timeout=5)
            self._http = None
        self.store.close()

    def request_stop(self) -> None:
        """Make ``serve_forever`` return; safe from a signal handler."""
        self._stopping.set()

    def serve_forever(self, on_started: Callable[[str], None] | None = None) -> None:
        """Start, call ``on_started(url)``, block until ``request_stop()`` or an exception, stop."""
        self.start()
        try:
            if on_started is not None:
                on_started(self.url)
            while not self._stopping.wait(0.5):
                pass
        finally:
            self.stop()

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _scan_loop(self) -> None:
        assert self._scan_interval_s
        while not self._stopping.wait(self._scan_interval_s):
            try:
                for moved in self.store.scan_stuck_jobs():
                    log.info("scan: %s", json.dumps(moved.to_json()))
            except Exception:
                log.exception("stuck-job scan failed")

    # ----------------------------------------------------------- admin helpers

    def create_job(self, source_uri: str, *, max_attempts: int | None = None) -> int:
        """A new UPLOADED video with a QUEUED job; returns the job id."""
        return self.store.create_job(source_uri, max_attempts=max_attempts)

    def create_job_for_video(self, video_id: int, *, max_attempts: int | None = None) -> int:
        return self.store.create_job_for_video(video_id, max_attempts=max_attempts)

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return self.store.cancel_job(job_id)

    def scan_stuck_jobs(self, *, now: float | None = None) -> list[ScanTransition]:
        return self.store.scan_stuck_jobs(now=now)

    def get_job(self, job_id: int) -> dict[str, Any]:
        return self.store.get_job(job_id)


# ------------------------------------------------------------------------ CLI

_COMMANDS = ("serve", "create-job", "scan", "cancel", "show")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m api_reference",
        description="Reference job API (not the production API). Default command: serve.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the API over HTTP")
    serve.add_argument("--db", required=True, help="SQLite file (created if missing)")
    serve.add_argument("--token", help=f"bearer token (default: ${TOKEN_ENV})")
    serve.add_argument("--admin-token", help="token for /admin/v1 (default: the API token)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    serve.add_argument("--max-attempts", type=int, default=3, help="default attempt limit of new jobs")
    serve.add_argument("--stall-after-s", type=float, default=600.0)
    serve.add_argument("--scan-interval-s", type=float, default=0.0, help="run the stuck-job scan every N s (0: off)")
    create = commands.add_parser("create-job", help="create a QUEUED job; prints the job as JSON")
    create.add_argument("--db", required=True)
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--source-uri", help="s3://bucket/key or file:///abs/path: a new video")
    source.add_argument("--video-id", type=int, help="another job for this existing video")
    create.add_argument("--max-attempts", type=int)
    scan = commands.add_parser("scan", help="run the stuck-job scan once; prints the transitions")
    scan.add_argument("--db", required=True)
    scan.add_argument("--stall-after-s", type=float, default=600.0)
    cancel = commands.add_parser("cancel", help="cancel a job")
    cancel.add_argument("--db", required=True)
    cancel.add_argument("--job-id", type=int, required=True)
    show = commands.add_parser("show", help="print a job and its transitions")
    show.add_argument("--db", required=True)
    show.add_argument("--job-id", type=int, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in (*_COMMANDS, "-h", "--help"):
        args_list.insert(0, "serve")
    args = _parser().parse_args(args_list)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        return _serve(args)
    store = JobStore(args.db, stall_after_s=getattr(args, "stall_after_s", 600.0))
    try:
        result: Any
        if args.command == "create-job":
            if args.video_id is not None:
                job_id = store.create_job_for_video(args.video_id, max_attempts=args.max_attempts)
            else:
                job_id = store.create_job(args.source_uri, max_attempts=args.max_attempts)
            result = store.get_job(job_id)
        elif args.command == "scan":
            result = {"transitions": [moved.to_json() for moved in store.scan_stuck_jobs()]}
        elif args.command == "cancel":
            result = store.cancel_job(args.job_id)
        else:
            result = {"job": store.get_job(args.job_id), "transitions": store.history(args.job_id)}
    except (CallError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps(result, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get(TOKEN_ENV)
    if not token:
        print(f"error: give --token or set {TOKEN_ENV}", file=sys.stderr)
        return 2
    server = ReferenceServer(
        args.db,
        token,
        args.host,
        args.port,
        admin_token=args.admin_token,
        max_attempts=args.max_attempts,
        stall_after_s=args.stall_after_s,
        scan_interval_s=args.scan_interval_s or None,
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        server.request_stop()

    def announce(url: str) -> None:
        # One JSON line on stdout, so scripts can read the URL (useful with --port 0).
        print(json.dumps({"event": "listening", "url": url}), flush=True)

    signal.signal(signal.SIGTERM, on_signal)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(on_started=announce)
    return 0


if __name__ == "__main__":  # python -m api_reference.server
    raise SystemExit(main())
