"""Checkpoints: a run that dies (a Spot reclaim, a crash, ``kill -9``) is resumed, not started over.

Segments are stored as they close. After every *span* of segments (``span``
segments, the same numbers in every video rendition) that every video
rendition has stored for good, the run writes a record after them::

    .checkpoint/span-00003.json

naming, per video rendition, each segment of the span with its size,
SHA-256, duration and I-frame ranges, and the rendition's init segment and
CODECS. A record is written only once the next segment of every rendition
has closed too, so the records never cover a rendition's last segment: a
resumed run always encodes something, and its muxer rewrites the init
segment and the playlists.

A later run into the same output resumes when three things match
(:func:`find_resume`): the record's *fingerprint* (:func:`fingerprint`: the
source's identity, its size plus ETag or modification time, and a hash of
the ladder and every coding setting; thread counts are left out, because a
retry may land on another instance size and segments are closed GOPs either
way), the records form an unbroken run of spans from the first, and every
object they name is in the output with its recorded size. It then starts
every video rendition at the first segment no record covers (a GOP
boundary: an IDR there) and keeps what the records name byte for byte.

Audio is encoded whole again on a resumed run: cheap next to video, and an
AAC encoder started mid-stream would put its priming at the seam. Decoding
starts from the beginning too (the storyboard, the poster and the chapter
detector see every frame); the rungs skip the slots before their start
without scaling or encoding them.

A failed or cancelled run keeps what its records name (``abort(keep=...)``)
and removes the rest; a successful run removes the records just before the
manifest, so a published output holds none.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from .config import TranscodeConfig
from .encode import x264_options
from .errors import TranscodeError
from .manifest import ObjectEntry, SourceIdentity
from .models import Ladder
from .output import ResumableOutput, content_type_for
from .segmenter import ClosedSegment
from .version import __version__

RECORD_DIR = ".checkpoint/"
FORMAT = 1


def record_path(first: int) -> str:
    """A record's name: the number of the first segment it covers."""
    return f"{RECORD_DIR}span-{first:05d}.json"


def span_segments(config: TranscodeConfig) -> int:
    """Segments per span: ``config.checkpoint_span_s`` in whole segments (at least one)."""
    return max(1, round(config.checkpoint_span_s / config.segment_s))


def fingerprint(identity: SourceIdentity, ladder: Ladder, config: TranscodeConfig, *, still: bool) -> str | None:
    """What a record must match to be resumed from; None when the source cannot be told apart.

    A source without a size, or without both an ETag and a modification
    time (a file object), is never resumed: an edited file of the same name
    would otherwise get the old segments.
    """
    if identity.size_bytes is None or (identity.etag is None and identity.modified_s is None):
        return None
    facts = {
        "format": FORMAT,
        "engine": __version__,
        "source": {"size": identity.size_bytes, "etag": identity.etag, "modified_s": identity.modified_s},
        "ladder": asdict(ladder),
        "encoder": asdict(config.encoder),
        "still": still,
        "segment_format": config.segment_format,
        "x264": [
            x264_options(
                rung,
                gop_frames=ladder.gop_frames(rung),
                preset=config.encoder.preset,
                crf=config.encoder.crf,
                still=still,
            )
            for rung in ladder.rungs
        ],
    }
    text = json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSegment:
    """One segment a record vouches for."""

    uri: str  # relative to its rendition's directory: seg_00012.ts
    size_bytes: int
    sha256: str
    duration_s: float  # as the muxer's playlist said it
    iframes: tuple[tuple[int, int, int], ...]  # offset, length, pts (see ClosedSegment)

    @classmethod
    def of(cls, segment: ClosedSegment, *, sha256: str, duration_s: float) -> StoredSegment:
        """The record of a closed ``segment`` (its hash from the inventory, its duration from the muxer)."""
        return cls(
            uri=segment.uri,
            size_bytes=segment.size_bytes,
            sha256=sha256,
            duration_s=duration_s,
            iframes=tuple(segment.iframes),
        )

    def closed(self) -> tuple[ClosedSegment, float]:
        return ClosedSegment(uri=self.uri, size_bytes=self.size_bytes, iframes=list(self.iframes)), self.duration_s


