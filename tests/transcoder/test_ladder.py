"""Tests for ``transcoder.ladder``: table tests for known sources, properties for all."""

from __future__ import annotations

import itertools
import re
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transcoder.config import LadderPolicy, RungSpec
from transcoder.errors import ConfigError, InputError
from transcoder.ladder import CELLULAR_AUDIO_KBPS, h264_level, output_fps, plan_ladder
from transcoder.models import AudioInfo, AudioPlan, Ladder, SourceInfo, VideoInfo

NTSC30 = Fraction(30000, 1001)
NTSC60 = Fraction(60000, 1001)


def make_source(
    display_width: int,
    display_height: int,
    fps: Fraction | int = 30,
    *,
    audio: bool = True,
    coded: tuple[int, int] | None = None,
    sar: Fraction = Fraction(1),
    rotation_deg: int = 0,
) -> SourceInfo:
    """A probed source with the given display size; the rest is plausible filler."""
    coded_w, coded_h = coded if coded is not None else (display_width, display_height)
    video = VideoInfo(
        index=0,
        codec="h264",
        coded_width=coded_w,
        coded_height=coded_h,
        display_width=display_width,
        display_height=display_height,
        sample_aspect_ratio=sar,
        rotation_deg=rotation_deg,
        fps=Fraction(fps),
        is_vfr=False,
        pix_fmt="yuv420p",
        bit_depth=8,
        chroma_subsampling="420",
        field_order="progressive",
        start_s=0.0,
        duration_s=10.0,
        frame_count=None,
    )
    audio_info = (
        AudioInfo(
            index=1,
            codec="aac",
            channels=2,
            layout="stereo",
            sample_rate=48000,
            start_s=0.0,
            duration_s=10.0,
        )
        if audio
        else None
    )
    return SourceInfo(
        container="mov,mp4,m4a,3gp,3g2,mj2",
        duration_s=10.0,
        size_bytes=1_000_000,
        bit_rate_bps=800_000,
        video=video,
        audio=audio_info,
        stream_count=2 if audio else 1,
    )


Row = tuple[str, int, int, Fraction, int, int, int, str]


def rows(ladder: Ladder) -> list[Row]:
    """(name, width, height, fps, bitrate, maxrate, bufsize, level) per rung."""
    return [
        (r.name, r.width, r.height, r.fps, r.bitrate_kbps, r.maxrate_kbps, r.bufsize_kbps, r.level)
        for r in ladder.rungs
    ]


F = Fraction

# --------------------------------------------------------------------------
# Table tests
# --------------------------------------------------------------------------


def test_1080p30_landscape_full_ladder() -> None:
    ladder = plan_ladder(make_source(1920, 1080, 30))
    assert rows(ladder) == [
        ("1080p", 1920, 1080, F(30), 5000, 5500, 10000, "4.0"),
        ("720p", 1280, 720, F(30), 2800, 3080, 5600, "3.1"),
        ("480p", 854, 480, F(30), 1400, 1540, 2800, "3.1"),
        ("360p", 640, 360, F(30), 800, 880, 1600, "3.0"),
    ]
    assert ladder.gop_s == 2.0 and ladder.segment_s == 4.0
    assert all(r.profile == "high" for r in ladder.rungs)
    assert ladder.audio == (AudioPlan(bitrate_kbps=128),)
    assert all(r.audio is ladder.audio[0] for r in ladder.rungs)
    assert ladder.gop_frames(ladder.rungs[0]) == 60


def test_portrait_short_side_is_the_p() -> None:
    ladder = plan_ladder(make_source(1080, 1920, 30))
    assert [(r.name, r.width, r.height, r.level) for r in ladder.rungs] == [
        ("1080p", 1080, 1920, "4.0"),
        ("720p", 720, 1280, "3.1"),
        ("480p", 480, 854, "3.1"),
        ("360p", 360, 640, "3.0"),
    ]


def test_rotated_phone_video_uses_display_not_coded_size() -> None:
    source = make_source(1080, 1920, 30, coded=(1920, 1080), rotation_deg=90)
    top = plan_ladder(source).rungs[0]
    assert (top.width, top.height) == (1080, 1920)


def test_360p_source_gets_one_rung_at_its_own_size() -> None:
    assert rows(plan_ladder(make_source(640, 360, 30))) == [
        ("360p", 640, 360, F(30), 800, 880, 1600, "3.0"),
    ]


