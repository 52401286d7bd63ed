"""JSON-lines logs on stdout, with every secret taken out before a line is written.

One JSON object per line (what CloudWatch Logs Insights reads best)::

    {"ts": "2025-05-01T12:00:00.123Z", "level": "info", "event": "transcoding", "job_id": 42,
     "attempt": 1, "batch_job_id": "...", "phase": "transcoding", "uptime_s": 3.2, ...}

``event`` is a short snake_case name; the context fields (job id, attempt,
Batch job id, phase) are bound once with :meth:`EventLog.bind` and appear on
every line; each call adds its own fields. Records of other loggers
(``api_client``'s retries, for example) are written the same way.

Redaction (:class:`Redactor`) applies to every string of every line, the
message, the fields and tracebacks alike: the given secret values (the API
token, the AWS secret key and session token) become ``***``; the query string
of any URL (presigned URLs carry their signature there) becomes ``?<redacted>``;
``Bearer <token>`` and ``X-Amz-Signature``/``X-Amz-Credential``/
``X-Amz-Security-Token`` values are cut whatever their context.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any

__all__ = ["EventLog", "JsonFormatter", "Redactor", "setup_logging"]

_URL_QUERY = re.compile(r"(?i)\b((?:https?|s3|wss?)://[^\s?#\"'<>]*)\?[^\s#\"'<>]*")
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s\"',;]+")
_AMZ_PARAM = re.compile(r"(?i)\b(x-amz-(?:signature|credential|security-token)[=:]\s*)[^\s&\"',;]+")
_USERINFO = re.compile(r"(?i)\b((?:https?|s3)://)[^/\s@\"']+@")
_REDACTED = "***"


class Redactor:
    """Takes secrets out of text. Thread-safe (immutable after construction)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, _REDACTED)
        value = _URL_QUERY.sub(r"\1?<redacted>", value)
        value = _USERINFO.sub(r"\1***@", value)
        value = _BEARER.sub(r"\1" + _REDACTED, value)
        return _AMZ_PARAM.sub(r"\1" + _REDACTED, value)

    def value(self, value: Any) -> Any:
        """``value`` with every string inside (dict values and keys, list items) redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.value(v) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.text(str(value))


class JsonFormatter(logging.Formatter):
    """A log record as one redacted JSON line.

    ``context`` (shared, updated by :meth:`EventLog.bind`) is merged into every
    line; a record's ``fields`` attribute (``extra={"fields": {...}}``) too.
    ``started`` (monotonic seconds) gives every line its ``uptime_s``.
    """

    def __init__(self, redactor: Redactor, context: dict[str, Any], *, started: float | None = None) -> None:
        super().__init__()
        self._redactor = redactor
        self._context = context
        self._started = time.monotonic() if started is None else started

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        fields = getattr(record, "fields", None)
        event = getattr(record, "event", None)
        payload: dict[str, Any] = {"ts": stamp, "level": record.levelname.lower()}
        if event is None:
            payload["event"] = "log"
            payload["logger"] = record.name
        else:
            payload["event"] = event
        payload.update(self._context)
        payload["uptime_s"] = round(time.monotonic() - self._started, 3)
        message = record.getMessage()
        if message and message != event:
            payload["message"] = message
        if isinstance(fields, Mapping):
            payload.update(fields)
        if record.exc_info:
            payload["traceback"] = self.formatException(record.exc_info)
        return json.dumps(self._redactor.value(payload), ensure_ascii=False, separators=(",", ":"), default=str)


class EventLog:
    """The worker's logger: ``log.info("event_name", field=value, ...)``. Thread-safe."""

    def __init__(self, logger: logging.Logger, context: dict[str, Any]) -> None:
        self._logger = logger
        self._context = context
        self._lock = threading.Lock()

    def bind(self, **fields: Any) -> None:
        """Add (or replace) context fields shown on every later line; None removes one."""
        with self._lock:
            for name, value in fields.items():
                if value is None:
                    self._context.pop(name, None)
                else:
                    self._context[name] = value

    def debug(self, event: str, message: str = "", **fields: Any) -> None:
        self._log(logging.DEBUG, event, message, fields)

    def info(self, event: str, message: str = "", **fields: Any) -> None:
        self._log(logging.INFO, event, message, fields)

    def warning(self, event: str, message: str = "", **fields: Any) -> None:
        self._log(logging.WARNING, event, message, fields)

    def error(self, event: str, message: str = "", *, exc_info: bool = False, **fields: Any) -> None:
        self._log(logging.ERROR, event, message, fields, exc_info=exc_info)

    def _log(self, level: int, event: str, message: str, fields: dict[str, Any], *, exc_info: bool = False) -> None:
        self._logger.log(
            level, "%s", message or event, extra={"event": event, "fields": fields}, exc_info=exc_info, stacklevel=3
        )


def setup_logging(
    secrets: Iterable[str] = (),
    *,
    stream: IO[str] | None = None,
    level: int = logging.INFO,
    started: float | None = None,
) -> EventLog:
    """Route every log record of this process to ``stream`` (default stdout) as redacted JSON lines.

    Replaces the root logger's handlers (the worker owns its process). Returns
    the worker's :class:`EventLog`.
    """
    context: dict[str, Any] = {}
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter(Redactor(secrets), context, started=started))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter below WARNING is noise in CloudWatch (and urllib3 logs URLs).
    for name in ("urllib3", "botocore", "boto3", "s3transfer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return EventLog(logging.getLogger("worker"), context)
