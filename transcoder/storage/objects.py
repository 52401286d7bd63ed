"""The small object API: list, read and delete objects in one bucket.

For callers that look at what is stored rather than stream a source or a
ladder (the worker finding a ladder an earlier run left, and reading its
playlists back). Every request goes through the package's retry
(:func:`~transcoder.storage.client.call`) and its error mapping
(:func:`~transcoder.storage.client.storage_error`), like the reader's and the
uploader's.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, TypeVar

from .client import S3Client, call, is_missing, storage_error
from .config import S3Location, StorageConfig
from .errors import StorageError

T = TypeVar("T")

# DeleteObjects takes at most 1000 keys per request (S3 and R2 alike).
_DELETE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object: its full key, size in bytes and modification time (epoch seconds)."""

    key: str
    size: int
    modified: float


class ObjectStore:
    """List, read and delete the objects of one bucket; keys are full keys in that bucket.

    Errors: :class:`~transcoder.storage.errors.CredentialsError` for refused
    credentials or permissions, a :class:`~transcoder.storage.errors.StorageError`
    that is not retryable for a missing bucket or a refused request, and a
    retryable one for faults that outlasted the retries (timeouts, resets,
    5xx, 429) until ``config.retry_deadline_s``. Setting ``cancel`` stops
    retrying. A missing object is not an error: :meth:`info` and :meth:`read`
    return None.

    Memory bound: :meth:`read` holds at most ``max_bytes + 1`` bytes of one
    object; listings hold one entry per object listed.

    Thread-safety: holds no mutable state; every method may be called from any
    thread (botocore clients are thread-safe).
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        config: StorageConfig | None = None,
        *,
        cancel: threading.Event | None = None,
    ) -> None:
        self._client = client
        self.bucket = bucket
        self._config = config or StorageConfig()
        self._stop = (cancel,) if cancel is not None else ()

    def list_prefixes(self, prefix: str) -> list[str]:
        """The "directories" one level below ``prefix``'s parent that start with ``prefix``, sorted.

        ``list_prefixes("hls/7/42-a")`` -> ``["hls/7/42-a1-3f9c0b1d/", ...]`` (full
        keys ending in ``/``): S3's common prefixes with the delimiter ``/``.
        """
        found: list[str] = []
        for page in self._pages(prefix, delimiter="/"):
            found.extend(str(item["Prefix"]) for item in page.get("CommonPrefixes", []))
        return sorted(found)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, at any depth, sorted by key."""
        found: list[ObjectInfo] = []
        for page in self._pages(prefix, delimiter=None):
            for item in page.get("Contents", []):
                found.append(ObjectInfo(str(item["Key"]), int(item["Size"]), item["LastModified"].timestamp()))
        return sorted(found, key=lambda o: o.key)

    def info(self, key: str) -> ObjectInfo | None:
        """The object's size and modification time (a HEAD), or None if it does not exist."""
        try:
            head = self._request(
                "HeadObject", key, lambda: self._client.head_object(Bucket=self.bucket, Key=key), missing_ok=True
            )
        except _Missing:
            return None
        return ObjectInfo(key, int(head["ContentLength"]), float(head["LastModified"].timestamp()))

    def read(self, key: str, *, max_bytes: int) -> bytes | None:
        """The object's bytes, or None if it does not exist.

        Raises a :class:`~transcoder.storage.errors.StorageError` that is not
        retryable if the object holds more than ``max_bytes``: only that many
        (plus one, to tell) are read.
        """

        def get() -> bytes:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            with closing(response["Body"]) as body:
                data: bytes = body.read(max_bytes + 1)
            return data

        try:
            data = self._request("GetObject", key, get, missing_ok=True)
        except _Missing:
            return None
        if len(data) > max_bytes:
            raise StorageError(
                "the object is larger than the reader accepts",
                context={"object": self._location(key).uri, "max_bytes": max_bytes, "retryable": False},
                retryable=False,
            )
        return data

    def delete(self, keys: Sequence[str]) -> None:
        """Delete ``keys`` (absent ones count as deleted), in batches of 1000.

        Raises a :class:`~transcoder.storage.errors.StorageError` naming the
        first key left and how many were, if the storage refused some.
        """
        left: list[str] = []
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = list(keys[start : start + _DELETE_BATCH])

            def delete_batch(batch: list[str] = batch) -> Any:
                return self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
                )

            response = self._request("DeleteObjects", batch[0], delete_batch)
            left.extend(str(error.get("Key")) for error in response.get("Errors", []))
        if left:
            raise StorageError(
                "the storage refused to delete some objects",
                context={"object": self._location(left[0]).uri, "left": len(left), "operation": "DeleteObjects"},
                retryable=True,
            )

    # -- requests -------------------------------------------------------------------

    def _location(self, key: str) -> S3Location:
        return S3Location(bucket=self.bucket, key=key)

    def _request(self, operation: str, key: str, fn: Callable[[], T], *, missing_ok: bool = False) -> T:
        """One request with the package's retries; with ``missing_ok`` a missing object raises :class:`_Missing`."""
        try:
            return call(fn, config=self._config, stop=self._stop)
        except Exception as exc:
            if missing_ok and is_missing(exc):
                raise _Missing from exc
            raise storage_error(exc, self._location(key), operation, side="objects") from exc

    def _pages(self, prefix: str, *, delimiter: str | None) -> list[dict[str, Any]]:
        """Every page of ListObjectsV2 under ``prefix``; each page is retried on its own."""
        arguments: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter is not None:
            arguments["Delimiter"] = delimiter
        pages: list[dict[str, Any]] = []
        while True:
            page: dict[str, Any] = self._request(
                "ListObjectsV2", prefix, functools.partial(self._client.list_objects_v2, **arguments)
            )
            pages.append(page)
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return pages
            arguments["ContinuationToken"] = token


class _Missing(Exception):
    """Internal: the object does not exist (a 404 for it, not for its bucket)."""
