"""The typed client of the job API (openapi.json), over urllib3.

Retries: connection errors, timeouts, 408, 429 and 5xx are retried with the
same Idempotency-Key, waiting as Retry-After says or else with jittered
exponential backoff ("equal jitter": half the step plus a random half), until
the call's deadline; then ``ApiUnavailableError``. Every other 4xx fails at
once (401/403 ``AuthenticationError``, 404 ``NotFoundError``, 409
``ConflictError``, others ``ApiError``). Each try's timeout is the smaller of
``timeout_s`` and the time left before the deadline.

The token only ever goes into the Authorization header: never into errors,
logs or ``repr``. The client is thread-safe (the worker may post progress from
another thread than the one reporting completion).
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import HTTPError, LocationValueError, SSLError

from .errors import (
    MAX_BODY_EXCERPT_CHARS,
    ApiError,
    ApiUnavailableError,
    AuthenticationError,
    ConflictError,
    InvalidResponseError,
    NotFoundError,
)
from .models import (
    BATCH_JOB_ID_PATTERN,
    CODE_PATTERN,
    MAX_MESSAGE_CHARS,
    WORKER_REASON_CODES,
    CompletionReport,
    Job,
    JobState,
)

__all__ = ["JobApiClient"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1/video-jobs"
USER_AGENT = "hls-transcoder-api-client/1"
_IDEMPOTENCY_KEY = re.compile(r"^[!-~]{1,255}$")
_TOKEN = re.compile(r"^[!-~]+$")


def _new_key() -> str:
    return uuid.uuid4().hex


class JobApiClient:
    """Calls of the job API for one worker; see the module docstring for retries.

    ``base_url`` is the server root (``https://host`` or ``http://127.0.0.1:8765``;
    user info, query and fragment are refused so URLs in errors hold no
    secrets). ``timeout_s`` bounds one try (connect and each read);
    ``deadline_s`` bounds a whole call with its retries (each method takes a
    ``deadline_s`` override, e.g. short for progress posts). ``http``, ``sleep``,
    ``clock`` (monotonic seconds), ``wall_clock`` (epoch seconds, for an
    HTTP-date Retry-After), ``rng`` and ``new_key`` (Idempotency-Key factory)
    are injectable for tests.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 10.0,
        deadline_s: float = 60.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        http: urllib3.PoolManager | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        new_key: Callable[[], str] = _new_key,
        user_agent: str = USER_AGENT,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL with a host, got scheme {parts.scheme!r}")
        if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
            raise ValueError("base_url must not carry user info, a query or a fragment (keep secrets out of URLs)")
        if not _TOKEN.match(token):
            raise ValueError("token must be non-empty visible ASCII without spaces")
        for name, value in (
            ("timeout_s", timeout_s),
            ("deadline_s", deadline_s),
            ("backoff_initial_s", backoff_initial_s),
            ("backoff_max_s", backoff_max_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._timeout_s = float(timeout_s)
        self._deadline_s = float(deadline_s)
        self._backoff_initial_s = float(backoff_initial_s)
        self._backoff_max_s = float(backoff_max_s)
        self._owns_http = http is None
        self._http = http if http is not None else urllib3.PoolManager(num_pools=2, maxsize=4, retries=False)
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng if rng is not None else random.Random()
        self._new_key = new_key
        self._user_agent = user_agent

    def __repr__(self) -> str:
        return f"JobApiClient(base_url={self._base_url!r}, timeout_s={self._timeout_s}, deadline_s={self._deadline_s})"

    @property
    def base_url(self) -> str:
        return self._base_url

    def close(self) -> None:
        """Close pooled connections (only if this client made the pool)."""
        if self._owns_http:
            self._http.clear()

    def __enter__(self) -> JobApiClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ calls

    def get_job(self, job_id: int, *, deadline_s: float | None = None) -> Job:
        """The job with its video and current attempt."""
        return self._call("GET", _job_path(job_id), None, idempotency_key=None, deadline_s=deadline_s)

    def report_started(
        self,
        job_id: int,
        *,
        attempt: int,
        batch_job_id: str,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
    ) -> Job:
        """QUEUED/RETRY_WAIT -> RUNNING. ``ConflictError``: another worker owns the attempt or the job moved on."""
        if not (1 <= len(batch_job_id) <= 128 and BATCH_JOB_ID_PATTERN.match(batch_job_id)):
            raise ValueError(f"batch_job_id must be 1-128 of [A-Za-z0-9:._-], got {batch_job_id!r}")
        body = {"attempt": _attempt(attempt), "batch_job_id": batch_job_id}
        return self._post(job_id, "start", body, idempotency_key, deadline_s)

    def report_progress(
        self,
        job_id: int,
        *,
        attempt: int,
        percent: float,
        phase: str,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
    ) -> Job:
        """Record progress and refresh the heartbeat. ``percent`` is clamped to [0, 100].

        A ``ConflictError`` here is non-fatal for the worker (e.g. a late post
        after completion): it logs it and carries on.
        """
        if not math.isfinite(percent):
            raise ValueError(f"percent must be finite, got {percent!r}")
        if not (1 <= len(phase) <= 32 and CODE_PATTERN.match(phase)):
            raise ValueError(f"phase must be 1-32 of [a-z0-9_] starting with a letter, got {phase!r}")
        body = {"attempt": _attempt(attempt), "percent": min(100.0, max(0.0, float(percent))), "phase": phase}
        return self._post(job_id, "progress", body, idempotency_key, deadline_s)

    def report_complete(
        self,
        job_id: int,
        *,
        attempt: int,
        result: CompletionReport,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
    ) -> Job:
        """RUNNING -> SUCCEEDED, video READY. Idempotent for an already SUCCEEDED job with the same hls_path."""
        body = {"attempt": _attempt(attempt), **result.to_json()}
        return self._post(job_id, "complete", body, idempotency_key, deadline_s)

    def report_failed(
        self,
        job_id: int,
        *,
        attempt: int,
        reason_code: str,
        message: str,
        retryable: bool,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
    ) -> Job:
        """RUNNING -> FAILED (retryable; the scan decides) or DEAD (not retryable).

        ``message`` is cut to 4000 characters; an empty one becomes the reason code.
        """
        if reason_code not in WORKER_REASON_CODES:
            known = ", ".join(sorted(WORKER_REASON_CODES))
            raise ValueError(f"reason_code must be one of the contract's ({known}), got {reason_code!r}")
        text = message.strip() or reason_code
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[: MAX_MESSAGE_CHARS - 1] + "…"
        body = {"attempt": _attempt(attempt), "reason_code": reason_code, "message": text, "retryable": bool(retryable)}
        return self._post(job_id, "fail", body, idempotency_key, deadline_s)

    # -------------------------------------------------------------- plumbing

    def _post(self, job_id: int, action: str, body: dict[str, Any], key: str | None, deadline_s: float | None) -> Job:
        key = key if key is not None else self._new_key()
        if not _IDEMPOTENCY_KEY.match(key):
            raise ValueError("idempotency_key must be 1-255 visible ASCII characters")
        return self._call("POST", f"{_job_path(job_id)}/{action}", body, idempotency_key=key, deadline_s=deadline_s)

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        idempotency_key: str | None,
        deadline_s: float | None,
    ) -> Job:
        url = self._base_url + path
        data = self._request(method, url, body, idempotency_key, self._deadline_s if deadline_s is None else deadline_s)
        try:
            return Job.from_json(data)
        except ValueError as exc:
            raise InvalidResponseError(f"the response is not a job: {exc}", method=method, url=url, status=200) from exc

    def _request(
        self, method: str, url: str, body: dict[str, Any] | None, idempotency_key: str | None, deadline_s: float
    ) -> Any:
        """One logical call with its retries; returns the decoded JSON of a 2xx answer."""
        if not (math.isfinite(deadline_s) and deadline_s > 0):
            raise ValueError(f"deadline_s must be a positive number of seconds, got {deadline_s!r}")
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "User-Agent": self._user_agent,
        }
        payload = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        started = self._clock()
        deadline = started + deadline_s
        attempts = 0
        while True:
            attempts += 1
            per_try_s = max(0.001, min(self._timeout_s, deadline - self._clock()))
            status: int | None = None
            excerpt = ""
            code: str | None = None
            cause: Exception | None = None
            try:
                response = self._http.request(
                    method,
                    url,
                    body=payload,
                    headers=headers,
                    timeout=urllib3.Timeout(connect=per_try_s, read=per_try_s),
                    retries=False,
                    redirect=False,
                )
            except (SSLError, LocationValueError) as exc:
                # Retrying cannot fix a certificate or a malformed URL.
                raise ApiError(f"{type(exc).__name__}: {exc}", method=method, url=url) from exc
            except HTTPError as exc:
                cause = exc
                reason = f"{type(exc).__name__}: {exc}"
                delay = self._backoff_s(attempts)
            else:
                status = response.status
                raw = response.data or b""
                if 200 <= status < 300:
                    try:
                        return json.loads(raw)
                    except ValueError as exc:
                        raise InvalidResponseError(
                            "the response body is not JSON",
                            method=method,
                            url=url,
                            status=status,
                            body_excerpt=self._excerpt(raw),
                        ) from exc
                excerpt = self._excerpt(raw)
                error = _error_body(raw)
                code = error.get("code") if isinstance(error.get("code"), str) else None
                if not _retryable_status(status):
                    raise _status_error(method, url, status, code, excerpt, error)
                reason = f"HTTP {status}" + (f" {code}" if code else "")
                retry_after = _retry_after_s(response.headers.get("Retry-After"), self._wall_clock)
                delay = retry_after if retry_after is not None else self._backoff_s(attempts)
            now = self._clock()
            if now + delay >= deadline:
                raise ApiUnavailableError(
                    f"gave up after {attempts} tries in {now - started:.1f} s (deadline {deadline_s:g} s); "
                    f"last: {reason}",
                    method=method,
                    url=url,
                    attempts=attempts,
                    elapsed_s=now - started,
                    status=status,
                    code=code,
                    body_excerpt=excerpt,
                ) from cause
            log.warning("job API %s %s: %s; try %d in %.2f s", method, url, reason, attempts + 1, delay)
            self._sleep(delay)

    def _backoff_s(self, attempts: int) -> float:
        step = min(self._backoff_max_s, self._backoff_initial_s * 2.0 ** min(attempts - 1, 30))
        return step / 2 + self._rng.uniform(0.0, step / 2)

    def _excerpt(self, raw: bytes) -> str:
        text = raw[: MAX_BODY_EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
        # A misbehaving server or proxy could echo the Authorization header.
        return text.replace(self._token, "***")[:MAX_BODY_EXCERPT_CHARS]


def _job_path(job_id: int) -> str:
    if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
        raise ValueError(f"job_id must be a positive integer, got {job_id!r}")
    return f"{API_PREFIX}/{job_id}"


def _attempt(attempt: int) -> int:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or not 1 <= attempt <= 1000:
        raise ValueError(f"attempt must be an integer in 1-1000, got {attempt!r}")
    return attempt


def _retryable_status(status: int) -> bool:
    return status in (408, 429) or 500 <= status <= 599


def _error_body(raw: bytes) -> Mapping[str, Any]:
    """The ``error`` object of an error response, or {} when the body is not one."""
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _status_error(
    method: str, url: str, status: int, code: str | None, excerpt: str, error: Mapping[str, Any]
) -> ApiError:
    server_message = error.get("message")
    message = server_message if isinstance(server_message, str) and server_message else f"HTTP {status}"
    if status == 409:
        state = error.get("job_state")
        current = error.get("current_attempt")
        return ConflictError(
            message,
            method=method,
            url=url,
            code=code,
            body_excerpt=excerpt,
            job_state=JobState(state) if isinstance(state, str) and state in JobState.__members__ else None,
            current_attempt=current if isinstance(current, int) and not isinstance(current, bool) else None,
        )
    kind = {401: AuthenticationError, 403: AuthenticationError, 404: NotFoundError}.get(status, ApiError)
    return kind(message, method=method, url=url, status=status, code=code, body_excerpt=excerpt)


def _retry_after_s(value: str | None, wall_clock: Callable[[], float]) -> float | None:
    """Retry-After as seconds to wait: delta-seconds or an HTTP-date (RFC 9110); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - wall_clock())
