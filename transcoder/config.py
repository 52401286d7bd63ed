"""Configuration as frozen, keyword-only dataclasses, checked on construction.

Units are in the names (``_s``, ``_kbps``). Nothing here reads the
environment: the CLI and the worker build these from theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .chapters import ChapterPolicy
from .errors import ConfigError
from .storyboard import StoryboardPolicy

SegmentFormat = Literal["ts", "fmp4"]
# How a run executes (transcoder.chunks): "auto" chooses serial or chunks.
ExecutionMode = Literal["auto", "serial", "chunks"]
X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RungSpec:
    """A rung of the ladder policy: ``short_side`` is the "p" in 720p."""

    short_side: int
    bitrate_kbps: int

    def __post_init__(self) -> None:
        if self.short_side < 64 or self.short_side % 2:
            raise ConfigError("rung short side must be even and >= 64", context={"short_side": self.short_side})
        if self.bitrate_kbps < 32:
            raise ConfigError("rung bitrate must be >= 32 kb/s", context={"bitrate_kbps": self.bitrate_kbps})


# Loudness targets in use run from broadcast (-31 .. -23 LUFS) to loud
# streaming (-14 .. -9); louder would be mostly the true-peak limiter's work.
LOUDNESS_RANGE_LUFS = (-31.0, -9.0)

DEFAULT_RUNGS: tuple[RungSpec, ...] = (
    RungSpec(short_side=1080, bitrate_kbps=5000),
    RungSpec(short_side=720, bitrate_kbps=2800),
    RungSpec(short_side=480, bitrate_kbps=1400),
    RungSpec(short_side=360, bitrate_kbps=800),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LadderPolicy:
    """How ``plan_ladder`` turns a source into rungs.

    ``maxrate_factor``/``bufsize_factor`` multiply each rung's bitrate into the
    VBV cap. Rungs above ``high_fps_threshold`` get ``high_fps_bitrate_factor``
    more bits. ``cellular_rung`` adds a 234p rung whose measured peak
    (video + its own small audio) stays within 192 kb/s.
    ``min_rung_saving``: after encoding, a rung is published only if it saves
    at least this share of bits (BANDWIDTH and AVERAGE-BANDWIDTH) against the
    next larger published rung (:mod:`transcoder.pruning`); 0 still drops
    rungs that cost as much as a larger one.
    """

    rungs: tuple[RungSpec, ...] = DEFAULT_RUNGS
    max_fps: int = 60
    low_rung_max_fps: int = 30
    low_rung_below_short_side: int = 720
    high_fps_threshold: float = 30.5
    high_fps_bitrate_factor: float = 1.5
    maxrate_factor: float = 1.1
    bufsize_factor: float = 2.0
    audio_bitrate_kbps: int = 128
    # Speech normalised to this integrated loudness (EBU R128, LUFS) with
    # true peaks <= -1 dBTP, in one pass (transcoder.loudness); None: off.
    loudness_lufs: float | None = -16.0
    cellular_rung: bool = False
    min_rung_saving: float = 0.15
    # Sources whose inter frames carry at most this many bits per pixel (from
    # the container's index: slides, screen recordings) get their rungs'
    # rates predicted, and rungs sure to be dropped are never encoded
    # (transcoder.prediction). 0 turns the prediction off. A 1080p30 screen
    # recording measured 0.0013, slides with a talking-head inset 0.059.
    still_max_inter_bpp: float = 0.005

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_rung_saving < 1.0:
            raise ConfigError(
                "min_rung_saving must be within [0, 1)", context={"min_rung_saving": self.min_rung_saving}
            )
        if not 0.0 <= self.still_max_inter_bpp <= 1.0:
            raise ConfigError("still_max_inter_bpp out of range", context={"bpp": self.still_max_inter_bpp})
        if not self.rungs:
            raise ConfigError("the ladder policy needs at least one rung")
        sides = [r.short_side for r in self.rungs]
        if len(set(sides)) != len(sides):
            raise ConfigError("two rungs have the same short side", context={"short_sides": sides})
        if not 1 <= self.low_rung_max_fps <= self.max_fps <= 120:
            raise ConfigError("frame rate caps out of range", context={"max_fps": self.max_fps})
        if self.maxrate_factor < 1.0 or self.bufsize_factor < self.maxrate_factor * 0.5:
            raise ConfigError("maxrate/bufsize factors out of range")
        if (
            self.loudness_lufs is not None
            and not LOUDNESS_RANGE_LUFS[0] <= self.loudness_lufs <= LOUDNESS_RANGE_LUFS[1]
        ):
            raise ConfigError(
                "loudness target out of range",
                context={"loudness_lufs": self.loudness_lufs, "range": LOUDNESS_RANGE_LUFS},
            )
        if not 32 <= self.audio_bitrate_kbps <= 320:
            raise ConfigError("audio bitrate out of range", context={"audio_bitrate_kbps": self.audio_bitrate_kbps})


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Safety limits checked on the probe, before any decoding."""

    max_width: int = 8192
    max_height: int = 8192
    max_pixels: int = 8192 * 4320
    max_duration_s: float = 6 * 3600.0
    max_fps: float = 240.0
    max_streams: int = 32
    max_input_bytes: int = 64 * 1024**3

    def __post_init__(self) -> None:
        if min(self.max_width, self.max_height, self.max_pixels, self.max_streams) <= 0:
            raise ConfigError("limits must be positive")


