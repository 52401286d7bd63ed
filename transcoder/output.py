"""Where a run's files go: the destination interface and the local directory.

The pipeline hands every finished object (a closed segment, a playlist) to an
:class:`OutputSink` by its path relative to the destination root. A sink may
store synchronously (a local directory) or queue the work (an object store
uploader); :meth:`OutputSink.flush` waits until everything handed over so far
is stored. The master playlist goes through :meth:`OutputSink.publish`, which
the pipeline calls last, after a successful flush: a reader never sees a master
playlist that names something missing.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import OutputError

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".jpg": "image/jpeg",
    ".vtt": "text/vtt",  # storyboard thumbnails and chapter tracks (WebVTT section 7)
    ".json": "application/json",  # Apple's chapter data (RFC 8216 4.3.4.4: URI names a JSON resource)
}


def content_type_for(relpath: str) -> str:
    """The Content-Type an HLS player expects for ``relpath``."""
    return CONTENT_TYPES.get(os.path.splitext(relpath)[1], "application/octet-stream")


class OutputSink(Protocol):
    """Stores a run's objects. Implementations must be thread-safe."""

    def put(self, relpath: str, data: bytes) -> None:
        """Store (or queue) one object; may raise OutputError for an earlier failure."""

    def flush(self) -> None:
        """Wait until every object put so far is stored; raise the first failure."""

    def publish(self, relpath: str, data: bytes) -> None:
        """Store the object that makes the output visible (the master playlist)."""

    def abort(self, keep: Collection[str] = ()) -> None:
        """Undo what this run stored, as far as possible, except ``keep``. Never raises.

        ``keep``: objects a checkpoint record vouches for (transcoder.checkpoint),
        which a later run resumes from.
        """

    def retract(self, relpath: str) -> None:
        """Remove an object an earlier run published (a stale master playlist)."""

    def discard(self, relpaths: Sequence[str]) -> None:
        """Remove objects this run put that will not be published (a dropped rung).

        Waits until objects still queued are stored, then removes them; raises
        OutputError if some remain. Called before the master playlist.
        """

    def describe(self, relpath: str) -> str:
        """Where ``relpath`` ends up, for messages (never contains secrets)."""


@runtime_checkable
class ResumableOutput(Protocol):
    """An output a run can checkpoint into and resume from (:mod:`transcoder.checkpoint`)."""

    def stored(self, relpaths: Sequence[str]) -> bool:
        """Whether every one of ``relpaths`` (put earlier) is stored for good. Does not wait."""

    def listing(self, prefix: str = "") -> dict[str, int]:
        """Objects under ``prefix`` (relative to the root), any run's, with their sizes."""

    def read(self, relpath: str) -> bytes | None:
        """One object's bytes (None if absent): small ones only, the checkpoint records."""

    def retract(self, relpath: str) -> None:
        """Remove an object an earlier run (or this one) stored."""


class LocalDirectory:
    """A sink writing into a local directory.

    Objects are written where they belong as they arrive, each to a
    temporary name and renamed, so every file appears whole or not at all (a
    run killed mid-write leaves no truncated segment or checkpoint record
    under its real name). :meth:`abort` removes every file this run wrote.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._written: list[Path] = []
        self._lock = threading.Lock()

    def _target(self, relpath: str) -> Path:
        if relpath.startswith("/") or ".." in Path(relpath).parts:
            raise OutputError("refusing a path outside the output directory", context={"path": relpath})
        return self.root / relpath

    def put(self, relpath: str, data: bytes) -> None:
        target = self._target(relpath)
        with self._lock:
            self._written.append(target)
        self._write(target, data)

    def flush(self) -> None:
        return None  # writes are synchronous

    def publish(self, relpath: str, data: bytes) -> None:
        target = self._target(relpath)
        self._write(target, data)
        with self._lock:
            self._written.append(target)

    def _write(self, target: Path, data: bytes) -> None:
        temporary = target.with_name(f".{target.name}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(data)
            os.replace(temporary, target)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise OutputError(
                "could not write output file", context={"path": str(target), "error": exc.strerror}
            ) from exc

    def abort(self, keep: Collection[str] = ()) -> None:
        kept = {self.root / relpath for relpath in keep}
        with self._lock:
            written, self._written = [path for path in self._written if path not in kept], []
        directories: set[Path] = set()
        for path in written:
            try:
                path.unlink(missing_ok=True)
            except OSError:
                continue
            directories.add(path.parent)
        for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
            while directory != self.root and self.root in directory.parents:
                try:
                    directory.rmdir()  # only if empty: never remove what we did not write
                except OSError:
                    break
                directory = directory.parent

    def retract(self, relpath: str) -> None:
        target = self._target(relpath)
        try:
            target.unlink(missing_ok=True)
        except OSError as exc:
            raise OutputError("could not remove a stale output file", context={"path": relpath}) from exc
        if target.parent != self.root and self.root in target.parent.parents:
            with contextlib.suppress(OSError):  # only if empty (the checkpoint records' directory)
                target.parent.rmdir()

    def discard(self, relpaths: Sequence[str]) -> None:
        targets = {self._target(relpath) for relpath in relpaths}
        with self._lock:
            self._written = [path for path in self._written if path not in targets]
        directories: set[Path] = set()
        for target in targets:
            try:
                target.unlink(missing_ok=True)
            except OSError as exc:
                raise OutputError(
                    "could not remove a dropped rung's file", context={"path": str(target), "error": exc.strerror}
                ) from exc
            directories.add(target.parent)
        for directory in directories:
            if directory != self.root and self.root in directory.parents:
                with contextlib.suppress(OSError):  # only if empty: never remove what we did not write
                    directory.rmdir()

    def describe(self, relpath: str) -> str:
        return str(self.root / relpath)

    # -- ResumableOutput -------------------------------------------------------

    def stored(self, relpaths: Sequence[str]) -> bool:
        return True  # put() writes before it returns

    def listing(self, prefix: str = "") -> dict[str, int]:
        base = self._target(prefix) if prefix else self.root
        if not base.is_dir():
            return {}
        found: dict[str, int] = {}
        for path in base.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink():
                    found[path.relative_to(self.root).as_posix()] = path.stat().st_size
            except OSError:
                continue  # removed meanwhile
        return found

    def read(self, relpath: str) -> bytes | None:
        try:
            return self._target(relpath).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise OutputError(
                "could not read an output file", context={"path": relpath, "error": exc.strerror}
            ) from exc
