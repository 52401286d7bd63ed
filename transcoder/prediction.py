"""Before encoding: which rungs of a still source (slides, screen recordings) would be dropped anyway.

:mod:`transcoder.pruning` drops, after encoding, rungs that save too few bits
against a larger one. On a still source that is most rungs, and encoding them
first costs as much CPU as the rungs that are kept. This module predicts the
rungs' rates before encoding, cheaply, and leaves out the rungs whose predicted
saving is far below the minimum, so they are never encoded. It never drops
the top rung, and the rungs it keeps still pass the measured rule afterwards.

Two steps:

1. **Gate, whole file, free.** The container's index (MP4/MOV: one entry per
   packet, read with the header) gives the source's inter-frame bits per
   pixel. Above ``still_max_inter_bpp`` the source moves and nothing is
   predicted: all rungs are encoded. So is a source without a full per-frame
   index (MPEG-TS, most Matroska), or one that needs a filter (rotation,
   interlacing).
2. **Estimate, ~0.2 s of CPU per sample at 1080p.** A few keyframes spread over the file are
   decoded, scaled to every rung and encoded with the rung's own x264
   settings, repeated for a short still run (x264's lookahead then treats them
   as it treats a slide). A rung's predicted video rate is its cost per GOP of
   that still picture, times the source's own ratio of all video bits to
   keyframe bits (what changes between keyframes: bullets, the pointer).
   Adding the audio plan's rate gives the rates the master would state.

A rung is left out only when :func:`~transcoder.pruning.prune_ladder` drops it
on the predicted rates with ``PREDICTION_MARGIN`` of the minimum saving: the
prediction may be off, the measured rule is not.

A source that passes the gate is *still* (:attr:`LadderPrediction.still`):
its rungs are encoded with the still x264 settings
(:data:`~transcoder.still.STILL_X264_PARAMS`; the samples above keep the
preset's, see :func:`_still_run_bytes`). The gate looks at the whole
file: a screen recording with a short stretch of motion (a video clip in a
slide) passes if its average stays under the limit, and that stretch is then
coded with whole-pixel motion and no B-frames (more bits or, at the rung's
cap, less quality there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

import av
from av.video.frame import PictureType

from .config import LadderPolicy, TranscodeConfig
from .encode import x264_options
from .models import Ladder, Rung, SourceInfo
from .probe import Source, open_input
from .pruning import RungDecision, RungRates, prune_ladder
from .scale import Scaler

# Leave a rung out only if it is predicted to save less than this share of the
# minimum. A wrong skip costs little: the next smaller rung is then compared
# with a larger one and kept if it saves enough (on the bench's screen
# recording, predicted savings were 0.3/9.2/18.1% against measured 0/5/18%).
PREDICTION_MARGIN = 0.8
SAMPLES = 3  # keyframes sampled, spread over the file
# A still run: long enough for x264's lookahead (mb-tree) to raise the
# keyframe's quality as it does for a slide (1080p keyframe: 1 frame 28 kb/s-
# equivalent, 4 frames 61, 12 frames 62), short enough to cost ~0.2 s per sample.
STILL_RUN_FRAMES = 6
# TS and AAC framing over the planned audio bitrate, as measured in the master
# (128 kb/s planned -> ~142 kb/s stated).
AUDIO_OVERHEAD = 1.1
PREDICTED = "predicted_"  # prefix of the reason of a rung left out before encoding


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexActivity:
    """What the source's packet index says about its motion (video stream only)."""

    frames: int
    keyframes: int
    key_bytes: int
    inter_bytes: int
    inter_bits_per_pixel: float  # per inter frame, per coded pixel

    @property
    def all_over_key_bits(self) -> float:
        """All video bits over keyframe bits (1.0: nothing but keyframes)."""
        return (self.key_bytes + self.inter_bytes) / self.key_bytes if self.key_bytes else float("inf")