@dataclass(frozen=True, slots=True, kw_only=True)
class EncoderSettings:
    """x264 and scaler choices shared by every rung."""

    preset: str = "veryfast"
    crf: int = 23  # quality target; each rung's maxrate/bufsize caps it
    # swscale interpolation for downscales. Every rung scales the decoded
    # frame: scaling small rungs from a larger rung's frames saved ~1-2% of
    # the CPU but cost ~0.07 dB PSNR-Y at 480p (bench/NOTES.md), so it went.
    scaler: str = "bicubic"
    # A decoded frame equal to the previous one reuses each rung's last scaled
    # frame instead of being scaled again (transcoder.still). Same output bytes.
    reuse_still_frames: bool = True
    # A source the still gate passes (transcoder.prediction) is encoded with
    # transcoder.still.STILL_X264_PARAMS and one x264 thread per rung where the
    # rungs fill the budget. False: the preset's settings and the usual plan.
    still_settings: bool = True

    def __post_init__(self) -> None:
        if self.preset not in X264_PRESETS:
            raise ConfigError("unknown x264 preset", context={"preset": self.preset, "known": ", ".join(X264_PRESETS)})
        if not 0 <= self.crf <= 51:
            raise ConfigError("crf must be within 0..51", context={"crf": self.crf})
        if self.scaler not in {"bilinear", "bicubic", "area", "lanczos", "fast_bilinear"}:
            raise ConfigError("unknown scaler", context={"scaler": self.scaler})


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscodeConfig:
    """Everything one ``transcode`` run needs besides its source and destination.

    ``threads`` is the CPU budget of the run (None: the caller's affinity
    mask). ``segment_s`` must be a whole number of ``gop_s``.

    ``thumbnails`` writes storyboard sprite sheets, ``thumbnails.vtt`` and an
    HLS image playlist spaced and laid out by ``storyboard``
    (:mod:`transcoder.storyboard`); ``chapters`` writes ``chapters.vtt`` and
    ``chapters.json`` from slide changes found by ``chapter_policy``
    (:mod:`transcoder.chapters`). Both read frames the run decodes anyway.

    ``checkpoint`` writes a record after every ``checkpoint_span_s`` of
    stored segments and resumes a run that died from the records it left in
    the same output (:mod:`transcoder.checkpoint`).
    """

    ladder: LadderPolicy = field(default_factory=LadderPolicy)
    limits: Limits = field(default_factory=Limits)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    segment_format: SegmentFormat = "ts"
    segment_s: float = 4.0
    gop_s: float = 2.0
    threads: int | None = None
    poster: bool = True
    thumbnails: bool = True
    storyboard: StoryboardPolicy = field(default_factory=StoryboardPolicy)
    chapters: bool = True
    chapter_policy: ChapterPolicy = field(default_factory=ChapterPolicy)
    queue_depth: int = 8  # frames waiting per rung; bounds memory
    # Write checkpoint records as segments are stored, and resume from an
    # earlier run's matching records in the same output (transcoder.checkpoint).
    checkpoint: bool = True
    # Timeline a record covers: a dead run loses at most about this much
    # encoding. A record is a small object per span (~1 KB per rung).
    checkpoint_span_s: float = 30.0
    # Serial (one pass) or time chunks on worker processes (transcoder.chunks);
    # "auto" chooses from the budget and the ladder. ``workers`` forces the
    # number of chunk worker processes.
    parallel: ExecutionMode = "auto"
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.segment_format not in ("ts", "fmp4"):
            raise ConfigError("segment format must be ts or fmp4", context={"format": self.segment_format})
        if not 0.5 <= self.gop_s <= 10:
            raise ConfigError("GOP length out of range", context={"gop_s": self.gop_s})
        ratio = self.segment_s / self.gop_s
        if self.segment_s <= 0 or abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
            raise ConfigError(
                "segment length must be a whole number of GOPs",
                context={"segment_s": self.segment_s, "gop_s": self.gop_s},
            )
        if self.threads is not None and not 1 <= self.threads <= 256:
            raise ConfigError("threads out of range", context={"threads": self.threads})
        if not 0 < self.checkpoint_span_s <= 3600:
            raise ConfigError("checkpoint span out of range", context={"checkpoint_span_s": self.checkpoint_span_s})
        if self.parallel not in ("auto", "serial", "chunks"):
            raise ConfigError("parallel must be auto, serial or chunks", context={"parallel": self.parallel})
        if self.workers is not None and not 1 <= self.workers <= 256:
            raise ConfigError("workers out of range", context={"workers": self.workers})
        if not 1 <= self.queue_depth <= 128:
            raise ConfigError("queue depth out of range", context={"queue_depth": self.queue_depth})
        # The policies check their own values on construction; this catches a
        # wrong type (e.g. None for "off", which the booleans say instead).
        for name, value, kind in (
            ("thumbnails", self.thumbnails, bool),
            ("chapters", self.chapters, bool),
            ("storyboard", self.storyboard, StoryboardPolicy),
            ("chapter_policy", self.chapter_policy, ChapterPolicy),
        ):
            if not isinstance(value, kind):
                raise ConfigError(f"{name} must be a {kind.__name__}", context={name: repr(value)[:80]})
