"""Stored ladders: find a complete one an earlier run of the job left, and read any ladder's report back.

Runs in the transcoding child (worker.child), which owns storage access: the
parent process imports neither boto3 nor PyAV. Two stores behind one small
interface: :class:`S3Store` (an S3/R2 bucket through the engine's object
API, ``transcoder.storage.objects``) and :class:`LocalStore` (a local directory, for local runs).

:func:`inspect_ladder` is the report of a stored ladder, and the check that it
is whole: the master playlist parses, every playlist it names exists and
parses and ends (``EXT-X-ENDLIST``), and every segment and init segment those
name exists; when the engine's ``manifest.json`` is there (written just before
the master), it is read back into the report and every object it lists must
be stored with the listed size. :func:`find_complete_ladder` returns the newest run directory of
the job whose ladder passes that check.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .layout import CHECKPOINTS, MANIFEST, MASTER, RunDir, job_stem, parse_run_dir
from .playlists import completion_report, parse_master, parse_media, resolve
from .settings import OutputRoot

if TYPE_CHECKING:
    from transcoder.storage import StorageConfig

__all__ = [
    "FoundLadder",
    "IncompleteLadderError",
    "LocalStore",
    "S3Store",
    "Store",
    "StoreError",
    "StoredObject",
    "find_complete_ladder",
    "find_resumable_run",
    "inspect_ladder",
]

# A playlist larger than this is not read (a corrupt or hostile object): reading it fails, not retryable.
_MAX_PLAYLIST_BYTES = 16 * 1024 * 1024


class IncompleteLadderError(ValueError):
    """The directory holds no whole ladder (no master, or something it names is missing or broken)."""


class StoreError(Exception):
    """Listing or reading the output store failed; ``retryable`` and ``denied`` say how."""

    def __init__(self, message: str, *, retryable: bool, denied: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.denied = denied


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str  # relative to the output root
    size: int
    modified: float  # epoch seconds


class Store(Protocol):
    """Read access to the output root. Keys are relative to it."""

    def directories(self, prefix: str) -> list[str]:
        """Directories whose path starts with ``prefix``, one level below its parent (relative, ending in ``/``).

        ``directories("7/42-a")`` -> ``["7/42-a1-3f9c0b1d/", "7/42-a2-0a1b2c3d/"]``.
        """

    def objects(self, directory: str) -> list[StoredObject]:
        """Every object under ``directory`` (ending in ``/``), at any depth."""

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None if it does not exist."""

    def modified(self, key: str) -> float | None:
        """The object's modification time (epoch seconds), or None if it does not exist."""


class LocalStore:
    """A local directory as a store (local runs and demos)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def directories(self, prefix: str) -> list[str]:
        parent, _, start = prefix.rpartition("/")
        base = self.root / parent if parent else self.root
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        head = f"{parent}/" if parent else ""
        return [f"{head}{e.name}/" for e in entries if e.name.startswith(start) and e.is_dir(follow_symlinks=False)]

    def objects(self, directory: str) -> list[StoredObject]:
        base = self.root / directory
        found: list[StoredObject] = []
        for folder, _, files in os.walk(base):
            for name in files:
                path = Path(folder) / name
                info = path.stat()
                found.append(StoredObject(path.relative_to(self.root).as_posix(), info.st_size, info.st_mtime))
        return sorted(found, key=lambda o: o.key)

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def modified(self, key: str) -> float | None:
        try:
            return (self.root / key).stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None


class S3Store:
    """A bucket prefix as a store, through the engine's object API (its retries and its error mapping).

    ``client`` is the engine's R2-safe client (``transcoder.make_s3_client``),
    shared with the run. The engine decides what a failure means (see
    ``transcoder.storage.client.storage_error``); this store only re-raises it
    as a :class:`StoreError`: refused credentials or permissions, a missing
    bucket and other refusals are ``denied`` (not retryable), faults that
    outlasted the engine's retries (timeouts, resets, 5xx, 429) are retryable.
    """

    def __init__(
        self,
        client: Any,
        root: OutputRoot,
        *,
        config: StorageConfig | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        if root.bucket is None:
            raise ValueError("S3Store needs an s3:// output root")
        # Imported here: boto3 loads only in a process that uses an s3:// root.
        from transcoder.storage.objects import ObjectStore

        self._objects = ObjectStore(client, root.bucket, config, cancel=cancel)
        self._prefix = root.prefix

    def directories(self, prefix: str) -> list[str]:
        with _as_store_error():
            found = self._objects.list_prefixes(self._prefix + prefix)
        return [directory[len(self._prefix) :] for directory in found]

    def objects(self, directory: str) -> list[StoredObject]:
        with _as_store_error():
            found = self._objects.list_objects(self._prefix + directory)
        return [StoredObject(obj.key[len(self._prefix) :], obj.size, obj.modified) for obj in found]

    def read(self, key: str) -> bytes | None:
        with _as_store_error():
            return self._objects.read(self._prefix + key, max_bytes=_MAX_PLAYLIST_BYTES)

    def modified(self, key: str) -> float | None:
        with _as_store_error():
            found = self._objects.info(self._prefix + key)
        return None if found is None else found.modified


@contextmanager
def _as_store_error() -> Iterator[None]:
    """Re-raise the engine's storage errors as :class:`StoreError`; a refusal is ``denied``."""
    from transcoder.storage import StorageError

    try:
        yield
    except StorageError as exc:
        raise StoreError(str(exc), retryable=exc.retryable, denied=not exc.retryable) from exc