@dataclass(frozen=True, slots=True, kw_only=True)
class LadderPrediction:
    """The outcome of :func:`predict_still_ladder`.

    ``skipped`` are the decisions of the rungs left out before encoding
    (reasons prefixed ``predicted_``, rates predicted); ``why_not`` says why
    nothing was predicted (empty when a prediction was made). ``still``: the
    gate found the source still (its rungs get the still x264 settings),
    whether or not rungs were then predicted away.
    """

    activity: IndexActivity | None
    predicted: tuple[RungDecision, ...] = ()
    skipped: tuple[RungDecision, ...] = ()
    why_not: str = ""
    still: bool = False

    def encode_ladder(self, ladder: Ladder) -> Ladder:
        """``ladder`` without the skipped rungs, and without audio plans only they used."""
        names = {d.name for d in self.skipped}
        rungs = tuple(r for r in ladder.rungs if r.name not in names)
        return replace(ladder, rungs=rungs, audio=tuple(a for a in ladder.audio if any(r.audio == a for r in rungs)))


def index_activity(source: Source, info: SourceInfo) -> IndexActivity | None:
    """The source's inter-frame activity from its packet index, or None without a full per-frame index."""
    with open_input(source) as container:
        stream = container.streams[info.video.index]
        entries = stream.index_entries
        sizes = [(entry.size, entry.is_keyframe) for entry in entries if not entry.is_discard]
    expected = info.video.frame_count or round(info.video.fps * Fraction(info.duration_s).limit_denominator(1000))
    if not sizes or len(sizes) < 0.95 * expected:
        return None  # an index of keyframes only (Matroska cues) or none at all (MPEG-TS)
    key = [size for size, is_key in sizes if is_key]
    inter = [size for size, is_key in sizes if not is_key]
    pixels = info.video.coded_width * info.video.coded_height
    return IndexActivity(
        frames=len(sizes),
        keyframes=len(key),
        key_bytes=sum(key),
        inter_bytes=sum(inter),
        inter_bits_per_pixel=sum(inter) * 8 / (len(inter) * pixels) if inter and pixels else 0.0,
    )


def still_gate(source: Source, info: SourceInfo, policy: LadderPolicy) -> tuple[IndexActivity | None, str]:
    """Step 1 alone (reads the container's index, decodes nothing): ``(activity, why_not)``.

    ``why_not`` is empty when the source is still, else why it is not taken
    as still (off, needs filters, no per-frame index, moves).
    """
    if policy.still_max_inter_bpp <= 0:
        return None, "off"
    if info.video.rotation_deg or info.video.interlaced:
        return None, "the source needs filters"
    activity = index_activity(source, info)
    if activity is None:
        return None, "no per-frame index"
    if activity.keyframes == 0 or activity.inter_bits_per_pixel > policy.still_max_inter_bpp:
        return activity, "the source moves"
    return activity, ""


def predict_still_ladder(source: Source, info: SourceInfo, ladder: Ladder, config: TranscodeConfig) -> LadderPrediction:
    """Which rungs to leave out before encoding, and whether the source is still (see the module docstring)."""
    activity, why_not = still_gate(source, info, config.ladder)
    if why_not or activity is None:
        return LadderPrediction(activity=activity, why_not=why_not)
    if len(ladder.rungs) < 2:
        return LadderPrediction(activity=activity, why_not="one rung", still=True)
    policy = config.ladder
    try:
        costs = _still_gop_bytes(source, info, ladder, config)
    except av.FFmpegError as exc:
        # Only an optimisation: the full decode reports real damage with context.
        return LadderPrediction(activity=activity, why_not=f"sampling failed: {exc.strerror}", still=True)
    if costs is None:
        return LadderPrediction(activity=activity, why_not="no sample decoded", still=True)
    audio_bps = {plan.name: plan.bitrate_kbps * 1000 * AUDIO_OVERHEAD for plan in ladder.audio}
    if info.audio is None:
        audio_bps = {}
    rates = predicted_rates(ladder, costs, activity.all_over_key_bits, audio_bps)
    predicted = prune_ladder(rates, min_saving=policy.min_rung_saving * PREDICTION_MARGIN)
    skipped = tuple(replace(d, reason=PREDICTED + d.reason) for d in predicted if not d.kept)
    return LadderPrediction(activity=activity, predicted=predicted, skipped=skipped, still=True)


