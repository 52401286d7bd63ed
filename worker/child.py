"""The transcoding child: ``python -m worker.child``, started and watched by the worker (worker.run).

Everything that decodes, encodes or touches storage runs here, so a segfault
or an out-of-memory kill takes down this process only; the parent, which
never imports PyAV or boto3, outlives it and reports the failure.

A run of the job that died part way (checkpoint records, no master) is
carried on in its own directory rather than this run's: the engine keeps
what the records vouch for and encodes the rest.

Protocol. stdin: one line, the JSON job spec (below); the parent then keeps
stdin open, and end-of-file means the parent is gone: the run is cancelled.
stdout: JSON lines, one event each::

    {"event": "progress", "phase": "transcoding", "percent": 41.5, "done_s": 12.4, "total_s": 29.9, "speed": 2.1}
    {"event": "log", "level": "warning", "logger": "transcoder.storage", "message": "..."}
    {"event": "result", "reused": false, "report": {...complete body...}, "output": "s3://...", "stats": {...}}
    {"event": "error", "kind": "input", "type": "UnsupportedInputError", "message": "...", "retryable": false}

``kind`` is one of input, media, storage, storage_denied, output, config,
cancelled, crashed, internal (worker.reasons maps them). Exactly one result or
error event ends a run; the exit status is then 0. Anything written to fd 1 by
other code (a library's print, FFmpeg) is sent to stderr, so stdout carries
only the protocol.

SIGTERM and SIGINT set the transcoder's cancel event: it stops, aborts its
uploads, publishes no master playlist, and the child reports ``cancelled``.

The spec::

    {"source": "s3://bucket/key" | "/abs/path", "output_root": {"bucket": "b" | null, "prefix": "hls/"},
     "video_id": 7, "job_id": 42, "attempt": 1, "run_tag": "3f9c0b1d",
     "preset": "veryfast" | null, "threads": 4 | null, "checkpoint_s": 30.0 | null}
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from .layout import RunDir
from .outputs import (
    IncompleteLadderError,
    LocalStore,
    S3Store,
    Store,
    StoreError,
    find_complete_ladder,
    find_resumable_run,
    inspect_ladder,
)
from .settings import OutputRoot

__all__ = ["classify", "main"]

_PROGRESS_EVERY_S = 0.25


class _Protocol:
    """The event stream on the original stdout; thread-safe; a vanished parent cancels the run."""

    def __init__(self, stream: IO[str], cancel: threading.Event) -> None:
        self._stream = stream
        self._cancel = cancel
        self._lock = threading.Lock()

    def emit(self, event: Mapping[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":"), default=str, allow_nan=False)
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                self._cancel.set()  # the parent is gone: nobody will report this run


class _LogRelay(logging.Handler):
    """Records of this process as ``log`` events (the parent redacts and writes them)."""

    def __init__(self, protocol: _Protocol) -> None:
        super().__init__(logging.INFO)
        self._protocol = protocol

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event: dict[str, Any] = {
                "event": "log",
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
            if record.exc_info:
                event["traceback"] = logging.Formatter().formatException(record.exc_info)
            self._protocol.emit(event)
        except Exception:
            self.handleError(record)


class _ProgressSink:
    """The transcoder's progress callback: events at most every 0.25 s, and on each phase change."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol
        self._last_at = 0.0
        self._last_phase = ""

    def __call__(self, progress: Any) -> None:
        try:
            now = time.monotonic()
            if progress.phase == self._last_phase and now - self._last_at < _PROGRESS_EVERY_S:
                return
            self._last_at, self._last_phase = now, progress.phase
            self._protocol.emit(
                {
                    "event": "progress",
                    "phase": progress.phase,
                    "percent": round(progress.fraction * 100, 2),
                    "done_s": round(progress.done_s, 3),
                    "total_s": round(progress.total_s, 3),
                    "speed": round(progress.speed, 3),
                }
            )
        except Exception:
            pass  # a progress report must never fail the run (the transcoder would undo a published ladder)


def classify(error: BaseException) -> tuple[str, bool]:
    """(kind, retryable) of an error raised in the child; see the module docstring."""
    from transcoder import (
        CancelledError,
        ConfigError,
        InputError,
        MediaError,
        OutputError,
        StorageError,
        TranscodeError,
    )

    if isinstance(error, CancelledError):
        return "cancelled", True
    if isinstance(error, InputError):  # a missing source object (SourceNotFoundError) too
        return "input", False
    if isinstance(error, StorageError):
        return ("storage", True) if error.retryable else ("storage_denied", False)
    if isinstance(error, StoreError):
        return ("storage_denied", False) if error.denied else ("storage", error.retryable)
    if isinstance(error, OutputError):
        return "output", True
    if isinstance(error, ConfigError):
        return "config", False
    if isinstance(error, MemoryError):
        return "crashed", True
    if isinstance(error, (MediaError, TranscodeError)):
        return "media", False
    return "internal", False


