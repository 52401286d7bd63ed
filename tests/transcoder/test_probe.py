"""``probe()`` on real clips: what it reports about the container, the video and the audio.

Every clip comes from :mod:`tests.support.media` (tiny, a second or less unless a
check needs more), so the facts asserted here are the ones the factory wrote.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

import transcoder
from tests.support.media import make_clip
from transcoder import SourceInfo

MP4 = "mov,mp4,m4a,3gp,3g2,mj2"
MKV = "matroska,webm"
SUFFIXES = {"mp4": "mp4", "mov": "mov", "matroska": "mkv", "mpegts": "ts"}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe")


@pytest.fixture(scope="module")
def default_clip(clip_dir: Path) -> Path:
    return make_clip(clip_dir / "default.mp4")


@pytest.fixture(scope="module")
def default_info(default_clip: Path) -> SourceInfo:
    return transcoder.probe(default_clip)


def probe_clip(directory: Path, name: str, **kwargs: Any) -> SourceInfo:
    """Make a clip with ``make_clip(**kwargs)`` (silent and short unless told) and probe it."""
    kwargs.setdefault("audio", False)
    kwargs.setdefault("seconds", 0.5)
    suffix = SUFFIXES.get(str(kwargs.get("container", "mp4")), "bin")
    return transcoder.probe(make_clip(directory / f"{name}.{suffix}", **kwargs))


# ----------------------------------------------------------------------------- the default clip


def test_default_clip_container_and_duration(default_info: SourceInfo, default_clip: Path) -> None:
    assert default_info.container == MP4
    assert default_info.duration_s == pytest.approx(2.0, abs=0.05)
    assert default_info.size_bytes == default_clip.stat().st_size
    assert default_info.bit_rate_bps is not None and default_info.bit_rate_bps > 0
    assert default_info.stream_count == 2


def test_default_clip_video(default_info: SourceInfo) -> None:
    v = default_info.video
    assert v.codec == "h264"
    assert (v.coded_width, v.coded_height) == (320, 180)
    assert (v.display_width, v.display_height) == (320, 180)
    assert v.sample_aspect_ratio == 1
    assert v.rotation_deg == 0
    assert isinstance(v.fps, Fraction) and v.fps == 30
    assert v.is_vfr is False
    assert (v.pix_fmt, v.bit_depth, v.chroma_subsampling) == ("yuv420p", 8, "420")
    assert v.field_order == "progressive" and not v.interlaced
    assert v.start_s == 0.0
    assert v.duration_s == pytest.approx(2.0, abs=0.05)
    assert v.frame_count == 60


def test_default_clip_audio(default_info: SourceInfo) -> None:
    a = default_info.audio
    assert a is not None
    assert a.index != default_info.video.index
    assert (a.codec, a.channels, a.layout, a.sample_rate) == ("aac", 2, "stereo", 48000)
    assert a.start_s == pytest.approx(0.0, abs=1e-3)
    assert a.duration_s == pytest.approx(2.0, abs=0.05)


# ----------------------------------------------------------------------------- containers and codecs


@pytest.mark.parametrize(
    ("container", "expected"),
    [("mov", MP4), ("matroska", MKV), ("mpegts", "mpegts")],
)
def test_other_containers(clip_dir: Path, container: str, expected: str) -> None:
    info = probe_clip(clip_dir, f"container-{container}", container=container)
    assert info.container == expected
    assert info.video.codec == "h264"
    assert (info.video.display_width, info.video.display_height) == (320, 180)
    assert info.video.fps == 30
    assert info.duration_s == pytest.approx(0.5, abs=0.1)


def test_other_video_codec(clip_dir: Path) -> None:
    info = probe_clip(clip_dir, "mpeg4", video_codec="mpeg4")
    assert info.video.codec == "mpeg4"
    assert (info.video.coded_width, info.video.coded_height) == (320, 180)


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    ("rotation", "display"),
    [(90, (180, 320)), (180, (320, 180)), (270, (180, 320))],
)
def test_rotation_swaps_the_display_size(clip_dir: Path, rotation: int, display: tuple[int, int]) -> None:
    info = probe_clip(clip_dir, f"rotation-{rotation}", rotation=rotation, seconds=0.3)
    v = info.video
    assert v.rotation_deg == rotation  # clockwise, as a player turns it
    assert (v.coded_width, v.coded_height) == (320, 180)
    assert (v.display_width, v.display_height) == display


def test_rotation_in_matroska(clip_dir: Path) -> None:
    info = probe_clip(clip_dir, "rotation-mkv", rotation=90, container="matroska", seconds=0.3)
    assert info.video.rotation_deg == 90
    assert (info.video.display_width, info.video.display_height) == (180, 320)


@pytest.mark.parametrize(
    ("sar", "rotation", "display"),
    [
        ((4, 3), 0, (640, 360)),  # wide pixels stretch the width
        ((3, 4), 0, (480, 480)),  # tall pixels stretch the height (never shrink)
        ((4, 3), 90, (360, 640)),  # the SAR applies to coded pixels, then the picture turns
    ],
)
def test_sample_aspect_ratio(clip_dir: Path, sar: tuple[int, int], rotation: int, display: tuple[int, int]) -> None:
    info = probe_clip(
        clip_dir, f"sar-{sar[0]}-{sar[1]}-{rotation}", width=480, height=360, sar=sar, rotation=rotation, seconds=0.3
    )
    v = info.video
    assert v.sample_aspect_ratio == Fraction(*sar)
    assert (v.coded_width, v.coded_height) == (480, 360)
    assert (v.display_width, v.display_height) == display


# ----------------------------------------------------------------------------- frame rate


@pytest.mark.parametrize(
    "fps",
    [Fraction(25), Fraction(30), Fraction(60), Fraction(30000, 1001), Fraction(60000, 1001), Fraction(24000, 1001)],
    ids=str,
)
def test_constant_frame_rates_are_exact(clip_dir: Path, fps: Fraction) -> None:
    info = probe_clip(clip_dir, f"fps-{fps.numerator}-{fps.denominator}", fps=fps)
    assert isinstance(info.video.fps, Fraction)
    assert info.video.fps == fps  # exactly: 60000/1001, not 59.94
    assert info.video.is_vfr is False


def test_vfr_clip_is_vfr(clip_dir: Path) -> None:
    info = probe_clip(clip_dir, "vfr", vfr=True, seconds=1.0)
    assert info.video.is_vfr is True
    # frame durations alternate 1/30 and 1/20 s: 0.8 x 30 = 24 frames per second on average
    assert info.video.fps == 24  # measured 24.4, snapped to the nearest standard rate


def test_vfr_matroska_reports_the_measured_average_rate(clip_dir: Path) -> None:
    info = probe_clip(clip_dir, "vfr-mkv", vfr=True, seconds=1.0, container="matroska")
    assert info.video.is_vfr is True
    assert info.video.fps == 24  # measured 24.4, snapped to the nearest standard rate


# ----------------------------------------------------------------------------- pixels and fields


@pytest.mark.parametrize(
    ("pix_fmt", "bit_depth", "chroma"),
    [
        ("yuv420p10le", 10, "420"),
        ("yuv422p", 8, "422"),
        ("yuv422p10le", 10, "422"),
        ("yuv444p", 8, "444"),
    ],
)
def test_pixel_formats(clip_dir: Path, pix_fmt: str, bit_depth: int, chroma: str) -> None:
    info = probe_clip(clip_dir, f"pix-{pix_fmt}", pix_fmt=pix_fmt, seconds=0.3)
    assert info.video.pix_fmt == pix_fmt
    assert info.video.bit_depth == bit_depth
    assert info.video.chroma_subsampling == chroma


@pytest.mark.parametrize("container", ["mp4", "matroska"])
def test_interlaced(clip_dir: Path, container: str) -> None:
    info = probe_clip(clip_dir, f"interlaced-{container}", interlaced=True, container=container, seconds=0.3)
    assert info.video.field_order == "tt"
    assert info.video.interlaced


# ----------------------------------------------------------------------------- audio


@pytest.mark.parametrize(
    ("channels", "rate", "layout"),
    [(1, 44100, "mono"), (2, 48000, "stereo"), (6, 48000, "5.1")],
)
def test_audio_layouts(clip_dir: Path, channels: int, rate: int, layout: str) -> None:
    info = probe_clip(clip_dir, f"audio-{layout}", audio=True, audio_channels=channels, audio_rate=rate)
    a = info.audio
    assert a is not None
    assert (a.codec, a.channels, a.sample_rate, a.layout) == ("aac", channels, rate, layout)


def test_late_audio_mp4_starts_at_half_a_second(clip_dir: Path) -> None:
    info = probe_clip(clip_dir, "late-audio", audio=True, audio_start_s=0.5, seconds=1.0)
    assert info.audio is not None
    assert info.video.start_s == 0.0
    assert info.audio.start_s == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("container", ["mov", "matroska", "mpegts"])
def test_late_audio_offset_in_other_containers(clip_dir: Path, container: str) -> None:
    info = probe_clip(
        clip_dir, f"late-audio-{container}", audio=True, audio_start_s=0.5, seconds=1.0, container=container
    )
    assert info.audio is not None
    # MPEG-TS starts both streams at a muxing delay: the offset between them is what counts.
    # Matroska may count AAC's 1024-sample priming (21 ms) into the audio's start.
    assert info.audio.start_s - info.video.start_s == pytest.approx(0.5, abs=0.025)


def test_no_audio(clip_dir: Path) -> None:
    info = probe_clip(clip_dir, "silent")
    assert info.audio is None
    assert info.stream_count == 1


# ----------------------------------------------------------------------------- file objects


def test_probe_an_open_binary_file(default_clip: Path, default_info: SourceInfo) -> None:
    with default_clip.open("rb") as f:
        info = transcoder.probe(f)
        assert not f.closed  # the caller's file stays the caller's
    assert info.container == default_info.container
    assert info.duration_s == default_info.duration_s
    assert info.video == default_info.video
    assert info.audio == default_info.audio


def test_probe_an_in_memory_file(default_clip: Path, default_info: SourceInfo) -> None:
    info = transcoder.probe(io.BytesIO(default_clip.read_bytes()))
    assert info.video == default_info.video
    assert info.audio == default_info.audio


def test_probe_a_file_object_twice_and_from_any_position(default_clip: Path, default_info: SourceInfo) -> None:
    with default_clip.open("rb") as f:
        first = transcoder.probe(f)
        f.seek(1234)
        second = transcoder.probe(f)
    assert first.video == second.video == default_info.video


def test_file_name_is_no_format_hint(clip_dir: Path, default_clip: Path) -> None:
    # An mp4 under a playlist's name is still probed by its bytes, as a path or as a file object.
    disguised = clip_dir / "looks-like.m3u8"
    disguised.write_bytes(default_clip.read_bytes())
    assert transcoder.probe(disguised).container == MP4
    with disguised.open("rb") as f:
        assert transcoder.probe(f).container == MP4


def test_transcode_an_open_binary_file(default_clip: Path, tmp_path: Path) -> None:
    config = transcoder.TranscodeConfig(encoder=transcoder.EncoderSettings(preset="ultrafast"), poster=False)
    with default_clip.open("rb") as f:
        result = transcoder.transcode(f, tmp_path / "out", config=config)
    assert (tmp_path / "out" / result.master_uri).is_file()
    assert {r.name for r in result.renditions} == {"180p", "audio"}
