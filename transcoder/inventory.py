"""A sink that keeps the inventory of a run: every object's key, size, SHA-256 and content type.

The hash is computed from the bytes as they are handed to the sink, in the
caller's thread, so nothing is read back from storage. ``hashlib`` releases the
GIL for buffers over 2 KiB: the encoder threads hash their segments in
parallel.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Sequence

from .manifest import ObjectEntry, sha256_hex
from .output import OutputSink, content_type_for


class HashingSink:
    """An :class:`~transcoder.output.OutputSink` that forwards to ``inner`` and records what it stores.

    :meth:`objects` is what the output holds now: every key put (the last put
    of a key wins), minus what :meth:`discard` removed; published objects
    (the master playlist) are recorded too. :meth:`abort` forgets everything.
    A put that fails is not recorded; one that the inner sink queues is, and
    the inner sink's :meth:`flush` raises if it is never stored (the run then
    fails and publishes nothing). Thread-safe, like the sinks it wraps.
    """

    def __init__(self, inner: OutputSink) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._objects: dict[str, ObjectEntry] = {}

    def objects(self) -> list[ObjectEntry]:
        """The recorded objects, sorted by key."""
        with self._lock:
            return [self._objects[key] for key in sorted(self._objects)]

    def _record(self, relpath: str, data: bytes) -> None:
        entry = ObjectEntry(
            key=relpath, size_bytes=len(data), sha256=sha256_hex(data), content_type=content_type_for(relpath)
        )
        with self._lock:
            self._objects[relpath] = entry

    # -- OutputSink ---------------------------------------------------------------

    def put(self, relpath: str, data: bytes) -> None:
        self.inner.put(relpath, data)
        self._record(relpath, data)

    def flush(self) -> None:
        self.inner.flush()

    def publish(self, relpath: str, data: bytes) -> None:
        self.inner.publish(relpath, data)
        self._record(relpath, data)

    def adopt(self, entries: Iterable[ObjectEntry]) -> None:
        """Record objects an earlier run stored that this run's output includes (a resumed run)."""
        with self._lock:
            for entry in entries:
                self._objects[entry.key] = entry

    def entry(self, relpath: str) -> ObjectEntry | None:
        """What was recorded for ``relpath``."""
        with self._lock:
            return self._objects.get(relpath)

    def forget(self, relpaths: Sequence[str]) -> None:
        """Stop listing ``relpaths`` (objects about to be removed, such as checkpoint records)."""
        with self._lock:
            for relpath in relpaths:
                self._objects.pop(relpath, None)

    def abort(self, keep: Collection[str] = ()) -> None:
        with self._lock:
            self._objects.clear()
        self.inner.abort(keep)

    def retract(self, relpath: str) -> None:
        self.inner.retract(relpath)
        with self._lock:
            self._objects.pop(relpath, None)

    def discard(self, relpaths: Sequence[str]) -> None:
        self.inner.discard(relpaths)
        with self._lock:
            for relpath in relpaths:
                self._objects.pop(relpath, None)

    def describe(self, relpath: str) -> str:
        return self.inner.describe(relpath)