def test_540p_source_gets_own_size_top_rung_with_interpolated_bitrate() -> None:
    # 540^2 lies 21.25% of the way from 480^2 to 720^2: 1400 + 0.2125 * 1400.
    ladder = plan_ladder(make_source(960, 540, 30))
    assert rows(ladder) == [
        ("540p", 960, 540, F(30), 1698, 1868, 3396, "3.1"),
        ("480p", 854, 480, F(30), 1400, 1540, 2800, "3.1"),
        ("360p", 640, 360, F(30), 800, 880, 1600, "3.0"),
    ]


def test_rungs_too_close_to_the_own_size_top_rung_are_dropped() -> None:
    # 392p: 360 is more than 90% of 392, so only the source size remains.
    ladder = plan_ladder(make_source(696, 392, 30))
    assert [r.name for r in ladder.rungs] == ["392p"]
    # 400p: 360 is exactly 90%, not more, so it is kept.
    ladder = plan_ladder(make_source(710, 400, 30))
    assert [r.name for r in ladder.rungs] == ["400p", "360p"]


def test_720p60_keeps_60_on_720p_only_with_more_bits() -> None:
    assert rows(plan_ladder(make_source(1280, 720, 60))) == [
        ("720p", 1280, 720, F(60), 4200, 4620, 8400, "3.2"),
        ("480p", 854, 480, F(30), 1400, 1540, 2800, "3.1"),
        ("360p", 640, 360, F(30), 800, 880, 1600, "3.0"),
    ]


def test_ntsc_59_94_stays_exact() -> None:
    ladder = plan_ladder(make_source(1920, 1080, NTSC60))
    assert rows(ladder) == [
        ("1080p", 1920, 1080, NTSC60, 7500, 8250, 15000, "4.2"),
        ("720p", 1280, 720, NTSC60, 4200, 4620, 8400, "3.2"),
        ("480p", 854, 480, NTSC30, 1400, 1540, 2800, "3.1"),
        ("360p", 640, 360, NTSC30, 800, 880, 1600, "3.0"),
    ]
    assert all(isinstance(r.fps, Fraction) for r in ladder.rungs)


def test_4k_source_tops_out_at_1080p() -> None:
    ladder = plan_ladder(make_source(3840, 2160, 30))
    assert [(r.name, r.width, r.height) for r in ladder.rungs] == [
        ("1080p", 1920, 1080),
        ("720p", 1280, 720),
        ("480p", 854, 480),
        ("360p", 640, 360),
    ]


def test_4k120_is_brought_down_to_60_and_30() -> None:
    ladder = plan_ladder(make_source(3840, 2160, 120))
    assert [r.fps for r in ladder.rungs] == [F(60), F(60), F(30), F(30)]


def test_odd_display_853x480_gives_even_sizes_within_the_source() -> None:
    assert [(r.name, r.width, r.height) for r in plan_ladder(make_source(853, 480)).rungs] == [
        ("480p", 852, 480),
        ("360p", 640, 360),
    ]


def test_odd_display_1918x1078_gives_own_size_top_rung() -> None:
    ladder = plan_ladder(make_source(1918, 1078, 30))
    assert [(r.name, r.width, r.height, r.bitrate_kbps) for r in ladder.rungs] == [
        ("1078p", 1918, 1078, 4985),
        ("720p", 1282, 720, 2800),
        ("480p", 854, 480, 1400),
        ("360p", 640, 360, 800),
    ]


def test_odd_short_side_is_rounded_down_to_even() -> None:
    ladder = plan_ladder(make_source(1919, 1079, 30))
    top = ladder.rungs[0]
    # 1078 * 1919 / 1079 = 1917.2 -> 1918, which is still within the 1919 px source.
    assert (top.name, top.width, top.height) == ("1078p", 1918, 1078)


def test_anamorphic_pal_dvd_plans_from_the_display_size() -> None:
    # 720x576 coded, SAR 16:15 -> 768x576 display (4:3).
    source = make_source(768, 576, 25, coded=(720, 576), sar=F(16, 15))
    assert [(r.name, r.width, r.height, r.fps) for r in plan_ladder(source).rungs] == [
        ("576p", 768, 576, F(25)),
        ("480p", 640, 480, F(25)),
        ("360p", 480, 360, F(25)),
    ]


def test_tiny_source_gets_one_rung_at_its_own_size() -> None:
    # 800 kb/s * (120/360)^2 = 88.9 kb/s.
    assert rows(plan_ladder(make_source(160, 120, 30))) == [
        ("120p", 160, 120, F(30), 89, 98, 178, "1.1"),
    ]


