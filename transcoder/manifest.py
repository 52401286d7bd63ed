"""The output manifest (``manifest.json``): what a run stored, measured, and how it was planned.

Pure: :func:`build_manifest` turns the run's facts into a JSON-able dict;
:func:`render_manifest` gives the exact bytes stored; :func:`plan_hash` is
the plan's fingerprint. The coordinator stores the manifest after every other
object and before the master playlist (``transcoder.pipeline``), so a master
never exists without its manifest.

The document (``version`` 1; the JSON schema is ``Manifest`` in
``api_client/openapi.json``):

* ``objects``: every object of the output, sorted by key, each exactly once:
  ``key`` (relative to the directory holding the master playlist and the
  manifest), ``bytes``, ``sha256`` (hex, of the bytes as handed to the sink)
  and ``content_type`` (as stored). The master playlist and the manifest
  itself are listed too, so deleting exactly the listed keys removes the
  whole output. **Rule:** a document cannot hold its own hash, so the
  manifest's own entry (the key named by ``manifest``) is the one entry whose
  ``bytes`` and ``sha256`` are null; every other entry has both. ``total_bytes``
  sums the entries that have ``bytes`` (everything but the manifest).
* ``renditions``: per published rendition its playlists, codecs, size, frame
  rate, colour, measured peak and average bitrate, segment count, duration.
* ``poster``, ``thumbnails``, ``chapters``: the keys a player page needs
  (null when the run made none).
* ``source``: identity (URI when it has one, size, ETag or modification time)
  and facts (container, duration, codecs, colour as tagged, loudness before
  and after normalisation when the audio path measured it).
* ``engine`` (name and version), ``plan_hash`` (see :func:`plan_hash`),
  ``timing`` (wall and CPU seconds of the run up to the manifest's writing:
  probe, encode, upload and playlists; the master's own store comes after).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from .colour import (
    MATRIX_NAMES,
    OUTPUT_MATRIX,
    OUTPUT_PRIMARIES,
    OUTPUT_RANGE,
    OUTPUT_TRANSFER,
    PRIMARIES_NAMES,
    RANGE_NAMES,
    TRANSFER_NAMES,
)
from .config import EncoderSettings, SegmentFormat
from .models import ChaptersResult, Ladder, LoudnessResult, RenditionResult, SourceInfo, ThumbnailsResult

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
ENGINE_NAME = "hls-transcoder"

# EncoderSettings fields that never change an output byte, so they stay out of
# the plan hash: reuse_still_frames skips rescaling a repeated frame and gives
# the same bytes (transcoder.still).
_NOT_HASHED_ENCODER_FIELDS = frozenset({"reuse_still_frames"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectEntry:
    """One stored object: ``key`` relative to the output root, its size and SHA-256 (hex)."""

    key: str
    size_bytes: int
    sha256: str
    content_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceIdentity:
    """Which source this was: ``uri`` (an ``s3://`` URI or a path as given; None for a file object),
    ``size_bytes``, the object's ``etag`` (S3) or the file's ``modified_s`` (epoch seconds)."""

    uri: str | None
    size_bytes: int | None
    etag: str | None = None
    modified_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFacts:
    """Everything :func:`build_manifest` needs, as the run knows it just before the master is stored.

    ``objects`` are every object stored so far (the manifest and the master
    excluded: they are added here); ``master`` is the master playlist about to
    be stored, with its hash.
    """

    objects: Sequence[ObjectEntry]
    master: ObjectEntry
    renditions: Sequence[RenditionResult]
    source: SourceInfo
    identity: SourceIdentity
    ladder: Ladder
    encoder: EncoderSettings
    segment_format: SegmentFormat
    engine_version: str
    wall_s: float
    cpu_s: float
    poster_key: str | None = None
    thumbnails: ThumbnailsResult | None = None
    chapters: ChaptersResult | None = None
    loudness: LoudnessResult | None = None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def plan_hash(ladder: Ladder, encoder: EncoderSettings, segment_format: SegmentFormat) -> str:
    """The SHA-256 (hex) of the plan's canonical JSON: what decides how each rendition is encoded.

    In: every planned rung with every field (name, size, frame rate as an exact
    fraction, bitrate, maxrate, bufsize, profile, level, its audio plan), every
    audio plan with every field, the GOP and segment lengths (all of
    :class:`~transcoder.models.Ladder`, generically, so a field added there is
    hashed too), every :class:`~transcoder.config.EncoderSettings` field but
    those that never change an output byte (``reuse_still_frames``), and the
    segment format. Out: the source, the destination, thread counts (they
    depend on the machine; x264's bytes do vary a little with frame threads,
    so equal hashes mean the same plan, not bit-identical segments), limits,
    the poster and storyboard switches and ``min_rung_saving`` (which
    published rungs survive is a measurement, shown by ``renditions``). The
    ladder is the planned one, before rungs are predicted away or pruned.
    Compare ``engine.version`` as well: another engine may encode the same plan
    differently.
    """
    encoder_fields = {
        f.name: _canonical(getattr(encoder, f.name))
        for f in dataclasses.fields(encoder)
        if f.name not in _NOT_HASHED_ENCODER_FIELDS
    }
    plan = {"ladder": _canonical(ladder), "encoder": encoder_fields, "segment_format": segment_format}
    return sha256_hex(json.dumps(plan, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())


def build_manifest(facts: RunFacts) -> dict[str, Any]:
    """The manifest document for ``facts`` (see the module docstring); JSON-able, no NaN."""
    objects = _objects(facts.objects, facts.master)
    return {
        "version": MANIFEST_VERSION,
        "engine": {"name": ENGINE_NAME, "version": facts.engine_version},
        "plan_hash": plan_hash(facts.ladder, facts.encoder, facts.segment_format),
        "segment_format": facts.segment_format,
        "master": facts.master.key,
        "manifest": MANIFEST,
        "poster": facts.poster_key,
        "thumbnails": _thumbnails(facts.thumbnails),
        "chapters": _chapters(facts.chapters),
        "duration_s": _seconds(max((r.duration_s for r in facts.renditions), default=0.0)),
        "renditions": [_rendition(r) for r in facts.renditions],
        "source": _source(facts.source, facts.identity, facts.loudness),
        "objects": objects,
        "total_bytes": sum(o["bytes"] for o in objects if o["bytes"] is not None),
        "timing": {"wall_s": _seconds(facts.wall_s), "cpu_s": _seconds(facts.cpu_s)},
    }


def render_manifest(document: Mapping[str, Any]) -> bytes:
    """The exact bytes stored: compact UTF-8 JSON (ASCII-escaped) and a newline."""
    return (json.dumps(document, separators=(",", ":"), allow_nan=False) + "\n").encode()


def deletable_keys(document: Mapping[str, Any]) -> list[str]:
    """Every key a deleter removes to take the whole output away (the manifest and master included)."""
    return [str(entry["key"]) for entry in document["objects"]]


def _objects(stored: Iterable[ObjectEntry], master: ObjectEntry) -> list[dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = {}
    for entry in (*stored, master):
        entries[entry.key] = {
            "key": entry.key,
            "bytes": entry.size_bytes,
            "sha256": entry.sha256,
            "content_type": entry.content_type,
        }
    # The manifest's own entry: its size and hash cannot be inside it (see the module docstring).
    entries[MANIFEST] = {"key": MANIFEST, "bytes": None, "sha256": None, "content_type": "application/json"}
    return [entries[key] for key in sorted(entries)]


def _rendition(r: RenditionResult) -> dict[str, Any]:
    video = r.kind == "video"
    return {
        "name": r.name,
        "kind": r.kind,
        "playlist": r.playlist_uri,
        "iframe_playlist": r.iframe_playlist_uri,
        "init": r.init_uri,
        "codecs": r.codecs,
        "width": r.width,
        "height": r.height,
        "frame_rate": _rate(r.fps),
        "frame_rate_exact": _fraction(r.fps),
        # Every rung is encoded BT.709 limited range and tagged so (transcoder.colour).
        "colour": _output_colour() if video else None,
        "peak_bps": r.peak_bps,
        "average_bps": r.average_bps,
        "segment_count": r.segment_count,
        "duration_s": _seconds(r.duration_s),
        "bytes": r.size_bytes,
        "audio_group": r.audio_group,
    }


def _output_colour() -> dict[str, str]:
    return {
        "primaries": PRIMARIES_NAMES[OUTPUT_PRIMARIES],
        "transfer": TRANSFER_NAMES[OUTPUT_TRANSFER],
        "matrix": MATRIX_NAMES[OUTPUT_MATRIX],
        "range": RANGE_NAMES[OUTPUT_RANGE],
    }


def _source(info: SourceInfo, identity: SourceIdentity, loudness: LoudnessResult | None) -> dict[str, Any]:
    video, audio = info.video, info.audio
    modified = None
    if identity.modified_s is not None:
        modified = datetime.fromtimestamp(identity.modified_s, UTC).isoformat(timespec="milliseconds")
        modified = modified.replace("+00:00", "Z")
    return {
        "uri": identity.uri,
        "size_bytes": identity.size_bytes if identity.size_bytes is not None else info.size_bytes,
        "etag": identity.etag,
        "modified": modified,
        "container": info.container,
        "duration_s": _seconds(info.duration_s),
        "bit_rate_bps": info.bit_rate_bps,
        "video": {
            "codec": video.codec,
            "width": video.display_width,
            "height": video.display_height,
            "coded_width": video.coded_width,
            "coded_height": video.coded_height,
            "rotation_deg": video.rotation_deg,
            "frame_rate": _rate(video.fps),
            "frame_rate_exact": _fraction(video.fps),
            "vfr": video.is_vfr,
            "pix_fmt": video.pix_fmt,
            "bit_depth": video.bit_depth,
            "interlaced": video.interlaced,
            "duration_s": _seconds(video.duration_s) if video.duration_s is not None else None,
            # As tagged in the stream ("unknown" when untagged).
            "colour": {
                "primaries": video.colour_primaries,
                "transfer": video.colour_transfer,
                "matrix": video.colour_matrix,
                "range": video.colour_range,
            },
        },
        "audio": None
        if audio is None
        else {
            "codec": audio.codec,
            "channels": audio.channels,
            "layout": audio.layout,
            "sample_rate": audio.sample_rate,
            "duration_s": _seconds(audio.duration_s) if audio.duration_s is not None else None,
        },
        "loudness": None
        if loudness is None
        else {
            "target_lufs": _finite(loudness.target_lufs),
            "before_lufs": _finite(loudness.input_lufs),
            "after_lufs": _finite(loudness.output_lufs),
        },
    }


def _thumbnails(facts: ThumbnailsResult | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    return {
        "vtt": facts.vtt_uri,
        "sheets": list(facts.sheet_uris),
        "image_playlist": facts.image_playlist_uri,
        "count": facts.count,
        "interval_s": facts.interval_s,
        "tile_width": facts.tile_width,
        "tile_height": facts.tile_height,
        "columns": facts.columns,
        "rows": facts.rows,
    }


def _chapters(facts: ChaptersResult | None) -> dict[str, Any] | None:
    if facts is None:
        return None
    return {
        "vtt": facts.vtt_uri,
        "json": facts.json_uri,
        "count": len(facts.starts_s),
        "starts_s": [_seconds(s) for s in facts.starts_s],
    }


def _canonical(value: Any) -> Any:
    """``value`` as plain JSON values, the same for equal plans: fractions as ``"n/d"``, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, enum.Enum):
        return _canonical(value.value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 4.0 and 4 are the same plan
    return value


def _fraction(value: Fraction | None) -> str | None:
    return None if value is None else f"{value.numerator}/{value.denominator}"


def _rate(value: Fraction | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _seconds(value: float) -> float:
    return round(float(value), 6)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 2)