@dataclass(frozen=True, slots=True, kw_only=True)
class RenditionSpan:
    """One video rendition's part of a span."""

    name: str
    codecs: str | None
    init: ObjectEntry | None  # fMP4's init segment (key relative to the output root)
    segments: tuple[StoredSegment, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SpanRecord:
    """``.checkpoint/span-NNNNN.json``: segments ``first`` .. ``end - 1`` of every video rendition."""

    fingerprint: str
    first: int
    renditions: tuple[RenditionSpan, ...]

    @property
    def end(self) -> int:
        return self.first + (len(self.renditions[0].segments) if self.renditions else 0)

    @property
    def path(self) -> str:
        return record_path(self.first)

    def objects(self) -> list[ObjectEntry]:
        """Every object the record vouches for (its segments and init segments), keys from the output root."""
        found: list[ObjectEntry] = []
        for part in self.renditions:
            if part.init is not None:
                found.append(part.init)
            for segment in part.segments:
                key = f"{part.name}/{segment.uri}"
                found.append(
                    ObjectEntry(
                        key=key,
                        size_bytes=segment.size_bytes,
                        sha256=segment.sha256,
                        content_type=content_type_for(key),
                    )
                )
        return found

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SpanRecord:
        """Parse a record; ValueError (with the reason) for anything malformed."""
        try:
            raw = json.loads(data)
            renditions = tuple(
                RenditionSpan(
                    name=str(r["name"]),
                    codecs=None if r["codecs"] is None else str(r["codecs"]),
                    init=None if r["init"] is None else ObjectEntry(**r["init"]),
                    segments=tuple(
                        StoredSegment(
                            uri=str(s["uri"]),
                            size_bytes=int(s["size_bytes"]),
                            sha256=str(s["sha256"]),
                            duration_s=float(s["duration_s"]),
                            iframes=tuple((int(o), int(n), int(p)) for o, n, p in s["iframes"]),
                        )
                        for s in r["segments"]
                    ),
                )
                for r in raw["renditions"]
            )
            return cls(fingerprint=str(raw["fingerprint"]), first=int(raw["first"]), renditions=renditions)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"not a checkpoint record: {exc}") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume:
    """The stored segments before ``segments`` (every video rendition), from the records that vouch for them."""

    segments: int
    restored: Mapping[str, tuple[tuple[ClosedSegment, float], ...]]
    codecs: Mapping[str, str]
    records: tuple[str, ...]  # the record objects (relative paths)
    objects: tuple[ObjectEntry, ...]  # every object the records vouch for, for the inventory

    def kept(self) -> list[str]:
        return [*self.records, *(entry.key for entry in self.objects)]


def resume_from(records: Sequence[SpanRecord], renditions: Sequence[str]) -> Resume:
    """The :class:`Resume` that ``records`` make: they must cover segments 0 .. n-1, each once, in any order."""
    ordered = sorted(records, key=lambda record: record.first)
    end = 0
    for record in ordered:
        if record.first != end:
            raise ValueError(f"the records leave segments {end}..{record.first - 1} uncovered")
        end = record.end
    restored: dict[str, list[tuple[ClosedSegment, float]]] = {name: [] for name in renditions}
    codecs: dict[str, str] = {}
    objects: dict[str, ObjectEntry] = {}
    for record in ordered:
        for part in record.renditions:
            restored[part.name].extend(segment.closed() for segment in part.segments)
            if part.codecs:
                codecs[part.name] = part.codecs
        objects.update((entry.key, entry) for entry in record.objects())
    return Resume(
        segments=end,
        restored={name: tuple(items) for name, items in restored.items()},
        codecs=codecs,
        records=tuple(record.path for record in ordered),
        objects=tuple(objects[key] for key in sorted(objects)),
    )


def find_records(
    output: ResumableOutput, fingerprint: str, renditions: Sequence[str]
) -> tuple[dict[int, SpanRecord], str]:
    """The output's records that can be resumed from, by first segment, and a note on what was found.

    A record counts when it has this run's fingerprint, covers every video
    rendition with the same segment numbers, and every object it names is in
    the output at its recorded size. Reads the records only (small objects)
    and lists the rendition directories: the segments are never read back.
    """
    listing = output.listing(RECORD_DIR)
    if not listing:
        return {}, "no checkpoint records"
    matching: list[SpanRecord] = []
    for path in sorted(listing):
        data = output.read(path)
        if data is None:
            continue
        try:
            record = SpanRecord.from_json(data)
        except ValueError:
            continue  # cut short by a crash, or not ours
        if record.fingerprint == fingerprint and path == record.path:
            matching.append(record)
    if not matching:
        return {}, "the checkpoint records are for another source or other settings"
    stored = {name: output.listing(name + "/") for name in renditions}
    valid = {record.first: record for record in matching if _whole(record, renditions, stored)}
    if not valid:
        return {}, "the segments the checkpoint records name are missing or damaged"
    return valid, f"{len(valid)} checkpoint record(s) match"


def covered_prefix(records: Mapping[int, SpanRecord]) -> list[SpanRecord]:
    """The records that cover segments 0, 1, ... without a gap."""
    chain: list[SpanRecord] = []
    end = 0
    while (record := records.get(end)) is not None:
        chain.append(record)
        end = record.end
    return chain


def _whole(record: SpanRecord, renditions: Sequence[str], stored: Mapping[str, Mapping[str, int]]) -> bool:
    """The record covers exactly ``renditions``, the same segment numbers in each, all stored at their sizes."""
    if sorted(part.name for part in record.renditions) != sorted(renditions):
        return False
    counts = {len(part.segments) for part in record.renditions}
    if len(counts) != 1 or counts == {0}:
        return False
    for part in record.renditions:
        listing = stored[part.name]
        for segment in part.segments:
            if listing.get(f"{part.name}/{segment.uri}") != segment.size_bytes:
                return False
        if part.init is not None and listing.get(part.init.key) != part.init.size_bytes:
            return False
    return True


