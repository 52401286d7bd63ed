"""Plan the HLS ladder for a source: sizes, frame rates, bitrates, H.264 levels.

A pure module: no PyAV, no I/O. Everything here is a function of the probed
``SourceInfo`` and the ``LadderPolicy``, so it is cheap to test exhaustively.

Units: sizes in pixels, frame rates as exact ``Fraction`` frames per second,
bitrates in kb/s (1000 bits per second), durations in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from .config import LadderPolicy, RungSpec
from .errors import ConfigError, InputError
from .models import AudioPlan, Ladder, Rung, SourceInfo

__all__ = [
    "CELLULAR_AUDIO_KBPS",
    "CELLULAR_BITRATE_KBPS",
    "CELLULAR_BUFSIZE_KBPS",
    "CELLULAR_MAXRATE_KBPS",
    "CELLULAR_SHORT_SIDE",
    "h264_level",
    "output_fps",
    "plan_ladder",
]

# The cellular rung (Apple: iOS on cellular wants a variant whose peak is
# <= 192 kb/s). Video 80 kb/s average with a VBV of maxrate 88 / bufsize 88:
# no 4 s segment carries more than 88 + 88/4 = 110 kb/s of video payload.
# MPEG-TS adds ~30 kb/s at 30 fps on top (a partly filled 188-byte packet and
# PES header per frame), and 32 kb/s AAC measures ~38 kb/s in TS: measured
# peak ~141 + ~38 = ~180 kb/s on grainy 1080p content (48 kb/s audio gave 198).
CELLULAR_SHORT_SIDE = 234
CELLULAR_BITRATE_KBPS = 80
CELLULAR_MAXRATE_KBPS = 88
CELLULAR_BUFSIZE_KBPS = 88
CELLULAR_AUDIO_KBPS = 32
CELLULAR_AUDIO_NAME = "audio-low"

# A policy rung whose short side is within this fraction of an added
# source-size top rung is dropped: a 700p next to a 720p only costs encode time.
_TOO_CLOSE = Fraction(9, 10)

# The smallest bitrate the extrapolation for tiny sources may give (the same
# floor ``RungSpec`` enforces on policy rungs).
_MIN_BITRATE_KBPS = 32

# ``output_fps`` accepts an exact divisor of the source rate only when it is at
# least this fraction of the cap; below that the cap itself is used.
_MIN_DIVISOR_SHARE = Fraction(3, 4)


# --------------------------------------------------------------------------
# H.264 levels (ITU-T H.264, Table A-1)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Level:
    name: str
    max_mbps: int  # macroblocks per second
    max_fs: int  # frame size, macroblocks
    max_br: int  # VCL bitrate in units of cpbBrVclFactor bits/s (1000 for Main)
    max_cpb: int  # CPB size in units of cpbBrVclFactor bits


# Level 1b is left out: it is signalled differently per profile and no ladder
# rung is ever that small; level 1.1 covers anything 1b would.
_LEVELS: tuple[_Level, ...] = (
    _Level("1.0", 1_485, 99, 64, 175),
    _Level("1.1", 3_000, 396, 192, 500),
    _Level("1.2", 6_000, 396, 384, 1_000),
    _Level("1.3", 11_880, 396, 768, 2_000),
    _Level("2.0", 11_880, 396, 2_000, 2_000),
    _Level("2.1", 19_800, 792, 4_000, 4_000),
    _Level("2.2", 20_250, 1_620, 4_000, 4_000),
    _Level("3.0", 40_500, 1_620, 10_000, 10_000),
    _Level("3.1", 108_000, 3_600, 14_000, 14_000),
    _Level("3.2", 216_000, 5_120, 20_000, 20_000),
    _Level("4.0", 245_760, 8_192, 20_000, 25_000),
    _Level("4.1", 245_760, 8_192, 50_000, 62_500),
    _Level("4.2", 522_240, 8_704, 50_000, 62_500),
    _Level("5.0", 589_824, 22_080, 135_000, 135_000),
    _Level("5.1", 983_040, 36_864, 240_000, 240_000),
    _Level("5.2", 2_073_600, 36_864, 240_000, 240_000),
    _Level("6.0", 4_177_920, 139_264, 240_000, 240_000),
    _Level("6.1", 8_355_840, 139_264, 480_000, 480_000),
    _Level("6.2", 16_711_680, 139_264, 800_000, 800_000),
)

# cpbBrVclFactor (Table A-2) per profile, in bits per MaxBR/MaxCPB unit. x264
# checks its VBV against the VCL limits, so the VCL factor is the right one:
# High may use 1.25x the Main-profile bitrate of the same level.
_VCL_FACTOR: dict[str, int] = {
    "baseline": 1000,
    "constrained_baseline": 1000,
    "main": 1000,
    "extended": 1000,
    "high": 1250,
    "high10": 3000,
    "high422": 4000,
    "high444": 4000,
}


def h264_level(
    width: int,
    height: int,
    fps: Fraction,
    maxrate_kbps: int,
    bufsize_kbps: int,
    *,
    profile: str = "high",
) -> str:
    """The smallest H.264 level (Table A-1) that a progressive stream fits.

    Checks, with frame sizes in 16x16 macroblocks (MBs):

    * MaxFS: ``ceil(w/16) * ceil(h/16)`` MBs, and each of the width and the
      height in MBs at most ``sqrt(8 * MaxFS)`` (A.3.1 f/g, which matters
      for very wide or tall frames);
    * MaxMBPS: frame MBs times ``fps`` (exact, so 29.97 is not rounded up);
    * MaxBR and MaxCPB against ``maxrate_kbps`` and ``bufsize_kbps`` (kb/s
      and kbit), scaled by the profile's cpbBrVclFactor: x1.25 for High,
      x1 for Baseline/Main.

    The DPB limit (MaxDpbMbs) is not checked: it bounds the number of
    reference frames, which x264 lowers on its own to fit the level it is
    given. Returns the level as written in a profile-level string, "3.0",
    "3.1", "4.0" ... Raises ``ConfigError`` for non-positive sizes or frame
    rates, negative rates, an unknown profile, or a stream beyond level 6.2.
    """
    if width <= 0 or height <= 0:
        raise ConfigError("frame size must be positive", context={"width": width, "height": height})
    if fps <= 0:
        raise ConfigError("frame rate must be positive", context={"fps": fps})
    if maxrate_kbps < 0 or bufsize_kbps < 0:
        raise ConfigError(
            "maxrate and bufsize must not be negative",
            context={"maxrate_kbps": maxrate_kbps, "bufsize_kbps": bufsize_kbps},
        )
    try:
        vcl_factor = _VCL_FACTOR[profile.lower()]
    except KeyError:
        raise ConfigError(
            "unknown H.264 profile", context={"profile": profile, "known": ", ".join(_VCL_FACTOR)}
        ) from None

    width_mbs = -(-width // 16)
    height_mbs = -(-height // 16)
    frame_mbs = width_mbs * height_mbs
    mbs_per_s = frame_mbs * Fraction(fps)
    for level in _LEVELS:
        # Integer comparisons throughout: the table and the factor are exact,
        # so no float rounding can push a stream across a level boundary.
        side_limit_sq = 8 * level.max_fs  # (MBs per side)^2 may not exceed this
        if (
            frame_mbs <= level.max_fs
            and width_mbs * width_mbs <= side_limit_sq
            and height_mbs * height_mbs <= side_limit_sq
            and mbs_per_s <= level.max_mbps
            and maxrate_kbps * 1000 <= level.max_br * vcl_factor
            and bufsize_kbps * 1000 <= level.max_cpb * vcl_factor
        ):
            return level.name
    raise ConfigError(
        "no H.264 level fits the stream",
        context={
            "width": width,
            "height": height,
            "fps": fps,
            "maxrate_kbps": maxrate_kbps,
            "bufsize_kbps": bufsize_kbps,
            "profile": profile,
        },
    )


# --------------------------------------------------------------------------
# Frame rate
# --------------------------------------------------------------------------


def output_fps(source_fps: Fraction, cap: int) -> Fraction:
    """The frame rate to encode at, given the source rate and a cap (fps).

    Rule:

    1. ``source_fps <= cap``: the source rate, unchanged.
    2. Otherwise let ``k = ceil(source_fps / cap)``, the smallest whole
       divisor that brings the rate under the cap. If ``source_fps / k >=
       0.75 * cap`` use it: keeping every k-th frame is judder-free and keeps
       NTSC rates exact (60000/1001 capped at 30 gives 30000/1001; 50 capped
       at 30 gives 25; 120 capped at 60 gives 60).
    3. Else the divisor would throw away too much motion (72 capped at 60
       would give 36), so use ``cap`` itself, accepting uneven frame drops.

    The result is always an exact ``Fraction`` in (0, cap]. Raises
    ``ConfigError`` for a non-positive source rate or cap.
    """
    fps = Fraction(source_fps)
    if fps <= 0:
        raise ConfigError("source frame rate must be positive", context={"fps": source_fps})
    if cap < 1:
        raise ConfigError("frame rate cap must be >= 1", context={"cap": cap})
    if fps <= cap:
        return fps
    k = math.ceil(fps / cap)
    divided = fps / k
    if divided >= _MIN_DIVISOR_SHARE * cap:
        return divided
    return Fraction(cap)


# --------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------


def _round_even(value: Fraction) -> int:
    """``value`` rounded to the nearest even integer (halves up), at least 2."""
    return max(2, 2 * math.floor(value / 2 + Fraction(1, 2)))


def _floor_even(value: int) -> int:
    """``value`` rounded down to an even integer, at least 2."""
    return max(2, value - value % 2)


def _size_for(short_side: int, src_w: int, src_h: int) -> tuple[int, int]:
    """(width, height) with the given short side and the source's aspect ratio.

    The long side is rounded to the nearest even number, but never past the
    source's own long side (rounded down to even), so no rung is larger than
    the source in either dimension.
    """
    src_short, src_long = min(src_w, src_h), max(src_w, src_h)
    long_side = min(_round_even(Fraction(short_side * src_long, src_short)), _floor_even(src_long))
    if src_w >= src_h:
        return long_side, short_side
    return short_side, long_side


def _interpolated_bitrate(short_side: int, specs: tuple[RungSpec, ...]) -> int:
    """Bitrate (kb/s) for a rung of ``short_side`` not in the policy.

    At a fixed aspect ratio the pixel count goes with the square of the short
    side, so the bitrate is interpolated linearly in ``short_side**2`` between
    the neighbouring policy rungs. Below the smallest policy rung it is scaled
    from that rung by the pixel ratio (floored at 32 kb/s); above the largest,
    the largest rung's bitrate is used.
    """
    ordered = sorted(specs, key=lambda spec: spec.short_side)
    below = [spec for spec in ordered if spec.short_side <= short_side]
    above = [spec for spec in ordered if spec.short_side >= short_side]
    if not above:
        return ordered[-1].bitrate_kbps
    hi = above[0]
    if not below:
        scaled = hi.bitrate_kbps * Fraction(short_side, hi.short_side) ** 2
        return max(_MIN_BITRATE_KBPS, round(scaled))
    lo = below[-1]
    if lo.short_side == hi.short_side:
        return lo.bitrate_kbps
    share = Fraction(short_side**2 - lo.short_side**2, hi.short_side**2 - lo.short_side**2)
    return round(lo.bitrate_kbps + (hi.bitrate_kbps - lo.bitrate_kbps) * share)


# --------------------------------------------------------------------------
# The ladder
# --------------------------------------------------------------------------


def _check_timing(gop_s: float, segment_s: float) -> None:
    """Same rules as ``TranscodeConfig``: 0.5 <= GOP <= 10 s, segments whole GOPs."""
    if not math.isfinite(gop_s) or not 0.5 <= gop_s <= 10:
        raise ConfigError("GOP length out of range", context={"gop_s": gop_s})
    if not math.isfinite(segment_s) or segment_s <= 0:
        raise ConfigError("segment length must be positive", context={"segment_s": segment_s})
    ratio = segment_s / gop_s
    if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
        raise ConfigError(
            "segment length must be a whole number of GOPs",
            context={"segment_s": segment_s, "gop_s": gop_s},
        )


def _check_source(source: SourceInfo) -> tuple[int, int, Fraction]:
    video = source.video
    width, height = video.display_width, video.display_height
    if width < 1 or height < 1:
        raise InputError("the video has no display size", context={"width": width, "height": height})
    fps = Fraction(video.fps)
    if fps <= 0:
        raise InputError("the video has no frame rate", context={"fps": video.fps})
    return width, height, fps


# Frozen, so one shared default instance is safe.
_DEFAULT_POLICY = LadderPolicy()


def plan_ladder(
    source: SourceInfo,
    policy: LadderPolicy = _DEFAULT_POLICY,
    *,
    gop_s: float = 2.0,
    segment_s: float = 4.0,
) -> Ladder:
    """Turn a probed source into the ladder of renditions to encode.

    Sizes are planned from the *display* size (``display_width`` x
    ``display_height``: rotation and sample aspect ratio already applied).
    A rung's "p" is its SHORTER side, so a portrait 1080x1920 source gets
    1080x1920, 720x1280, 480x854 and 360x640.

    * Sizes: each rung keeps the display aspect ratio; its short side is
      exactly the policy value, its long side is rounded to the nearest even
      number (never above the source's long side). Both are even and >= 2.
    * Never upscale: policy rungs whose short side exceeds the source's short
      side (rounded down to even, ``S``) are dropped. If ``S`` is below the
      largest policy rung and is not itself a policy rung, a top rung at the
      source's own size (``S``p) is added, with a bitrate interpolated in
      pixel count (``short_side**2``) between the neighbouring policy rungs,
      and policy rungs whose short side is more than 90% of ``S`` are
      dropped as too close to it. A source smaller than every policy rung so
      gets one rung at its own size (bitrate scaled by the pixel ratio from
      the smallest rung, at least 32 kb/s).
    * Frame rate: ``output_fps(source fps, cap)`` with cap
      ``policy.max_fps``, or ``policy.low_rung_max_fps`` for rungs whose
      short side is below ``policy.low_rung_below_short_side``.
    * Bitrates (kb/s): the policy rung's, times
      ``policy.high_fps_bitrate_factor`` when the rung's fps is above
      ``policy.high_fps_threshold``; maxrate = round(bitrate x
      ``maxrate_factor``), bufsize = round(bitrate x ``bufsize_factor``).
    * Profile High; level from ``h264_level``. Names are ``f"{short}p"``.
    * Audio: none if the source has none (``Ladder.audio == ()``), else one
      ``AudioPlan`` at ``policy.audio_bitrate_kbps`` shared by every rung,
      normalised to ``policy.loudness_lufs``.
    * ``policy.cellular_rung``: an extra lowest rung "234p" (416x234 for
      16:9) at 80 kb/s, maxrate 88, bufsize 88, fps capped at
      ``low_rung_max_fps``, playing with its own 48 kb/s "audio-low" plan
      (listed after the main plan), aiming at a measured peak <= 192 kb/s.
      Skipped when every planned rung is already 234p or smaller (a source
      with ``S <= 234``). A policy with its own rung at or below 234p and
      the cellular rung on is a ``ConfigError``.

    Rungs are ordered largest first. Raises ``ConfigError`` for an
    inconsistent GOP/segment length or policy, ``InputError`` for a source
    without a display size or frame rate.
    """
    _check_timing(gop_s, segment_s)
    if policy.cellular_rung and any(spec.short_side <= CELLULAR_SHORT_SIDE for spec in policy.rungs):
        raise ConfigError(
            "the cellular rung must be the lowest: the policy has a rung at or below 234p",
            context={"short_sides": [spec.short_side for spec in policy.rungs]},
        )
    src_w, src_h, src_fps = _check_source(source)
    src_short = _floor_even(min(src_w, src_h))

    specs = tuple(sorted(policy.rungs, key=lambda spec: spec.short_side, reverse=True))
    # (short side, bitrate before the high-fps factor) of every rung to plan.
    plan: list[tuple[int, int]] = [
        (spec.short_side, spec.bitrate_kbps) for spec in specs if spec.short_side <= src_short
    ]
    if src_short < specs[0].short_side and (not plan or plan[0][0] != src_short):
        top = (src_short, _interpolated_bitrate(src_short, specs))
        plan = [top] + [(side, kbps) for side, kbps in plan if side <= _TOO_CLOSE * src_short]

    main_audio = (
        AudioPlan(bitrate_kbps=policy.audio_bitrate_kbps, loudness_lufs=policy.loudness_lufs)
        if source.audio is not None
        else None
    )
    rungs = [_make_rung(side, kbps, src_w, src_h, src_fps, policy, main_audio) for side, kbps in plan]
    audio: tuple[AudioPlan, ...] = (main_audio,) if main_audio is not None else ()

    if policy.cellular_rung and plan[-1][0] > CELLULAR_SHORT_SIDE:
        has_audio = source.audio is not None
        low_audio = (
            AudioPlan(name=CELLULAR_AUDIO_NAME, bitrate_kbps=CELLULAR_AUDIO_KBPS, loudness_lufs=policy.loudness_lufs)
            if has_audio
            else None
        )
        rungs.append(_make_cellular_rung(src_w, src_h, src_fps, policy, low_audio))
        if low_audio is not None:
            audio += (low_audio,)

    return Ladder(rungs=tuple(rungs), audio=audio, gop_s=gop_s, segment_s=segment_s)


def _make_rung(
    short_side: int,
    bitrate_kbps: int,
    src_w: int,
    src_h: int,
    src_fps: Fraction,
    policy: LadderPolicy,
    audio: AudioPlan | None,
) -> Rung:
    width, height = _size_for(short_side, src_w, src_h)
    low = short_side < policy.low_rung_below_short_side
    fps = output_fps(src_fps, policy.low_rung_max_fps if low else policy.max_fps)
    if fps > policy.high_fps_threshold:
        # More frames per second at the same bitrate means fewer bits per
        # frame; the policy's factor is below 2x because neighbouring frames
        # at high rates differ less and predict well.
        bitrate_kbps = round(bitrate_kbps * policy.high_fps_bitrate_factor)
    maxrate = max(bitrate_kbps, round(bitrate_kbps * policy.maxrate_factor))
    bufsize = round(bitrate_kbps * policy.bufsize_factor)
    return Rung(
        name=f"{short_side}p",
        width=width,
        height=height,
        fps=fps,
        bitrate_kbps=bitrate_kbps,
        maxrate_kbps=maxrate,
        bufsize_kbps=bufsize,
        profile="high",
        level=h264_level(width, height, fps, maxrate, bufsize, profile="high"),
        audio=audio,
    )


def _make_cellular_rung(
    src_w: int,
    src_h: int,
    src_fps: Fraction,
    policy: LadderPolicy,
    audio: AudioPlan | None,
) -> Rung:
    # Fixed rates, not the policy factors: the 192 kb/s peak is a hard target
    # and a bufsize of 2x maxrate would let a 4 s segment burst well above it.
    width, height = _size_for(CELLULAR_SHORT_SIDE, src_w, src_h)
    fps = output_fps(src_fps, policy.low_rung_max_fps)
    return Rung(
        name=f"{CELLULAR_SHORT_SIDE}p",
        width=width,
        height=height,
        fps=fps,
        bitrate_kbps=CELLULAR_BITRATE_KBPS,
        maxrate_kbps=CELLULAR_MAXRATE_KBPS,
        bufsize_kbps=CELLULAR_BUFSIZE_KBPS,
        profile="high",
        level=h264_level(width, height, fps, CELLULAR_MAXRATE_KBPS, CELLULAR_BUFSIZE_KBPS),
        audio=audio,
    )
