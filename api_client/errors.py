"""Errors of the job API client: one root, each with the call's context.

Every error carries ``method``, ``url`` (user info and query removed),
``status`` (None when no response arrived), ``code`` (the server's error code
when the body had one), ``body_excerpt`` (at most 500 characters of the
response) and ``retryable`` (whether calling again later could succeed). None
of them ever holds the bearer token.

How the worker reads them: ``ConflictError`` means the job moved on (see
``job_state``): non-fatal for ``progress``, "stop, exit" for the others.
``ApiUnavailableError`` means the API could not be reached or kept failing
until the deadline: retryable at the job level (ExitCode.API).
"""

from __future__ import annotations

from .models import JobState

__all__ = [
    "ApiError",
    "ApiUnavailableError",
    "AuthenticationError",
    "ConflictError",
    "InvalidResponseError",
    "NotFoundError",
]

MAX_BODY_EXCERPT_CHARS = 500


class ApiError(Exception):
    """A job API call failed; ``str()`` is one line with the call's context."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status: int | None = None,
        code: str | None = None,
        body_excerpt: str = "",
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = url
        self.status = status
        self.code = code
        self.body_excerpt = body_excerpt[:MAX_BODY_EXCERPT_CHARS]
        self.retryable = retryable

    def __str__(self) -> str:
        where = f"{self.method} {self.url}"
        if self.status is not None:
            where += f" -> {self.status}"
        if self.code:
            where += f" {self.code}"
        text = f"{self.message} ({where})"
        if self.body_excerpt:
            text += f"; body: {self.body_excerpt!r}"
        return text

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, method={self.method!r}, url={self.url!r}, status={self.status})"
        )


class AuthenticationError(ApiError):
    """401 or 403: the token is missing, wrong or not allowed (a deployment problem)."""


class NotFoundError(ApiError):
    """404: no such job (or a wrong base URL)."""


class ConflictError(ApiError):
    """409: the call does not fit the job's state or attempt; nothing was changed.

    ``job_state`` and ``current_attempt`` are the job's, as the server reported
    them (None if the body did not say). A worker treats a 409 on ``progress``
    as non-fatal and logs it; on ``start``, ``complete`` and ``fail`` it means
    another attempt or the web app moved the job on: stop and exit.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status: int | None = 409,
        code: str | None = None,
        body_excerpt: str = "",
        job_state: JobState | None = None,
        current_attempt: int | None = None,
    ) -> None:
        super().__init__(
            message, method=method, url=url, status=status, code=code, body_excerpt=body_excerpt, retryable=False
        )
        self.job_state = job_state
        self.current_attempt = current_attempt


class InvalidResponseError(ApiError):
    """A 2xx response whose body is not the job the contract promises."""


class ApiUnavailableError(ApiError):
    """Connection errors, timeouts, 408, 429 or 5xx until the call's deadline ran out.

    ``attempts`` requests were made over ``elapsed_s`` seconds; ``status`` and
    ``body_excerpt`` are the last response's (None/"" if the last try got no
    response). The cause (``__cause__``) is the last transport error, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        attempts: int,
        elapsed_s: float,
        status: int | None = None,
        code: str | None = None,
        body_excerpt: str = "",
    ) -> None:
        super().__init__(
            message, method=method, url=url, status=status, code=code, body_excerpt=body_excerpt, retryable=True
        )
        self.attempts = attempts
        self.elapsed_s = elapsed_s