class _Inventory(Protocol):
    """The run's inventory (:class:`~transcoder.inventory.HashingSink`)."""

    def put(self, relpath: str, data: bytes) -> None: ...

    def entry(self, relpath: str) -> ObjectEntry | None: ...

    def forget(self, relpaths: Sequence[str]) -> None: ...


class VideoRendition(Protocol):
    """What the checkpointer reads of a video rendition (a rung's encoder and segmenter)."""

    @property
    def name(self) -> str: ...

    @property
    def codecs(self) -> str | None: ...

    @property
    def init_uri(self) -> str | None: ...

    @property
    def segment_s(self) -> float:
        """A whole segment's duration as the muxer's playlist states it."""
        ...

    def closed_segments(self) -> tuple[int, list[ClosedSegment]]:
        """The number of the first segment listed, and the segments closed so far."""
        ...


@dataclass(slots=True)
class Checkpointer:
    """Writes a span's record once every video rendition has stored its segments and closed the next one.

    Driven by the coordinator's thread (:meth:`tick`, a few times a second);
    reads the renditions' closed segments, asks ``output`` whether they are
    stored (it never waits for an upload) and puts the record through
    ``sink`` (the run's inventory, which also knows each object's hash).
    """

    output: ResumableOutput
    sink: _Inventory
    fingerprint: str
    span: int  # segments per span
    # The segments an earlier run (or other processes) stored before this
    # run's first; this run's spans start where they end.
    resume: Resume | None = None
    # Set when the segments before this run's first are not known yet
    # (chunk mode: workers encode them); spans start here.
    start: int | None = None
    _next: int = field(init=False, default=0)  # the first segment of the next span
    _written: list[str] = field(init=False, default_factory=list)
    _vouched: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if self.resume is not None:
            self._next = self.resume.segments
            self._vouched.extend(self.resume.kept())
        if self.start is not None:
            self._next = self.start

    def tick(self, renditions: Sequence[VideoRendition]) -> None:
        """Write the record of every span that became complete since the last tick."""
        if not renditions:
            return
        closed = [rendition.closed_segments() for rendition in renditions]
        while True:
            first = self._next
            end = first + self.span
            # The segment after the span must be closed too (see the module docstring).
            if any(first < offset or offset + len(segments) <= end for offset, segments in closed):
                return
            parts: list[RenditionSpan] = []
            paths: list[str] = []
            for rendition, (offset, segments) in zip(renditions, closed, strict=True):
                init = f"{rendition.name}/{rendition.init_uri}" if rendition.init_uri else None
                stored: list[StoredSegment] = []
                # Every segment but a rendition's last is a whole one (the
                # muxer cuts at each boundary's IDR), and the last is never
                # recorded: its duration is the rung's segment length.
                for segment in segments[first - offset : end - offset]:
                    key = f"{rendition.name}/{segment.uri}"
                    entry = self.sink.entry(key)
                    if entry is None:
                        return  # not put through this run's inventory yet
                    stored.append(StoredSegment.of(segment, sha256=entry.sha256, duration_s=rendition.segment_s))
                    paths.append(key)
                init_entry = self.sink.entry(init) if init else None
                if init is not None:
                    if init_entry is None:
                        return
                    paths.append(init)
                parts.append(
                    RenditionSpan(name=rendition.name, codecs=rendition.codecs, init=init_entry, segments=tuple(stored))
                )
            if not self.output.stored(paths):
                return
            record = SpanRecord(fingerprint=self.fingerprint, first=first, renditions=tuple(parts))
            self.sink.put(record.path, record.to_json())
            self._written.append(record.path)
            self._vouched.extend(paths)
            self._next = end

    def keep(self) -> list[str]:
        """What a failed run must leave for the next one: the records and everything they vouch for.

        A record is put before it counts: one still queued (S3) when the run
        fails is kept too, harmlessly, or is simply absent.
        """
        return [*self._vouched, *self._written]

    def records(self) -> list[str]:
        """Every record this output holds for the run (restored and new)."""
        restored = list(self.resume.records) if self.resume is not None else []
        return [*restored, *self._written]

    def unlist(self) -> None:
        """Leave the records out of the inventory (the manifest): they go once the master is stored."""
        self.sink.forget(self.records())

    def remove_records(self) -> None:
        """Delete every record, after the master playlist: the output is whole and needs them no more.

        Best effort: a record left behind names only published objects, and
        nothing reads it (a rerun finds the master first).
        """
        try:
            # Records of other settings too (an earlier run's, not resumed from).
            paths = sorted(set(self.records()) | set(self.output.listing(RECORD_DIR)))
        except TranscodeError:
            paths = self.records()
        for path in paths:
            try:
                self.output.retract(path)
            except TranscodeError:
                continue


__all__ = [
    "RECORD_DIR",
    "Checkpointer",
    "RenditionSpan",
    "Resume",
    "SpanRecord",
    "StoredSegment",
    "covered_prefix",
    "find_records",
    "fingerprint",
    "record_path",
    "resume_from",
    "span_segments",
]
