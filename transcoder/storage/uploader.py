"""The uploader: an output sink storing each object as soon as it is handed over.

Concurrent, multipart with equal parts above a threshold (R2 requires them),
the master playlist last, and every multipart upload it started aborted when
the run fails.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import CancelledError, TranscodeError
from ..output import content_type_for
from ..threads import started_pool
from .client import S3Client, call, client_error_facts, storage_error
from .config import MAX_PARTS, MIB, S3Location, StorageConfig
from .errors import UploadError
from .objects import ObjectStore

T = TypeVar("T")

_POLL_S = 0.05
# Cleanup (aborting multipart uploads, deleting a failed run's objects) gets its
# own, shorter deadline: it runs after the run's own deadline may have passed.
_CLEANUP_DEADLINE_S = 60.0
_MAX_READ_BYTES = 1024 * 1024  # a checkpoint record is about 1 KB per rendition and span
_SEGMENT_EXTENSIONS = (".ts", ".m4s", ".mp4", ".aac", ".m4a")


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

    def abort(self, keep: Collection[str] = ()) -> None:
        """Stop, abort this sink's open multipart uploads, delete what it stored but ``keep``. Never raises."""
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
                kept = {self.location.join(relpath).key for relpath in keep}
                keys = sorted((set(self._stored) | self._publishing) - kept)
            for upload_id, key in uploads:
                self._abort_upload(key, upload_id)
            self._delete(keys)
        except Exception:
            pass  # abort is best effort by contract: the run's own error is what matters

    def retract(self, relpath: str) -> None:
        """Delete ``relpath`` if present (a stale master playlist from an earlier run)."""
        target = self.location.join(relpath)
        try:
            call(
                lambda: self._client.delete_object(Bucket=target.bucket, Key=target.key),
                config=self._config,
                stop=(self._stop, self._cancel),
                on_retry=self._count_retry,
            )
        except Exception as exc:
            raise storage_error(exc, target, "DeleteObject", side="output") from exc

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

    # -- ResumableOutput (transcoder.checkpoint) -------------------------------------

    def stored(self, relpaths: Sequence[str]) -> bool:
        """Whether every one of ``relpaths`` was confirmed by the storage (a PUT or multipart completed)."""
        keys = [self.location.join(relpath).key for relpath in relpaths]
        with self._cond:
            return all(key in self._stored for key in keys)

    def listing(self, prefix: str = "") -> dict[str, int]:
        """Objects under ``prefix`` (any run's), relative to this sink's prefix, with their sizes."""
        base = self.location.key
        return {info.key[len(base) :]: info.size for info in self._object_api().list_objects(base + prefix)}

    def read(self, relpath: str) -> bytes | None:
        """One small object's bytes (a checkpoint record), None if it does not exist."""
        return self._object_api().read(self.location.join(relpath).key, max_bytes=_MAX_READ_BYTES)

    def _object_api(self) -> ObjectStore:
        return ObjectStore(self._client, self.location.bucket, self._config, cancel=self._cancel)

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
            return call(attempt, config=self._config, stop=(self._stop, self._cancel), on_retry=self._count_retry)
        except Exception as exc:
            raise storage_error(exc, target, operation, side="output") from exc

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
            call(
                lambda: self._client.abort_multipart_upload(Bucket=self.location.bucket, Key=key, UploadId=upload_id),
                config=self._config,
                deadline_s=min(self._config.retry_deadline_s, _CLEANUP_DEADLINE_S),
            )
        except Exception as exc:
            facts = client_error_facts(exc)
            if facts is None or (facts[0] != 404 and facts[1] != "NoSuchUpload"):
                return  # still open: abort() tries again
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
                response = call(delete_batch, config=self._config, deadline_s=deadline_s)
            except Exception as exc:
                if client_error_facts(exc) is not None:
                    # A store without DeleteObjects (or refusing its checksum header): delete one by one.
                    self._delete_each(batch, deadline_s)
                continue
            failed = {str(error.get("Key")) for error in response.get("Errors", [])}
            with self._cond:
                for key in batch:
                    if key not in failed:
                        self._stored.pop(key, None)

    def _delete_each(self, keys: list[str], deadline_s: float) -> None:
        def delete_one(key: str) -> None:
            try:
                call(
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
