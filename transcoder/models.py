"""Value objects passed between the stages. Immutable; units in the names."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .pruning import RungDecision


@dataclass(frozen=True, slots=True, kw_only=True)
class VideoInfo:
    """The video stream as probed.

    ``display_width``/``display_height`` are what a viewer sees: the coded size
    stretched by the sample aspect ratio and swapped for a +-90 degree
    rotation. The ladder is planned from these, never from the coded size.
    """

    index: int
    codec: str
    coded_width: int
    coded_height: int
    display_width: int
    display_height: int
    sample_aspect_ratio: Fraction
    rotation_deg: int  # clockwise rotation a player applies: 0, 90, 180 or 270
    fps: Fraction  # average frame rate
    is_vfr: bool
    pix_fmt: str
    bit_depth: int
    chroma_subsampling: str  # "420", "422", "444" or "other"
    field_order: str  # "progressive", "tt", "bb", "tb", "bt" or "unknown"
    # Frames a player shows: an edit list (a file trimmed without re-encoding)
    # hides frames the file still holds, and ``frame_count`` counts those too.
    # None when the container's index does not list every frame.
    shown_frames: int | None = None
    start_s: float
    duration_s: float | None
    frame_count: int | None
    # Colour as tagged in the stream, FFmpeg's names ("bt709", "smpte170m",
    # "bt2020nc", "arib-std-b67", "smpte2084"; range "tv"/"pc"); "unknown"
    # when untagged. transcoder.colour decides what is assumed and converted.
    colour_matrix: str = "unknown"
    colour_primaries: str = "unknown"
    colour_transfer: str = "unknown"
    colour_range: str = "unknown"
    hdr_peak_nits: float | None = None  # MaxCLL, else the mastering display's peak (HDR10 metadata)

    @property
    def interlaced(self) -> bool:
        return self.field_order in {"tt", "bb", "tb", "bt"}


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioInfo:
    """The first audio stream as probed."""

    index: int
    codec: str
    channels: int
    layout: str
    sample_rate: int
    start_s: float
    duration_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceInfo:
    """What ``probe`` learned about a source."""

    container: str
    duration_s: float
    size_bytes: int | None
    bit_rate_bps: int | None
    video: VideoInfo
    audio: AudioInfo | None
    stream_count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioPlan:
    """The single AAC-LC rendition every video variant shares."""

    name: str = "audio"
    codec: str = "aac"
    bitrate_kbps: int = 128
    channels: int = 2
    sample_rate: int = 48000
    # EBU R128 normalisation (transcoder.loudness): integrated target, and
    # the true-peak ceiling of the output; None: the level is left alone.
    loudness_lufs: float | None = -16.0
    true_peak_dbtp: float = -1.0

    @property
    def codecs_tag(self) -> str:
        return "mp4a.40.2"  # AAC-LC


@dataclass(frozen=True, slots=True, kw_only=True)
class Rung:
    """One video rendition of the ladder, with its exact encoder settings."""

    name: str  # e.g. "720p"; unique within a ladder, used as a path component
    width: int
    height: int
    fps: Fraction
    bitrate_kbps: int
    maxrate_kbps: int
    bufsize_kbps: int
    profile: str = "high"
    level: str = "4.0"  # H.264 level as written, e.g. "3.1"
    audio: AudioPlan | None = None  # the audio group this variant plays with


@dataclass(frozen=True, slots=True, kw_only=True)
class Ladder:
    """A planned ladder: rungs from the largest to the smallest."""

    rungs: tuple[Rung, ...]
    audio: tuple[AudioPlan, ...]  # distinct audio plans the rungs refer to
    gop_s: float
    segment_s: float

    def gop_frames(self, rung: Rung) -> int:
        """Frames between keyframes for ``rung`` (a whole number)."""
        return max(1, round(rung.fps * Fraction(self.gop_s).limit_denominator(1000)))


@dataclass(frozen=True, slots=True, kw_only=True)
class IFrameInfo:
    """Where an IDR frame lies inside a segment, for the I-frame playlist."""

    offset_bytes: int
    length_bytes: int
    duration_s: float  # until the next I-frame (or the end of the rendition)


@dataclass(frozen=True, slots=True, kw_only=True)
class SegmentInfo:
    """A closed media segment, as measured after it was written."""

    rendition: str
    sequence: int
    uri: str  # relative to the rendition's playlist
    start_s: float
    duration_s: float
    size_bytes: int
    iframes: tuple[IFrameInfo, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class LoudnessResult:
    """An audio rendition's loudness (EBU R128) before and after normalisation.

    ``input_lufs``/``output_lufs`` are integrated loudness over the whole
    programme (None when nothing passed the -70 LUFS gate: silence);
    ``gain_db_min``/``gain_db_max`` bound the slow gain applied (the
    true-peak limiter comes on top).
    """

    target_lufs: float
    input_lufs: float | None
    output_lufs: float | None
    gain_db_min: float
    gain_db_max: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RenditionResult:
    """A finished rendition: its playlist and what was measured."""

    name: str
    kind: str  # "video" or "audio"
    playlist_uri: str  # relative to the output root
    iframe_playlist_uri: str | None
    init_uri: str | None  # EXT-X-MAP for fMP4
    codecs: str  # e.g. "avc1.640028" or "mp4a.40.2"
    width: int | None
    height: int | None
    fps: Fraction | None
    bitrate_kbps: int  # the planned target
    segments: tuple[SegmentInfo, ...]
    peak_bps: int
    average_bps: int
    size_bytes: int
    duration_s: float
    audio_group: str | None = None  # for video: the audio rendition it plays with
    reused_frames: int = 0  # video: source frames that repeated the previous one and were not scaled again
    loudness: LoudnessResult | None = None  # audio: measured before/after normalisation (None: off)

    @property
    def segment_count(self) -> int:
        return len(self.segments)


@dataclass(frozen=True, slots=True, kw_only=True)
class ThumbnailsResult:
    """The published storyboard: a WebVTT thumbnails track over JPEG sprite sheets.

    Paths are relative to the destination. Thumbnail ``k`` shows the frame at
    ``k * interval_s`` seconds and is tile ``k % (columns * rows)`` (row-major)
    of sheet ``k // (columns * rows)``; each tile is ``tile_width`` x
    ``tile_height``. ``image_playlist_uri`` is the same storyboard as an HLS
    image media playlist (named by the master's ``EXT-X-IMAGE-STREAM-INF``).
    """

    vtt_uri: str
    sheet_uris: tuple[str, ...]
    image_playlist_uri: str | None
    count: int
    interval_s: int
    tile_width: int
    tile_height: int
    columns: int
    rows: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaptersResult:
    """The published chapters: a WebVTT chapters track and Apple's chapter JSON.

    ``json_uri`` is what the master's ``EXT-X-SESSION-DATA``
    (``com.apple.hls.chapters``) names. ``starts_s`` are the chapters' start
    times in seconds (the first is 0), ``count`` how many there are.
    """

    vtt_uri: str
    json_uri: str
    count: int
    starts_s: tuple[float, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """The stored ``manifest.json`` (:mod:`transcoder.manifest`): its key and its exact bytes.

    ``text`` is the document exactly as stored (UTF-8 JSON); ``sha256`` and
    ``size_bytes`` are those of its bytes, which the document itself cannot
    hold. :meth:`document` parses a fresh copy.
    """

    key: str  # relative to the destination
    text: str
    sha256: str
    size_bytes: int

    def document(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.text)
        return parsed


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscodeResult:
    """What ``transcode`` produced and what it cost."""

    source: SourceInfo
    ladder: Ladder
    renditions: tuple[RenditionResult, ...]
    master_uri: str  # relative to the destination
    poster_uri: str | None
    files: tuple[str, ...]  # every file written, relative to the destination
    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    output_bytes: int = field(default=0)
    # One per planned video rung, largest first: published or dropped, why,
    # and the measured rates the decision used (transcoder.pruning).
    rung_decisions: tuple[RungDecision, ...] = field(default=())
    # None when turned off in the config (or no frame was decoded).
    thumbnails: ThumbnailsResult | None = None
    chapters: ChaptersResult | None = None
    # What the run stored, listed with sizes and hashes; written before the master.
    manifest: Manifest | None = None
    # Segments per video rendition an earlier run of the same source and
    # settings had stored and this run kept (transcoder.checkpoint), and why.
    resumed_segments: int = 0
    checkpoint: str | None = None
    # Serial, or chunks on worker processes, and why (transcoder.chunks); what each chunk cost.
    execution: str | None = None
    chunks: tuple[ChunkStats, ...] = ()

    @property
    def dropped_rungs(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.rung_decisions if not d.kept)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkStats:
    """What one chunk (segments ``first`` .. ``end - 1``) cost its worker process (transcoder.chunks)."""

    first: int
    end: int
    cpu_s: float  # user + system, the whole worker process (its start included)
    wall_s: float
    peak_rss_bytes: int = 0  # the worker process's


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A progress report: ``done_s`` of ``total_s`` seconds of video encoded.

    ``speed`` is encoded seconds per wall second (x realtime); ``eta_s`` is
    None until the speed is known.
    """

    phase: str  # "transcoding", "publishing", "done"
    done_s: float
    total_s: float
    elapsed_s: float
    speed: float
    eta_s: float | None

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_s / self.total_s) if self.total_s > 0 else 0.0