@dataclass(frozen=True, slots=True)
class FoundLadder:
    run: RunDir
    report: dict[str, Any]  # the body of ``complete`` (CompletionReport JSON)


def inspect_ladder(store: Store, root: OutputRoot, run: RunDir) -> dict[str, Any]:
    """The ``complete`` body for the ladder in ``run``'s directory; ``IncompleteLadderError`` if it is not whole."""
    directory = run.relative
    objects = {obj.key: obj for obj in store.objects(directory)}
    master_key = directory + MASTER
    if master_key not in objects:
        raise IncompleteLadderError(f"{directory}: no {MASTER}")
    master_text = _read_text(store, master_key)
    try:
        master = parse_master(master_text)
        video_durations: list[float] = []
        variant_uris = {v.uri for v in master.variants}
        for uri in master.playlist_uris:
            key = resolve(directory, uri, within=directory)
            if key not in objects:
                raise IncompleteLadderError(f"{directory}: the master names {uri!r}, which is missing")
            playlist = parse_media(_read_text(store, key))
            if not playlist.ended:
                raise IncompleteLadderError(f"{directory}: {uri!r} has no EXT-X-ENDLIST")
            playlist_dir = key.rpartition("/")[0] + "/"
            for segment in (*playlist.map_uris, *playlist.segment_uris):
                if resolve(playlist_dir, segment, within=directory) not in objects:
                    raise IncompleteLadderError(f"{directory}: {uri!r} names {segment!r}, which is missing")
            if uri in variant_uris:
                video_durations.append(playlist.duration_s)
    except ValueError as exc:
        if isinstance(exc, IncompleteLadderError):
            raise
        raise IncompleteLadderError(f"{directory}: {exc}") from exc
    duration = max(video_durations)
    if duration <= 0:
        raise IncompleteLadderError(f"{directory}: the variants have no duration")
    report = completion_report(
        master,
        hls_path=run.hls_path(root),
        duration_s=duration,
        total_bytes=sum(obj.size for obj in objects.values()),
    )
    if directory + MANIFEST in objects:
        report["manifest"] = _read_manifest(store, directory, objects)
    return report


def _read_manifest(store: Store, directory: str, objects: dict[str, StoredObject]) -> dict[str, Any]:
    """The stored manifest, checked against the listing: every object it names is there with its size."""
    try:
        manifest = json.loads(_read_text(store, directory + MANIFEST))
        listed = manifest["objects"]
        for entry in listed:
            stored = objects.get(directory + str(entry["key"]))
            if stored is None:
                raise IncompleteLadderError(f"{directory}: the manifest lists {entry['key']!r}, which is missing")
            if entry["bytes"] is not None and stored.size != entry["bytes"]:
                raise IncompleteLadderError(
                    f"{directory}: {entry['key']!r} is {stored.size} bytes, the manifest says {entry['bytes']}"
                )
    except (ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, IncompleteLadderError):
            raise
        raise IncompleteLadderError(f"{directory}: {MANIFEST} is not a usable manifest: {exc!r}"[:300]) from exc
    if not isinstance(manifest, dict):
        raise IncompleteLadderError(f"{directory}: {MANIFEST} is not a JSON object")
    return manifest


def find_complete_ladder(
    store: Store,
    root: OutputRoot,
    *,
    video_id: int,
    job_id: int,
    on_skip: Callable[[str, str], None] | None = None,
) -> FoundLadder | None:
    """The newest whole ladder an earlier run of this job left (any attempt), or None.

    Run directories without a master playlist (runs that failed or are still
    encoding) are passed over silently; ones whose master exists but fails
    :func:`inspect_ladder` are passed over with ``on_skip(directory, why)``.
    Newest means the master playlist's modification time (then the name).
    """
    candidates: list[tuple[float, str, RunDir]] = []
    for directory in store.directories(job_stem(video_id, job_id)):
        run = parse_run_dir(directory)
        if run is None or run.video_id != video_id or run.job_id != job_id:
            continue
        modified = store.modified(directory + MASTER)
        if modified is not None:
            candidates.append((modified, directory, run))
    for _, directory, run in sorted(candidates, key=lambda c: (c[0], c[1]), reverse=True):
        try:
            return FoundLadder(run=run, report=inspect_ladder(store, root, run))
        except IncompleteLadderError as exc:
            if on_skip is not None:
                on_skip(directory, str(exc))
    return None


def find_resumable_run(store: Store, *, video_id: int, job_id: int) -> RunDir | None:
    """The newest run of this job that left checkpoint records and no master playlist, or None.

    Such a run died (a Spot reclaim, a crash, the timeout) after storing part
    of its ladder: a new attempt transcodes into its directory, and the
    engine resumes after what the records vouch for (transcoder.checkpoint)
    or, if the source or the settings changed, starts over there. Newest
    means the latest record's modification time.
    """
    candidates: list[tuple[float, str, RunDir]] = []
    for directory in store.directories(job_stem(video_id, job_id)):
        run = parse_run_dir(directory)
        if run is None or run.video_id != video_id or run.job_id != job_id:
            continue
        if store.modified(directory + MASTER) is not None:
            continue
        records = store.objects(directory + CHECKPOINTS)
        if records:
            candidates.append((max(record.modified for record in records), directory, run))
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c[0], c[1]))[2]


def _read_text(store: Store, key: str) -> str:
    data = store.read(key)
    if data is None:
        raise IncompleteLadderError(f"{key} is missing")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IncompleteLadderError(f"{key} is not UTF-8 text") from exc
