"""The S3 client with the settings R2 needs, the retry around every request, the error mapping.

The only module that imports boto3, botocore or s3transfer (the rest of the
package, and of the project, goes through it):

* :func:`make_client`: one place for the settings R2 needs (checksums only
  ``when_required``, SigV4 with the payload SHA-256 signed, region ``auto``,
  standard retries, timeouts, a connection pool sized for our concurrency).
  :func:`transfer_config` is the matching boto3 managed-transfer setting
  (classic client, never CRT) for callers that upload whole files.
* :func:`call`: every request goes through it: botocore's own retries inside,
  our deadline-bounded retry with full-jitter backoff outside (botocore's
  retry quota runs out in long outages).
* :func:`storage_error`: S3 failures mapped to
  :class:`~transcoder.storage.errors.StorageError` subclasses that name the
  object, the operation and the status, say whether a retry could help, and
  never carry credentials or signed URLs.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

# boto3 and botocore ship no type information (see S3Client below).
import boto3  # type: ignore[import-untyped]
import botocore.config  # type: ignore[import-untyped]
import botocore.exceptions  # type: ignore[import-untyped]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]

from ..errors import TranscodeError
from .config import S3Location, StorageConfig
from .errors import (
    CredentialsError,
    SourceChangedError,
    SourceNotFoundError,
    SourceReadError,
    StorageError,
    UploadError,
)

#: A botocore S3 client. boto3 ships no type stubs and this project adds no
#: stub package, so the client is typed as Any; only this package calls it.
S3Client = Any

#: Whose request failed, which decides the error class: the source being
#: read (a missing object is bad input), the output being written, or the
#: objects of a bucket being listed, read back or deleted.
Side = Literal["source", "output", "objects"]

T = TypeVar("T")

# Status codes and error codes a later attempt can get past.
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    }
)
_TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    botocore.exceptions.HTTPClientError,  # connection closed, read timeout, body cut mid-stream
    botocore.exceptions.ConnectionError,  # refused, connect timeout, TLS failures
    botocore.exceptions.IncompleteReadError,
    ConnectionError,  # a reset that escaped botocore's wrapping
    TimeoutError,
)
_CREDENTIAL_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "Unauthorized"}
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
_POLL_S = 0.05


# --------------------------------------------------------------------------- client


def make_client(config: StorageConfig | None = None, *, session: Any | None = None) -> S3Client:
    """An S3 client with the settings R2 needs; ``session`` is a ``boto3.Session`` (default: a new one).

    The credentials come from the session (boto3's chain: arguments,
    environment, profile ``config.profile``, instance role). With
    ``config.endpoint_url`` None, botocore resolves the endpoint itself
    (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, the profile). Clients are
    thread-safe; share one per run.

    R2-safe by construction:

    * ``request_checksum_calculation``/``response_checksum_validation``
      ``when_required``: boto3 >= 1.36 otherwise sends CRC32 trailers in
      ``aws-chunked`` bodies, which R2 rejects as ``Unauthorized``;
    * ``payload_signing_enabled``: SigV4 signs the body's SHA-256 even over
      HTTPS (never ``UNSIGNED-PAYLOAD`` or streaming signatures);
    * SigV4, region ``auto``, path-style addressing (works for R2, MinIO,
      SeaweedFS and IP endpoints);
    * standard retries, timeouts, a pool that fits every concurrent request.
    """
    config = config or StorageConfig()
    client_config = botocore.config.Config(
        region_name=config.region,
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "total_max_attempts": config.attempts_per_call},
        connect_timeout=config.connect_timeout_s,
        read_timeout=config.read_timeout_s,
        max_pool_connections=config.max_concurrency + config.read_concurrency + 2,
        s3={"addressing_style": config.addressing_style, "payload_signing_enabled": True},
    )
    if session is None:
        session = boto3.session.Session(profile_name=config.profile)
    return session.client("s3", endpoint_url=config.endpoint_url, config=client_config)


def make_session(
    *, profile: str | None = None, access_key_id: str | None = None, secret_access_key: str | None = None
) -> Any:
    """A ``boto3.Session`` for :func:`make_client`: a named profile, explicit keys, or boto3's chain.

    Explicit keys are for callers that hold them as data (a test server's
    identities); the engine itself never passes any.
    """
    return boto3.session.Session(
        profile_name=profile, aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key
    )


def transfer_config(config: StorageConfig | None = None) -> TransferConfig:
    """boto3's managed-transfer settings matching ``config``: the classic client, never CRT.

    For ``client.upload_file(..., Config=transfer_config(cfg))`` (staging a
    source, benchmarks). The CRT client ignores ``endpoint_url`` and would
    send to AWS (boto/boto3#4839); the classic one keeps equal part sizes for
    files.
    """
    config = config or StorageConfig()
    return TransferConfig(
        multipart_threshold=config.multipart_threshold_bytes,
        multipart_chunksize=config.part_size_bytes,
        max_concurrency=config.max_concurrency,
        use_threads=True,
        preferred_transfer_client="classic",
    )


# --------------------------------------------------------------------------- retries and errors


def is_transient(exc: BaseException) -> bool:
    """True if a later attempt could get past ``exc`` (timeouts, resets, 5xx, 429, throttling codes)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        status, code, _ = _facts(exc)
        return status in _TRANSIENT_STATUS or code in _TRANSIENT_CODES
    return isinstance(exc, _TRANSIENT_EXCEPTIONS)


def client_error_facts(exc: BaseException) -> tuple[int | None, str, str] | None:
    """``(HTTP status, error code, message)`` of a refusal from the server; None for any other exception.

    Lets the rest of the package read a botocore ``ClientError`` without
    importing botocore.
    """
    if isinstance(exc, botocore.exceptions.ClientError):
        return _facts(exc)
    return None


def is_missing(exc: BaseException) -> bool:
    """True if ``exc`` says the object does not exist (404; a HEAD's 404 carries no code)."""
    facts = client_error_facts(exc)
    return facts is not None and facts[0] == 404 and facts[1] in ("NoSuchKey", "NotFound", "404")


def _facts(exc: botocore.exceptions.ClientError) -> tuple[int | None, str, str]:
    response: dict[str, Any] = dict(exc.response)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    error = response.get("Error", {})
    return status, str(error.get("Code", "")), str(error.get("Message", ""))


def _sleep_unless(events: tuple[threading.Event, ...], delay_s: float) -> bool:
    """Sleep ``delay_s`` unless one of ``events`` is set first; True if one was."""
    end = time.monotonic() + delay_s
    while True:
        if any(event.is_set() for event in events):
            return True
        left = end - time.monotonic()
        if left <= 0:
            return False
        if len(events) == 1:
            return events[0].wait(left)
        time.sleep(min(_POLL_S, left))


def call(
    fn: Callable[[], T],
    *,
    config: StorageConfig,
    stop: tuple[threading.Event, ...] = (),
    deadline_s: float | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run ``fn`` (one request, botocore retrying inside), retrying transient failures.

    Full-jitter exponential backoff (``uniform(0, min(max, base * 2**n))``)
    until ``deadline_s`` (default ``config.retry_deadline_s``) after the first
    attempt; then the last error is raised. Setting any ``stop`` event ends
    the waiting early and raises the last error too. Non-transient errors are
    raised at once. Raises what ``fn`` raised: map it with :func:`storage_error`.
    """
    deadline = time.monotonic() + (config.retry_deadline_s if deadline_s is None else deadline_s)
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempt += 1
            delay = random.uniform(0, min(config.retry_max_delay_s, config.retry_base_delay_s * 2**attempt))
            if time.monotonic() + delay >= deadline:
                raise
            if on_retry is not None:
                on_retry(exc)
            if _sleep_unless(stop, delay):
                raise


def storage_error(exc: BaseException, target: S3Location, operation: str, *, side: Side) -> TranscodeError:
    """The error to raise for ``exc``, naming ``target`` and ``operation`` (never credentials).

    Refused credentials or permissions (403, or no credentials at all) are a
    :class:`CredentialsError` whatever the side, a failed condition (412) a
    :class:`SourceChangedError`. Then by ``side``: for the ``source``, a 404
    is a :class:`SourceNotFoundError`, the rest a :class:`SourceReadError`;
    for the ``output``, an :class:`UploadError`; for ``objects``, a
    :class:`StorageError`. A missing bucket is never retryable. Errors that
    already are a :class:`~transcoder.errors.TranscodeError` pass unchanged.
    """
    if isinstance(exc, TranscodeError):
        return exc
    context: dict[str, Any] = {"object": target.uri, "operation": operation}
    if isinstance(exc, botocore.exceptions.ClientError):
        status, code, message = _facts(exc)
        context.update(status=status, code=code or None)
        if message and message != code:
            context["detail"] = message
        if status == 403 or code in _CREDENTIAL_CODES:
            context["retryable"] = False
            return CredentialsError("object storage refused the credentials or their permissions", context=context)
        if status == 412 or code == "PreconditionFailed":  # only the reader sends a condition (If-Match)
            context["retryable"] = True
            return SourceChangedError("the source object changed while it was being read", context=context)
        if side == "source" and (status == 404 or code in _NOT_FOUND_CODES):
            context["retryable"] = False
            what = "source bucket not found" if code == "NoSuchBucket" else "source object not found"
            return SourceNotFoundError(what, context=context)
        if side == "output" and code == "NoSuchBucket":
            context["retryable"] = False
            return UploadError("destination bucket not found", context=context, retryable=False)
        if side == "objects" and code == "NoSuchBucket":
            context["retryable"] = False
            return StorageError("bucket not found", context=context, retryable=False)
        retryable = is_transient(exc) or code == "NoSuchUpload"
    elif isinstance(exc, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
        context["retryable"] = False
        return CredentialsError("no usable credentials for object storage", context=context)
    elif isinstance(exc, botocore.exceptions.ProfileNotFound):
        context["retryable"] = False
        return CredentialsError("the AWS profile does not exist", context=context)
    else:
        retryable = is_transient(exc)
        # The class says what failed; botocore's messages name only the endpoint and path.
        context["error"] = f"{type(exc).__name__}: {exc}"
    context["retryable"] = retryable
    if side == "source":
        return SourceReadError("reading the source object failed", context=context, retryable=retryable)
    if side == "output":
        return UploadError("storing an output object failed", context=context, retryable=retryable)
    return StorageError(f"{operation} failed", context=context, retryable=retryable)
