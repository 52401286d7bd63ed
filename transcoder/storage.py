"""Object storage (S3, Cloudflare R2): the client settings, a streaming source reader, an uploader.

The only module that imports boto3/botocore. Three parts:

* :func:`make_client`: one place for the settings R2 needs (checksums only
  ``when_required``, SigV4 with the payload SHA-256 signed, region ``auto``,
  standard retries, timeouts, a connection pool sized for our concurrency).
  :func:`transfer_config` is the matching boto3 managed-transfer setting
  (classic client, never CRT) for callers that upload whole files.
* :class:`S3Reader`: a seekable, read-only file over ranged GETs, read ahead
  by background threads, the object's ETag pinned (``If-Match``), so PyAV can
  demux an object in storage without a local copy.
* :class:`S3Sink`: an :class:`~transcoder.output.OutputSink` uploading each
  object as soon as it is handed over, concurrently, multipart with equal
  parts above a threshold, and aborting every multipart upload it started
  when the run fails.

Every request goes through :func:`_call`: botocore's own retries inside, our
deadline-bounded retry with full-jitter backoff outside (botocore's retry quota
runs out in long outages). Errors are mapped to
:class:`~transcoder.locations.StorageError` subclasses that name the object,
the operation and the status, say whether a retry could help, and never carry
credentials or signed URLs.
"""

from __future__ import annotations

import io
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from contextlib import closing
from dataclasses import dataclass
from typing import Any, TypeVar

# boto3 and botocore ship no type information (see S3Client below).
import boto3  # type: ignore[import-untyped]
import botocore.config  # type: ignore[import-untyped]
import botocore.exceptions  # type: ignore[import-untyped]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]

from .errors import CancelledError, TranscodeError
from .locations import (
    MAX_PARTS,
    MIB,
    CredentialsError,
    S3Location,
    SourceChangedError,
    SourceNotFoundError,
    SourceReadError,
    StorageConfig,
    UploadError,
)
from .output import content_type_for
from .threads import name_os_thread, started_pool

#: A botocore S3 client. boto3 ships no type stubs and this project adds no
#: stub package, so the client is typed as Any; only this module calls it.
S3Client = Any

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
# Cleanup (aborting multipart uploads, deleting a failed run's objects) gets its
# own, shorter deadline: it runs after the run's own deadline may have passed.
_CLEANUP_DEADLINE_S = 60.0
_SEGMENT_EXTENSIONS = (".ts", ".m4s", ".mp4", ".aac", ".m4a")


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


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, botocore.exceptions.ClientError):
        status, code, _ = _client_error_facts(exc)
        return status in _TRANSIENT_STATUS or code in _TRANSIENT_CODES
    return isinstance(exc, _TRANSIENT_EXCEPTIONS)


def _client_error_facts(exc: botocore.exceptions.ClientError) -> tuple[int | None, str, str]:
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