def predicted_rates(
    ladder: Ladder, gop_bytes: Sequence[float], all_over_key: float, audio_bps: dict[str, float]
) -> list[RungRates]:
    """PURE: the rates the master would state, from each rung's still cost per GOP.

    ``gop_bytes[i]`` is rung ``i``'s bytes for one GOP of a still picture;
    ``all_over_key`` scales it by the source's own share of bits spent between
    keyframes; ``audio_bps`` maps audio group names to their rates.
    """
    rates = []
    for rung, cost in zip(ladder.rungs, gop_bytes, strict=True):
        video = cost * 8 / ladder.gop_s * all_over_key
        audio = audio_bps.get(rung.audio.name, 0.0) if rung.audio else 0.0
        total = round(video + audio)
        rates.append(
            RungRates(
                name=rung.name, width=rung.width, height=rung.height, bandwidth_bps=total, average_bandwidth_bps=total
            )
        )
    return rates


def merge_decisions(
    ladder: Ladder, prediction: LadderPrediction, measured: Sequence[RungDecision]
) -> tuple[RungDecision, ...]:
    """One decision per planned rung, in ladder order: left out before encoding, or measured."""
    by_name = {d.name: d for d in (*prediction.skipped, *measured)}
    return tuple(by_name[r.name] for r in ladder.rungs if r.name in by_name)


def _sample_frames(source: Source, info: SourceInfo) -> list[av.VideoFrame]:
    """The first frame decoded at or after a keyframe near each of SAMPLES spread positions."""
    frames: list[av.VideoFrame] = []
    with open_input(source) as container:
        stream = container.streams[info.video.index]
        if stream.time_base is None:
            return frames
        start = stream.start_time or 0
        span = info.video.duration_s or info.duration_s
        for k in range(SAMPLES):
            at = start + int(span * (k + 0.5) / SAMPLES / float(stream.time_base))
            try:
                container.seek(at, stream=stream, backward=True)
                frame = next(container.decode(stream), None)
            except (av.FFmpegError, StopIteration):
                frame = None
            if isinstance(frame, av.VideoFrame):
                frames.append(frame)
    return frames


def _still_gop_bytes(source: Source, info: SourceInfo, ladder: Ladder, config: TranscodeConfig) -> list[float] | None:
    """Per rung, the mean over the samples of the bytes one GOP of that still picture costs."""
    frames = _sample_frames(source, info)
    if not frames:
        return None
    return [
        sum(_still_run_bytes(rung, ladder, frame, config) for frame in frames) / len(frames) for rung in ladder.rungs
    ]


def _still_run_bytes(rung: Rung, ladder: Ladder, frame: av.VideoFrame, config: TranscodeConfig) -> float:
    """Bytes of one GOP of ``frame`` held still, as ``rung``'s x264 codes it (keyframe + still P frames)."""
    gop = ladder.gop_frames(rung)
    cc = av.CodecContext.create("libx264", "w")
    assert isinstance(cc, av.VideoCodecContext)
    cc.width, cc.height, cc.pix_fmt = rung.width, rung.height, "yuv420p"
    cc.time_base = 1 / rung.fps
    cc.framerate = rung.fps
    cc.thread_type = "FRAME"
    cc.thread_count = 1
    cc.bit_rate = rung.bitrate_kbps * 1000
    # The preset's settings, not the still ones the rungs are then encoded
    # with: only the rungs' costs relative to each other matter, and with
    # still settings the samples overstated the 480p rung's saving (16.7%
    # predicted against ~8% measured on the bench's screen recording, so it
    # was encoded and then dropped); with the preset's they put it at 9-11%.
    cc.options = x264_options(rung, gop_frames=gop, preset=config.encoder.preset, crf=config.encoder.crf)
    scaled = Scaler(rung.width, rung.height, interpolation=config.encoder.scaler).scale(frame)
    run = min(gop, STILL_RUN_FRAMES)
    sizes: list[int] = []
    for n in range(run):
        scaled.pts = n
        scaled.time_base = cc.time_base
        scaled.pict_type = PictureType.I if n == 0 else PictureType.NONE
        sizes.extend(packet.size for packet in cc.encode(scaled))
    sizes.extend(packet.size for packet in cc.encode(None))
    if not sizes:
        return 0.0
    key, rest = sizes[0], sizes[1:]
    per_still_frame = sum(rest) / len(rest) if rest else 0.0
    return key + per_still_frame * (gop - 1)


__all__ = [
    "IndexActivity",
    "LadderPrediction",
    "index_activity",
    "merge_decisions",
    "predict_still_ladder",
    "predicted_rates",
    "still_gate",
]