def test_very_small_source_bitrate_has_a_floor() -> None:
    (rung,) = plan_ladder(make_source(64, 48, 15)).rungs
    assert (rung.width, rung.height, rung.bitrate_kbps) == (64, 48, 32)


def test_no_audio() -> None:
    ladder = plan_ladder(make_source(1920, 1080, 30, audio=False))
    assert ladder.audio == ()
    assert all(r.audio is None for r in ladder.rungs)


def test_custom_audio_bitrate() -> None:
    ladder = plan_ladder(make_source(1280, 720), LadderPolicy(audio_bitrate_kbps=96))
    assert ladder.audio == (AudioPlan(bitrate_kbps=96),)


def test_custom_gop_and_segment() -> None:
    ladder = plan_ladder(make_source(1280, 720), gop_s=2.0, segment_s=6.0)
    assert (ladder.gop_s, ladder.segment_s) == (2.0, 6.0)


def test_cellular_rung() -> None:
    ladder = plan_ladder(make_source(1920, 1080, 60), LadderPolicy(cellular_rung=True))
    assert [r.name for r in ladder.rungs] == ["1080p", "720p", "480p", "360p", "234p"]
    cell = ladder.rungs[-1]
    assert (cell.width, cell.height, cell.fps) == (416, 234, F(30))
    assert (cell.bitrate_kbps, cell.maxrate_kbps, cell.bufsize_kbps) == (80, 88, 88)
    assert cell.level == "1.3"
    main, low = ladder.audio
    assert main == AudioPlan(bitrate_kbps=128)
    assert low == AudioPlan(name="audio-low", bitrate_kbps=CELLULAR_AUDIO_KBPS)
    assert cell.audio is low
    assert all(r.audio is main for r in ladder.rungs[:-1])
    # The cap on what any segment of the variant can carry stays under Apple's 192.
    assert cell.maxrate_kbps + low.bitrate_kbps <= 192


def test_cellular_rung_portrait_and_without_audio() -> None:
    ladder = plan_ladder(make_source(1080, 1920, 30, audio=False), LadderPolicy(cellular_rung=True))
    cell = ladder.rungs[-1]
    assert (cell.name, cell.width, cell.height, cell.audio) == ("234p", 234, 416, None)
    assert ladder.audio == ()


@pytest.mark.parametrize(("width", "height"), [(320, 234), (312, 176), (160, 120)])
def test_cellular_rung_skipped_for_sources_at_or_below_234p(width: int, height: int) -> None:
    ladder = plan_ladder(make_source(width, height), LadderPolicy(cellular_rung=True))
    assert len(ladder.rungs) == 1
    assert ladder.audio == (AudioPlan(bitrate_kbps=128),)


def test_cellular_rung_after_a_small_own_size_rung() -> None:
    ladder = plan_ladder(make_source(426, 240, 30), LadderPolicy(cellular_rung=True))
    assert [(r.name, r.width, r.height) for r in ladder.rungs] == [("240p", 426, 240), ("234p", 416, 234)]


def test_custom_policy_rungs_in_any_order() -> None:
    policy = LadderPolicy(
        rungs=(RungSpec(short_side=360, bitrate_kbps=700), RungSpec(short_side=720, bitrate_kbps=2500))
    )
    ladder = plan_ladder(make_source(1920, 1080), policy)
    assert [(r.name, r.bitrate_kbps) for r in ladder.rungs] == [("720p", 2500), ("360p", 700)]


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gop_s", "segment_s"),
    [(2.0, 5.0), (2.0, 1.0), (0.0, 4.0), (0.25, 1.0), (11.0, 22.0), (2.0, 0.0), (2.0, -4.0), (float("nan"), 4.0)],
)
def test_bad_timing_is_a_config_error(gop_s: float, segment_s: float) -> None:
    with pytest.raises(ConfigError):
        plan_ladder(make_source(1280, 720), gop_s=gop_s, segment_s=segment_s)


def test_cellular_rung_with_a_policy_rung_below_234p_is_a_config_error() -> None:
    policy = LadderPolicy(
        rungs=(RungSpec(short_side=720, bitrate_kbps=2800), RungSpec(short_side=180, bitrate_kbps=200)),
        cellular_rung=True,
    )
    with pytest.raises(ConfigError):
        plan_ladder(make_source(1280, 720), policy)