def _call(
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
    raised at once.
    """
    deadline = time.monotonic() + (config.retry_deadline_s if deadline_s is None else deadline_s)
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not _is_transient(exc):
                raise
            attempt += 1
            delay = random.uniform(0, min(config.retry_max_delay_s, config.retry_base_delay_s * 2**attempt))
            if time.monotonic() + delay >= deadline:
                raise
            if on_retry is not None:
                on_retry(exc)
            if _sleep_unless(stop, delay):
                raise


def _storage_error(exc: BaseException, target: S3Location, operation: str, *, reading: bool) -> TranscodeError:
    """The error to raise for ``exc``, naming ``target`` and ``operation`` (never credentials)."""
    if isinstance(exc, TranscodeError):
        return exc
    context: dict[str, Any] = {"object": target.uri, "operation": operation}
    if isinstance(exc, botocore.exceptions.ClientError):
        status, code, message = _client_error_facts(exc)
        context.update(status=status, code=code or None)
        if message and message != code:
            context["detail"] = message
        if status == 403 or code in _CREDENTIAL_CODES:
            context["retryable"] = False
            return CredentialsError("object storage refused the credentials or their permissions", context=context)
        if status == 412 or code == "PreconditionFailed":
            context["retryable"] = True
            return SourceChangedError("the source object changed while it was being read", context=context)
        if reading and (status == 404 or code in _NOT_FOUND_CODES):
            context["retryable"] = False
            what = "source bucket not found" if code == "NoSuchBucket" else "source object not found"
            return SourceNotFoundError(what, context=context)
        if not reading and code == "NoSuchBucket":
            context["retryable"] = False
            return UploadError("destination bucket not found", context=context, retryable=False)
        retryable = _is_transient(exc) or code == "NoSuchUpload"
    elif isinstance(exc, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
        context["retryable"] = False
        return CredentialsError("no usable credentials for object storage", context=context)
    elif isinstance(exc, botocore.exceptions.ProfileNotFound):
        context["retryable"] = False
        return CredentialsError("the AWS profile does not exist", context=context)
    else:
        retryable = _is_transient(exc)
        # The class says what failed; botocore's messages name only the endpoint and path.
        context["error"] = f"{type(exc).__name__}: {exc}"
    context["retryable"] = retryable
    if reading:
        return SourceReadError("reading the source object failed", context=context, retryable=retryable)
    return UploadError("storing an output object failed", context=context, retryable=retryable)


# --------------------------------------------------------------------------- reader


@dataclass(slots=True)
class ReaderStats:
    """What an :class:`S3Reader` did (updated under its lock; read when idle)."""

    gets: int = 0
    bytes_fetched: int = 0
    retries: int = 0
    cache_hits: int = 0
    peak_buffered_bytes: int = 0


class S3Reader(io.RawIOBase):
    """A seekable, read-only file over one S3 object, read ahead by background threads.

    Construction sends a HEAD: the object's size and ETag are pinned; every
    ranged GET carries ``If-Match`` with that ETag, so an object replaced
    mid-read raises :class:`SourceChangedError` instead of mixing two files.
    A missing object raises :class:`SourceNotFoundError` (an ``InputError``)
    here, before anything else happens.

    The object is read in chunks of ``config.read_chunk_bytes``; up to
    ``config.read_concurrency`` fetcher threads keep the chunk under the read
    position and the ``config.read_ahead_chunks`` after it fetched. A seek
    moves that window at once (FFmpeg reading an mp4 whose ``moov`` is at the
    end jumps to the end and back); chunks already fetched are reused.

    Memory bound: at most ``read_ahead_chunks + 2`` chunks are held or in
    flight (the window plus one spare, e.g. the file's first chunk while the
    index at the end is read); least recently used chunks outside the window
    are dropped first.

    Faults: each chunk is retried (connection resets, timeouts, 5xx, 429, a
    body cut short) until ``config.retry_deadline_s``; then, or on a refusal,
    the error is sticky and every later read raises it (a
    :class:`~transcoder.errors.TranscodeError`, which PyAV passes through).

    Thread-safety: like any file object, one thread reads and seeks at a time
    (FFmpeg's demuxer; the probe and the decoder take turns). :meth:`close` may
    be called from any thread; it stops the fetchers without waiting for a
    GET in flight, whose bytes are dropped.
    """

    def __init__(
        self,
        client: S3Client,
        location: S3Location,
        config: StorageConfig | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> None:
        super().__init__()
        self._client = client
        self.location = location
        self.uri = location.uri
        self._config = config or StorageConfig()
        self._cancel = cancel or threading.Event()
        self._stop = threading.Event()  # set by close()
        self.stats = ReaderStats()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._chunks: OrderedDict[int, bytes] = OrderedDict()  # least recently used first
        self._inflight: set[int] = set()
        self._error: TranscodeError | None = None
        self._want = 0  # the chunk under the read position: the window's start
        self._pos = 0
        try:
            head = _call(
                lambda: client.head_object(Bucket=location.bucket, Key=location.key),
                config=self._config,
                stop=(self._stop, self._cancel),
                on_retry=self._count_retry,
            )
        except Exception as exc:
            self.close()
            raise _storage_error(exc, location, "HeadObject", reading=True) from exc
        self.size: int = int(head["ContentLength"])
        self.etag: str = str(head["ETag"])
        self._chunk_bytes = self._config.read_chunk_bytes
        self._chunk_count = math.ceil(self.size / self._chunk_bytes)
        self._depth = self._config.read_ahead_chunks
        self._capacity = self._depth + 2

    # -- file interface ------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._pos + offset
        elif whence == io.SEEK_END:
            position = self.size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if position < 0:
            raise ValueError("negative seek position")
        self._pos = position
        if position < self.size:
            self._move_window(position // self._chunk_bytes)
        return position

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes from the position (fewer at a chunk boundary); b"" at the end."""
        self._check_open()
        if size is None or size < 0:
            parts = []
            while data := self.read(self._chunk_bytes):
                parts.append(data)
            return b"".join(parts)
        if size == 0 or self._pos >= self.size:
            return b""
        index, offset = divmod(self._pos, self._chunk_bytes)
        chunk = self._get_chunk(index)
        data = chunk[offset : offset + size]
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Stop the fetchers and drop the buffered chunks. Idempotent."""
        if not self.closed:
            self._stop.set()
            with self._cond:
                self._chunks.clear()
                self._cond.notify_all()
            for thread in self._threads:
                thread.join(timeout=_POLL_S)  # a GET in flight ends on its own; its bytes are dropped
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed S3Reader")

    # -- the window -------------------------------------------------------------

    def _move_window(self, index: int) -> None:
        with self._cond:
            if self._want != index:
                self._want = index
                self._cond.notify_all()

    def _get_chunk(self, index: int) -> bytes:
        with self._cond:
            if not self._threads:
                self._start_fetchers()
            if self._want != index:
                self._want = index
                self._cond.notify_all()
            while True:
                if self._error is not None:
                    raise self._error
                chunk = self._chunks.get(index)
                if chunk is not None:
                    self._chunks.move_to_end(index)
                    self.stats.cache_hits += 1
                    return chunk
                if self._stop.is_set():
                    raise ValueError("I/O operation on a closed S3Reader")
                if self._cancel.is_set():
                    raise CancelledError("reading the source was cancelled", context={"object": self.uri})
                self._cond.wait(0.25)

    def _start_fetchers(self) -> None:
        for number in range(self._config.read_concurrency):
            thread = threading.Thread(target=self._fetch_loop, name=f"s3-read-{number}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _next_index(self) -> int | None:
        """The first chunk of the window neither held nor in flight, if there is room for it."""
        end = min(self._want + self._depth + 1, self._chunk_count)
        for index in range(self._want, end):
            if index in self._chunks or index in self._inflight:
                continue
            return index if self._make_room() else None
        return None

    def _make_room(self) -> bool:
        window = range(self._want, self._want + self._depth + 1)
        while len(self._chunks) + len(self._inflight) >= self._capacity:
            victim = next((i for i in self._chunks if i not in window), None)
            if victim is None:
                return False
            del self._chunks[victim]
        return True

    def _fetch_loop(self) -> None:
        name_os_thread()  # its CPU shows as s3-read-N, not as the decoder that started it
        while True:
            with self._cond:
                while True:
                    if self._stop.is_set() or self._cancel.is_set() or self._error is not None:
                        return
                    index = self._next_index()
                    if index is not None:
                        break
                    self._cond.wait(0.25)
                self._inflight.add(index)
            try:
                data = self._fetch(index)
            except BaseException as exc:
                error = _storage_error(exc, self.location, "GetObject", reading=True)
                if error is not exc:
                    error.__cause__ = exc
                with self._cond:
                    self._inflight.discard(index)
                    if self._error is None and not self._stop.is_set():
                        self._error = error
                    self._cond.notify_all()
                return
            with self._cond:
                self._inflight.discard(index)
                if not self._stop.is_set():
                    self._chunks[index] = data
                    buffered = sum(len(c) for c in self._chunks.values())
                    self.stats.peak_buffered_bytes = max(self.stats.peak_buffered_bytes, buffered)
                self._cond.notify_all()

    def _fetch(self, index: int) -> bytes:
        start = index * self._chunk_bytes
        end = min(self.size, start + self._chunk_bytes) - 1

        def get() -> bytes:
            response = self._client.get_object(
                Bucket=self.location.bucket, Key=self.location.key, Range=f"bytes={start}-{end}", IfMatch=self.etag
            )
            with closing(response["Body"]) as body:
                data: bytes = body.read()
            if response.get("ETag") not in (None, self.etag):
                # A server that ignores If-Match still shows the change here.
                raise SourceChangedError(
                    "the source object changed while it was being read",
                    context={"object": self.uri, "retryable": True},
                )
            if len(data) != end - start + 1:
                raise SourceReadError(
                    "the storage returned a different byte range than asked for",
                    context={"object": self.uri, "range": f"{start}-{end}", "bytes": len(data), "retryable": False},
                    retryable=False,
                )
            return data

        data = _call(get, config=self._config, stop=(self._stop, self._cancel), on_retry=self._count_retry)
        with self._cond:
            self.stats.gets += 1
            self.stats.bytes_fetched += len(data)
        return data

    def _count_retry(self, exc: BaseException) -> None:
        with self._cond:
            self.stats.retries += 1


# --------------------------------------------------------------------------- uploader


@dataclass(slots=True)
class UploadStats:
    """What an :class:`S3Sink` did (updated under its lock; read when idle)."""

    objects: int = 0
    bytes: int = 0
    multipart_objects: int = 0
    parts: int = 0
    retries: int = 0
    peak_pending_bytes: int = 0


def part_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """Byte ranges ``[start, end)`` of a multipart upload: all equal but the last.

    The part size grows (in whole MiB) when ``size`` would need more than
    10,000 parts; it never shrinks, so R2's equal-parts rule always holds.
    """
    if size <= 0:
        return []
    if math.ceil(size / part_size) > MAX_PARTS:
        part_size = math.ceil(size / MAX_PARTS / MIB) * MIB
    return [(start, min(size, start + part_size)) for start in range(0, size, part_size)]


class S3Sink:
    """An :class:`~transcoder.output.OutputSink` writing under ``s3://bucket/prefix/``.

    :meth:`put` queues an object and returns; up to ``config.max_concurrency``
    requests run at once on worker threads. Objects above
    ``config.multipart_threshold_bytes`` are uploaded in equal parts
    (:func:`part_ranges`). Every object gets its Content-Type and a
    Cache-Control: long-lived and immutable for segments, short for playlists
    and the poster (a rerun into the same prefix rewrites those).

    :meth:`publish` (the master playlist) first waits for every queued object
    to be confirmed, then stores the master: a player never sees a master
    naming something missing. After the first failure, queued work is
    skipped, in-flight retries stop, and :meth:`put`, :meth:`flush` and
    :meth:`publish` raise that failure (an :class:`UploadError` naming the
    key, with ``retryable``; or a :class:`CredentialsError`).

    :meth:`abort` aborts every multipart upload this sink started that is not
    complete, and deletes every object it stored (the master included, if a
    publish was attempted), best effort; it never raises.

    Memory bound: :meth:`put` blocks while more than
    ``config.max_pending_upload_bytes`` are queued or uploading (one object
    larger than that is let through alone), plus one part-sized copy per
    part upload in flight.

    Thread-safety: every method may be called from any thread (the pipeline's
    encoder threads put concurrently). Call :meth:`close` when done.
    """

    def __init__(
        self,
        client: S3Client,
        location: S3Location,
        config: StorageConfig | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> None:
        self._client = client
        self.location = location
        self._config = config or StorageConfig()
        self._cancel = cancel or threading.Event()
        self._stop = threading.Event()  # the first failure, abort() or close()
        self._slots = threading.BoundedSemaphore(self._config.max_concurrency)  # requests in flight
        # Two pools so an object waiting for its parts never holds the workers its parts need.
        # Started here, in the thread that sets up the run (normal priority): see started_pool.
        self._objects = started_pool(self._config.max_concurrency, "s3-upload")
        self._parts = started_pool(self._config.max_concurrency, "s3-part")
        self._cond = threading.Condition()
        self._pending = 0
        self._pending_bytes = 0
        self._error: TranscodeError | None = None
        self._aborted = False
        self._stored: dict[str, str] = {}  # key -> ETag, confirmed by the storage
        self._open_uploads: dict[str, str] = {}  # upload id -> key, started and not completed or aborted
        self._publishing: set[str] = set()  # keys a publish was attempted for
        self.stats = UploadStats()

    # -- OutputSink ---------------------------------------------------------------

    def put(self, relpath: str, data: bytes) -> None:
        """Queue ``data`` for ``relpath``; blocks only while the pending-bytes budget is spent."""
        target = self.location.join(relpath)
        size = len(data)
        with self._cond:
            while True:
                self._raise_if_failed()
                if self._pending == 0 or self._pending_bytes + size <= self._config.max_pending_upload_bytes:
                    break
                self._cond.wait(_POLL_S * 2)
            self._pending += 1
            self._pending_bytes += size
            self.stats.peak_pending_bytes = max(self.stats.peak_pending_bytes, self._pending_bytes)
        try:
            future = self._objects.submit(self._upload, target, data)
        except RuntimeError as exc:  # the pool was shut down by close()
            self._finished(size)
            raise UploadError(
                "the uploader is closed", context={"object": target.uri, "retryable": False}, retryable=False
            ) from exc
        future.add_done_callback(lambda _future: self._finished(size))

    def flush(self) -> None:
        """Wait until every queued object is stored; raise the first failure."""
        with self._cond:
            while self._pending:
                self._cond.wait(_POLL_S * 2)
            self._raise_if_failed()

    def publish(self, relpath: str, data: bytes) -> None:
        """Store ``relpath`` after everything queued before it is confirmed (the master playlist)."""
        self.flush()
        target = self.location.join(relpath)
        with self._cond:
            self._publishing.add(target.key)
        try:
            etag = self._put_object(target, data)
        except TranscodeError as error:
            self._fail(error)
            raise
        self._stored_ok(target.key, etag, len(data))

    def abort(self) -> None:
        """Stop, abort this sink's open multipart uploads, delete what it stored. Never raises."""
        try:
            self._stop.set()
            with self._cond:
                self._aborted = True
                self._cond.notify_all()
            # Queued uploads see the stop and skip; in-flight ones stop retrying,
            # so each ends within one request's timeout.
            self._wait_idle(self._config.connect_timeout_s + self._config.read_timeout_s + 5)
            with self._cond:
                uploads = list(self._open_uploads.items())
                keys = sorted(set(self._stored) | self._publishing)
            for upload_id, key in uploads:
                self._abort_upload(key, upload_id)
            self._delete(keys)
        except Exception:
            pass  # abort is best effort by contract: the run's own error is what matters

    def retract(self, relpath: str) -> None:
        """Delete ``relpath`` if present (a stale master playlist from an earlier run)."""
        target = self.location.join(relpath)
        try:
            _call(
                lambda: self._client.delete_object(Bucket=target.bucket, Key=target.key),
                config=self._config,
                stop=(self._stop, self._cancel),
                on_retry=self._count_retry,
            )
        except Exception as exc:
            raise _storage_error(exc, target, "DeleteObject", reading=False) from exc

    def discard(self, relpaths: Sequence[str]) -> None:
        """Delete objects of ``relpaths`` this sink stored (a dropped rung), after the queue drains.

        Raises :class:`UploadError` if some could not be deleted: they would be
        left behind, unnamed by any playlist.
        """
        self.flush()  # a queued upload landing after the delete would stay behind
        keys = [self.location.join(relpath).key for relpath in relpaths]
        with self._cond:
            mine = [key for key in keys if key in self._stored]
        self._delete(mine)
        with self._cond:
            left = [key for key in mine if key in self._stored]
        if left:
            raise UploadError(
                "could not delete a dropped rung's objects",
                context={"object": self.location.join(relpaths[0]).uri, "left": len(left), "retryable": True},
                retryable=True,
            )

    def describe(self, relpath: str) -> str:
        return self.location.join(relpath).uri

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker threads; anything still queued is cancelled. Idempotent."""
        with self._cond:
            if self._pending:
                self._stop.set()
        self._objects.shutdown(wait=True, cancel_futures=True)
        self._parts.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> S3Sink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stored_keys(self) -> list[str]:
        """Keys confirmed stored by this sink, sorted (deleted ones excluded after :meth:`abort`)."""
        with self._cond:
            return sorted(self._stored)

    def open_upload_ids(self) -> list[str]:
        """Multipart uploads this sink started and has not completed or aborted."""
        with self._cond:
            return sorted(self._open_uploads)

    # -- work ------------------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        # Called with self._cond held.
        if self._error is not None:
            raise self._error
        if self._aborted:
            raise CancelledError("the upload was aborted", context={"destination": self.location.uri})
        if self._cancel.is_set():
            raise CancelledError("the upload was cancelled", context={"destination": self.location.uri})

    def _finished(self, size: int) -> None:
        with self._cond:
            self._pending -= 1
            self._pending_bytes -= size
            self._cond.notify_all()

    def _fail(self, error: TranscodeError) -> None:
        with self._cond:
            if self._error is None and not self._aborted:
                self._error = error
            self._stop.set()
            self._cond.notify_all()

    def _stopped(self) -> bool:
        return self._stop.is_set() or self._cancel.is_set()

    def _wait_idle(self, timeout_s: float) -> None:
        end = time.monotonic() + timeout_s
        with self._cond:
            while self._pending and time.monotonic() < end:
                self._cond.wait(_POLL_S * 2)

    def _stored_ok(self, key: str, etag: str, size: int, *, parts: int = 0) -> None:
        with self._cond:
            self._stored[key] = etag
            self.stats.objects += 1
            self.stats.bytes += size
            if parts:
                self.stats.multipart_objects += 1
                self.stats.parts += parts

    def _count_retry(self, exc: BaseException) -> None:
        with self._cond:
            self.stats.retries += 1

    def _cache_control(self, key: str) -> str:
        if key.endswith(_SEGMENT_EXTENSIONS):
            return self._config.cache_control_segments
        return self._config.cache_control_playlists

    def _request(self, operation: str, target: S3Location, fn: Callable[[], T]) -> T:
        """One request with retries, holding a concurrency slot only while it is sent."""

        def attempt() -> T:
            with self._slots:
                return fn()

        try:
            return _call(attempt, config=self._config, stop=(self._stop, self._cancel), on_retry=self._count_retry)
        except Exception as exc:
            raise _storage_error(exc, target, operation, reading=False) from exc

    def _upload(self, target: S3Location, data: bytes) -> None:
        if self._stopped():
            return  # an earlier failure, abort() or cancellation: skip queued work
        try:
            if len(data) > self._config.multipart_threshold_bytes:
                etag, parts = self._multipart(target, data), len(part_ranges(len(data), self._config.part_size_bytes))
            else:
                etag, parts = self._put_object(target, data), 0
        except TranscodeError as error:
            self._fail(error)
            return
        except BaseException as exc:  # a bug: still fail the run cleanly
            self._fail(UploadError("storing an output object failed", context={"object": target.uri, "error": exc}))
            raise
        self._stored_ok(target.key, etag, len(data), parts=parts)

    def _put_object(self, target: S3Location, data: bytes) -> str:
        response = self._request(
            "PutObject",
            target,
            lambda: self._client.put_object(
                Bucket=target.bucket,
                Key=target.key,
                Body=data,
                ContentType=content_type_for(target.key),
                CacheControl=self._cache_control(target.key),
            ),
        )
        return str(response.get("ETag", ""))

    def _multipart(self, target: S3Location, data: bytes) -> str:
        created = self._request(
            "CreateMultipartUpload",
            target,
            lambda: self._client.create_multipart_upload(
                Bucket=target.bucket,
                Key=target.key,
                ContentType=content_type_for(target.key),
                CacheControl=self._cache_control(target.key),
            ),
        )
        upload_id = str(created["UploadId"])
        with self._cond:
            self._open_uploads[upload_id] = target.key
        futures: list[Future[dict[str, Any]]] = []
        try:
            if self._stopped():  # abort() may have swept the open uploads while this one was created
                raise CancelledError("the upload was stopped", context={"object": target.uri})
            ranges = part_ranges(len(data), self._config.part_size_bytes)
            futures = [
                self._parts.submit(self._upload_part, target, upload_id, number, data, start, end)
                for number, (start, end) in enumerate(ranges, start=1)
            ]
            wait_futures(futures)
            parts = [future.result() for future in futures]  # raises the failed part's error
            completed = self._request(
                "CompleteMultipartUpload",
                target,
                lambda: self._client.complete_multipart_upload(
                    Bucket=target.bucket, Key=target.key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
            )
        except BaseException:
            self._stop.set()  # the run is failing: let sibling parts stop retrying
            for future in futures:
                future.cancel()
            wait_futures(futures)
            self._abort_upload(target.key, upload_id)
            raise
        with self._cond:
            self._open_uploads.pop(upload_id, None)
        return str(completed.get("ETag", ""))

    def _upload_part(
        self, target: S3Location, upload_id: str, number: int, data: bytes, start: int, end: int
    ) -> dict[str, Any]:
        if self._stopped():
            raise CancelledError("the upload was stopped", context={"object": target.uri})
        body = data[start:end]  # one part-sized copy per part in flight, not per part queued
        response = self._request(
            "UploadPart",
            target,
            lambda: self._client.upload_part(
                Bucket=target.bucket, Key=target.key, UploadId=upload_id, PartNumber=number, Body=body
            ),
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one multipart upload (best effort, own deadline); forget it once the storage agrees."""
        try:
            _call(
                lambda: self._client.abort_multipart_upload(Bucket=self.location.bucket, Key=key, UploadId=upload_id),
                config=self._config,
                deadline_s=min(self._config.retry_deadline_s, _CLEANUP_DEADLINE_S),
            )
        except botocore.exceptions.ClientError as exc:
            status, code, _ = _client_error_facts(exc)
            if status != 404 and code != "NoSuchUpload":
                return  # still open: abort() tries again
        except Exception:
            return
        with self._cond:
            self._open_uploads.pop(upload_id, None)

    def _delete(self, keys: list[str]) -> None:
        """Delete ``keys`` (best effort, own deadline): DeleteObjects in batches of 1000, else one by one."""
        deadline_s = min(self._config.retry_deadline_s, _CLEANUP_DEADLINE_S)
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]

            def delete_batch(batch: list[str] = batch) -> Any:
                return self._client.delete_objects(
                    Bucket=self.location.bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
                )

            try:
                response = _call(delete_batch, config=self._config, deadline_s=deadline_s)
            except botocore.exceptions.ClientError:
                # A store without DeleteObjects (or refusing its checksum header): delete one by one.
                self._delete_each(batch, deadline_s)
                continue
            except Exception:
                continue
            failed = {str(error.get("Key")) for error in response.get("Errors", [])}
            with self._cond:
                for key in batch:
                    if key not in failed:
                        self._stored.pop(key, None)

    def _delete_each(self, keys: list[str], deadline_s: float) -> None:
        def delete_one(key: str) -> None:
            try:
                _call(
                    lambda: self._client.delete_object(Bucket=self.location.bucket, Key=key),
                    config=self._config,
                    deadline_s=deadline_s,
                )
            except Exception:
                return
            with self._cond:
                self._stored.pop(key, None)

        for future in [self._parts.submit(delete_one, key) for key in keys]:
            future.result()