def run_spec(spec: Mapping[str, Any], *, cancel: threading.Event, protocol: _Protocol) -> dict[str, Any]:
    """Adopt a whole ladder an earlier run of the job left, or transcode; the ``result`` event's fields."""
    root = OutputRoot(bucket=spec["output_root"]["bucket"], prefix=spec["output_root"]["prefix"])
    run = RunDir(
        video_id=int(spec["video_id"]),
        job_id=int(spec["job_id"]),
        attempt=int(spec["attempt"]),
        run_tag=str(spec["run_tag"]),
    )
    source = str(spec["source"])
    log = logging.getLogger("worker.child")
    client: Any = None
    if root.is_s3 or source.startswith("s3://"):
        from transcoder import StorageConfig
        from transcoder import make_s3_client as make_client

        # One client for the lookup and the run; endpoint and credentials from botocore's own chain.
        client = make_client(StorageConfig())
    # A cancelled attempt stops waiting out the object API's retries too.
    store: Store = S3Store(client, root, cancel=cancel) if root.is_s3 else LocalStore(root.prefix)

    protocol.emit({"event": "progress", "phase": "checking", "percent": 0.0})
    found = find_complete_ladder(
        store,
        root,
        video_id=run.video_id,
        job_id=run.job_id,
        on_skip=lambda directory, why: log.warning("not adopting %s: %s", directory, why),
    )
    if found is not None:
        return {"reused": True, "report": found.report, "output": found.run.destination(root), "stats": None}
    if cancel.is_set():
        from transcoder import CancelledError

        raise CancelledError("the run was cancelled before it started")

    # A run of this job that died part way left checkpoint records: carry on in its directory.
    resumable = find_resumable_run(store, video_id=run.video_id, job_id=run.job_id)
    if resumable is not None:
        log.info("resuming in %s, which an earlier run left unfinished", resumable.relative)
        run = resumable

    from transcoder import EncoderSettings, TranscodeConfig, transcode

    encoder = EncoderSettings(preset=spec["preset"]) if spec.get("preset") else EncoderSettings()
    config = TranscodeConfig(encoder=encoder, threads=spec.get("threads"))
    if spec.get("checkpoint_s"):
        config = dataclasses.replace(config, checkpoint_span_s=float(spec["checkpoint_s"]))
    destination = run.destination(root)
    result = transcode(
        source, destination, config=config, progress=_ProgressSink(protocol), cancel=cancel, s3_client=client
    )
    try:
        report = inspect_ladder(store, root, run)
    except IncompleteLadderError as exc:
        raise RuntimeError(f"the ladder just written does not read back whole: {exc}") from exc
    duration = result.source.duration_s
    return {
        "reused": False,
        "report": report,
        "output": destination,
        "stats": {
            "wall_s": round(result.wall_s, 3),
            "cpu_s": round(result.cpu_s, 3),
            "speed": round(duration / result.wall_s, 3) if result.wall_s > 0 else None,
            "peak_rss_bytes": result.peak_rss_bytes,
            "source_duration_s": round(duration, 3),
            "rungs": [rung.name for rung in result.ladder.rungs],
        },
    }


def _watch_stdin(stdin: IO[str], cancel: threading.Event) -> None:
    """End-of-file on stdin: the parent died (the parent holds stdin open while it waits)."""
    try:
        while stdin.readline():
            pass
    except (OSError, ValueError):
        pass
    cancel.set()


def main() -> int:
    cancel = threading.Event()
    # The protocol owns the real stdout; fd 1 becomes stderr for everything else.
    protocol_stream = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), encoding="utf-8", line_buffering=False)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    protocol = _Protocol(protocol_stream, cancel)

    def on_signal(signum: int, frame: Any) -> None:
        cancel.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    root_logger = logging.getLogger()
    for handler in list(root_logger.handlers):
        root_logger.removeHandler(handler)
    root_logger.addHandler(_LogRelay(protocol))
    root_logger.setLevel(logging.INFO)
    for name in ("urllib3", "botocore", "boto3", "s3transfer"):
        logging.getLogger(name).setLevel(logging.WARNING)

    try:
        line = sys.stdin.readline()
        spec = json.loads(line)
        if not isinstance(spec, dict):
            raise ValueError("the job spec must be a JSON object")
    except ValueError as exc:
        protocol.emit({"event": "error", "kind": "internal", "type": "ValueError", "message": f"bad spec: {exc}"})
        return 0
    threading.Thread(target=_watch_stdin, args=(sys.stdin, cancel), name="stdin-watch", daemon=True).start()

    try:
        result = run_spec(spec, cancel=cancel, protocol=protocol)
    except BaseException as error:
        kind, retryable = classify(error)
        if kind == "internal":
            logging.getLogger("worker.child").error("internal error", exc_info=error)
        protocol.emit(
            {
                "event": "error",
                "kind": kind,
                "type": type(error).__name__,
                "message": str(error) or type(error).__name__,
                "retryable": retryable,
            }
        )
        return 0
    protocol.emit({"event": "result", **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
