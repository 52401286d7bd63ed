"""A seekable, read-only file over one S3 object: ranged GETs, read ahead by background threads.

The object's ETag is pinned (``If-Match``), so PyAV can demux an object in
storage without a local copy and a replaced object fails cleanly.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from ..errors import CancelledError, TranscodeError
from ..threads import name_os_thread
from .client import S3Client, call, storage_error
from .config import S3Location, StorageConfig
from .errors import SourceChangedError, SourceReadError

# How long close() waits for each fetcher: a GET in flight ends on its own.
_POLL_S = 0.05


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
            head = call(
                lambda: client.head_object(Bucket=location.bucket, Key=location.key),
                config=self._config,
                stop=(self._stop, self._cancel),
                on_retry=self._count_retry,
            )
        except Exception as exc:
            self.close()
            raise storage_error(exc, location, "HeadObject", side="source") from exc
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
                error = storage_error(exc, self.location, "GetObject", side="source")
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

        data = call(get, config=self._config, stop=(self._stop, self._cancel), on_retry=self._count_retry)
        with self._cond:
            self.stats.gets += 1
            self.stats.bytes_fetched += len(data)
        return data

    def _count_retry(self, exc: BaseException) -> None:
        with self._cond:
            self.stats.retries += 1