@pytest.mark.parametrize(("width", "height", "fps"), [(0, 720, 30), (1280, 0, 30), (1280, 720, 0)])
def test_source_without_size_or_rate_is_an_input_error(width: int, height: int, fps: int) -> None:
    with pytest.raises(InputError):
        plan_ladder(make_source(width, height, fps))


# --------------------------------------------------------------------------
# h264_level
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "fps", "maxrate", "bufsize", "profile", "level"),
    [
        (1920, 1080, F(30), 5500, 10000, "high", "4.0"),  # 8160 MBs * 30 = 244800 <= 245760
        (1920, 1080, F(30), 22000, 27000, "high", "4.0"),  # 20000 * 1.25 = 25000 kb/s for High
        (1920, 1080, F(30), 22000, 27000, "main", "4.1"),  # ... but only 20000 for Main
        (1920, 1080, F(30), 26000, 30000, "high", "4.1"),
        (1920, 1080, F(60), 8250, 15000, "high", "4.2"),
        (1920, 1080, NTSC60, 8250, 15000, "high", "4.2"),
        (1280, 720, F(30), 3080, 5600, "high", "3.1"),
        (1280, 720, F(60), 4620, 8400, "high", "3.2"),  # exactly MaxMBPS 216000
        (854, 480, F(30), 1540, 2800, "high", "3.1"),  # 1620 MBs * 30 > 40500
        (854, 480, F(25), 1540, 2800, "high", "3.0"),
        (640, 360, F(30), 880, 1600, "high", "3.0"),
        (416, 234, F(30), 88, 88, "high", "1.3"),
        (320, 240, F(30), 500, 500, "high", "1.3"),
        (176, 144, F(15), 64, 64, "baseline", "1.0"),
        (3840, 2160, F(30), 20000, 40000, "high", "5.1"),
        (3840, 2160, F(60), 20000, 40000, "high", "5.2"),
        (4096, 64, F(30), 500, 1000, "high", "4.0"),  # 256 MBs wide needs sqrt(8 MaxFS) >= 256
        (64, 4096, F(30), 500, 1000, "high", "4.0"),
    ],
)
def test_h264_level_table(
    width: int, height: int, fps: Fraction, maxrate: int, bufsize: int, profile: str, level: str
) -> None:
    assert h264_level(width, height, fps, maxrate, bufsize, profile=profile) == level


def test_h264_level_bufsize_alone_can_raise_the_level() -> None:
    # Level 4.0 High allows 25000 * 1.25 = 31250 kbit of CPB.
    assert h264_level(1920, 1080, F(30), 5000, 31250) == "4.0"
    assert h264_level(1920, 1080, F(30), 5000, 31251) == "4.1"


@pytest.mark.parametrize(
    ("width", "height", "fps", "maxrate", "bufsize", "profile"),
    [
        (0, 1080, F(30), 1000, 1000, "high"),
        (1920, -2, F(30), 1000, 1000, "high"),
        (1920, 1080, F(0), 1000, 1000, "high"),
        (1920, 1080, F(30), -1, 1000, "high"),
        (1920, 1080, F(30), 1000, 1000, "ultra"),
        (8192, 8192, F(120), 1000, 1000, "high"),  # beyond level 6.2
        (1920, 1080, F(30), 2_000_000, 1000, "high"),
    ],
)
def test_h264_level_errors(width: int, height: int, fps: Fraction, maxrate: int, bufsize: int, profile: str) -> None:
    with pytest.raises(ConfigError):
        h264_level(width, height, fps, maxrate, bufsize, profile=profile)


# --------------------------------------------------------------------------
# output_fps
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "cap", "expected"),
    [
        (F(30), 30, F(30)),
        (F(24000, 1001), 30, F(24000, 1001)),
        (NTSC30, 30, NTSC30),
        (NTSC60, 30, NTSC30),
        (NTSC60, 60, NTSC60),
        (F(60), 30, F(30)),
        (F(50), 30, F(25)),
        (F(48), 30, F(24)),
        (F(120), 60, F(60)),
        (F(120000, 1001), 60, NTSC60),
        (F(120), 30, F(30)),
        (F(100), 30, F(25)),
        (F(144), 60, F(48)),
        (F(90), 60, F(45)),  # exactly 0.75 * cap: the divisor is still taken
        (F(72), 60, F(60)),  # 36 would lose too much: the cap instead
        (F(40), 30, F(30)),
        (F(1), 30, F(1)),
    ],
)
def test_output_fps_table(source: Fraction, cap: int, expected: Fraction) -> None:
    result = output_fps(source, cap)
    assert result == expected
    assert isinstance(result, Fraction)


@pytest.mark.parametrize(("source", "cap"), [(F(0), 30), (F(-30), 30), (F(30), 0)])
def test_output_fps_errors(source: Fraction, cap: int) -> None:
    with pytest.raises(ConfigError):
        output_fps(source, cap)


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------

frame_rates = st.one_of(
    st.integers(min_value=1, max_value=240).map(Fraction),
    st.integers(min_value=1, max_value=240).map(lambda n: Fraction(n * 1000, 1001)),
)
sides = st.integers(min_value=64, max_value=4096)
LEVEL_RE = re.compile(r"^[1-6]\.[0-3]$")


@settings(max_examples=400, deadline=None)
@given(source_fps=frame_rates, cap=st.integers(min_value=1, max_value=120))
def test_output_fps_properties(source_fps: Fraction, cap: int) -> None:
    result = output_fps(source_fps, cap)
    assert 0 < result <= cap
    assert result <= source_fps
    if source_fps <= cap:
        assert result == source_fps
    else:
        # Either an exact divisor of the source rate of at least 3/4 of the cap, or the cap.
        ratio = source_fps / result
        assert (ratio.denominator == 1 and result >= Fraction(3, 4) * cap) or result == cap


@settings(max_examples=400, deadline=None)
@given(width=sides, height=sides, fps=frame_rates, audio=st.booleans(), cellular=st.booleans())
def test_ladder_properties(width: int, height: int, fps: Fraction, audio: bool, cellular: bool) -> None:
    policy = LadderPolicy(cellular_rung=cellular)
    ladder = plan_ladder(make_source(width, height, fps, audio=audio), policy)
    src_short, src_long = min(width, height), max(width, height)
    rungs = ladder.rungs
    assert rungs

    for r in rungs:
        assert r.width > 0 and r.height > 0
        assert r.width % 2 == 0 and r.height % 2 == 0
        # Never upscaled, in either dimension.
        assert r.width <= width and r.height <= height
        short, long = min(r.width, r.height), max(r.width, r.height)
        assert short <= src_short
        assert r.name == f"{short}p"
        # Orientation and aspect ratio kept: the long side is within rounding of the exact value.
        assert not (r.width > r.height and width < height)
        assert not (r.width < r.height and width > height)
        exact_long = Fraction(short * src_long, src_short)
        assert abs(long - exact_long) <= 2 or abs(long / exact_long - 1) <= Fraction(1, 100)
        # Frame rates.
        assert 0 < r.fps <= 60
        assert r.fps <= fps
        if short < 720:
            assert r.fps <= 30
        # Rates and level.
        assert r.bitrate_kbps > 0
        assert r.maxrate_kbps >= r.bitrate_kbps
        assert r.bufsize_kbps >= r.maxrate_kbps // 2
        assert LEVEL_RE.match(r.level)
        assert r.level == h264_level(r.width, r.height, r.fps, r.maxrate_kbps, r.bufsize_kbps)
        assert r.profile == "high"
        assert ladder.gop_frames(r) >= 1

    names = [r.name for r in rungs]
    assert len(set(names)) == len(names)
    pixels = [r.width * r.height for r in rungs]
    assert all(a > b for a, b in itertools.pairwise(pixels))

    # The top rung: 1080p for big sources, else the source's own (even) short side.
    top_short = min(rungs[0].width, rungs[0].height)
    assert top_short == min(1080, src_short - src_short % 2)

    # Audio plans.
    if not audio:
        assert ladder.audio == ()
        assert all(r.audio is None for r in rungs)
    else:
        assert ladder.audio[0] == AudioPlan(bitrate_kbps=128)
        assert all(r.audio in ladder.audio for r in rungs)
    # The cellular rung comes when asked for and some other rung is above 234p.
    has_cellular = cellular and src_short >= 236
    if has_cellular:
        cell = rungs[-1]
        assert cell.name == "234p" and len(rungs) >= 2
        assert (cell.bitrate_kbps, cell.maxrate_kbps, cell.bufsize_kbps) == (80, 88, 88)
        if audio:
            assert cell.audio == AudioPlan(name="audio-low", bitrate_kbps=CELLULAR_AUDIO_KBPS)
            assert len(ladder.audio) == 2
    elif audio:
        assert len(ladder.audio) == 1
