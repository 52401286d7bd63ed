"""The media factory makes what it claims: every property is re-probed with PyAV."""

from __future__ import annotations

import itertools
import urllib.error
import urllib.request
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from tests.support.canary import CanaryServer
from tests.support.media import (
    AV_FIELD_PROGRESSIVE,
    AV_FIELD_TT,
    channel_frequency,
    clockwise_rotation,
    make_audio_only,
    make_clip,
    make_concat_trap,
    make_empty,
    make_hls_trap,
    make_huge_dimensions,
    make_image_as_video,
    make_many_streams,
    make_random_bytes,
    make_text,
    make_truncated,
    make_truncated_faststart,
    mp4_top_level_boxes,
)

# ----------------------------------------------------------------------------- helpers


def video_frames(path: Path, limit: int | None = None) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(itertools.islice(container.decode(video=0), limit))


def first_video_frame(path: Path) -> av.VideoFrame:
    return video_frames(path, 1)[0]


def video_stream(container: av.container.InputContainer) -> av.VideoStream:
    return container.streams.video[0]


def audio_samples(path: Path) -> tuple[np.ndarray[Any, Any], int]:
    """All decoded audio of the first audio stream as (channels, samples) float, and its rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]
        return np.concatenate(chunks, axis=1), stream.codec_context.sample_rate


def dominant_frequency(signal: np.ndarray[Any, Any], rate: int) -> float:
    window = signal * np.hanning(len(signal))
    spectrum = np.abs(np.fft.rfft(window))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[int(np.argmax(spectrum))])


def first_time(path: Path, kind: str) -> float:
    with av.open(str(path)) as container:
        frames: Iterator[av.VideoFrame | av.AudioFrame]
        frames = container.decode(video=0) if kind == "video" else container.decode(audio=0)
        for frame in frames:
            assert frame.time is not None
            return frame.time
    raise AssertionError(f"no {kind} frame")


def box_kinds(path: Path) -> list[str]:
    return [box.kind for box in mp4_top_level_boxes(path)]


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def default_clip(media_dir: Path) -> Path:
    return make_clip(media_dir / "default.mp4")


@pytest.fixture(scope="module")
def faststart_clip(media_dir: Path) -> Path:
    return make_clip(media_dir / "faststart.mp4", faststart=True, seconds=1.0)


# ----------------------------------------------------------------------------- real clips


def test_default_clip_is_a_landscape_h264_aac_mp4(default_clip: Path) -> None:
    with av.open(str(default_clip)) as container:
        assert "mp4" in container.format.name
        video = video_stream(container)
        assert video.codec_context.name == "h264"
        assert (video.codec_context.width, video.codec_context.height) == (320, 180)
        assert video.average_rate == 30
        assert video.codec_context.has_b_frames  # like real sources: pts != dts
        assert video.sample_aspect_ratio in (None, Fraction(0), Fraction(1))
        assert container.duration is not None
        assert container.duration / av.time_base == pytest.approx(2.0, abs=0.05)
        (audio,) = container.streams.audio
        assert audio.codec_context.name == "aac"
        assert audio.codec_context.layout.name == "stereo"
        assert audio.codec_context.sample_rate == 48000
    frames = video_frames(default_clip)
    assert len(frames) == 60
    assert {(f.width, f.height, f.format.name) for f in frames} == {(320, 180, "yuv420p")}
    assert frames[0].rotation == 0
    assert not any(f.interlaced_frame for f in frames)
    assert frames[0].time == 0


def test_default_clip_moves_and_is_not_black(default_clip: Path) -> None:
    frames = video_frames(default_clip)
    lumas = [f.to_ndarray(format="gray").astype(np.float32) for f in (frames[0], frames[15], frames[45])]
    for luma in lumas:
        assert luma.mean() > 50
        assert luma.std() > 20
    assert np.abs(lumas[0] - lumas[1]).mean() > 5
    assert np.abs(lumas[1] - lumas[2]).mean() > 5


def test_still_clip_does_not_move(media_dir: Path) -> None:
    path = make_clip(media_dir / "still.mp4", moving=False, seconds=1.0, audio=False)
    frames = video_frames(path)
    first, last = (f.to_ndarray(format="gray").astype(np.float32) for f in (frames[0], frames[-1]))
    assert first.mean() > 50
    assert np.abs(first - last).mean() < 2


def test_default_mp4_is_moov_at_end(default_clip: Path) -> None:
    kinds = box_kinds(default_clip)
    assert kinds.index("mdat") < kinds.index("moov")


def test_faststart_puts_moov_first(faststart_clip: Path) -> None:
    kinds = box_kinds(faststart_clip)
    assert kinds.index("moov") < kinds.index("mdat")
    assert first_video_frame(faststart_clip).width == 320


def test_portrait(media_dir: Path) -> None:
    path = make_clip(media_dir / "portrait.mp4", width=180, height=320, seconds=0.5, audio=False)
    frame = first_video_frame(path)
    assert (frame.width, frame.height) == (180, 320)


def test_odd_size(media_dir: Path) -> None:
    path = make_clip(media_dir / "odd.mp4", width=321, height=181, pix_fmt="yuv444p", seconds=0.5, audio=False)
    frame = first_video_frame(path)
    assert (frame.width, frame.height) == (321, 181)
    assert frame.width % 2 == 1 and frame.height % 2 == 1
    assert frame.format.name == "yuv444p"


def test_odd_size_with_subsampled_chroma_is_refused(media_dir: Path) -> None:
    with pytest.raises(ValueError, match="odd size"):
        make_clip(media_dir / "odd420.mp4", width=321, height=181, pix_fmt="yuv420p")


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_a_display_matrix(media_dir: Path, rotation: int) -> None:
    path = make_clip(media_dir / f"rot{rotation}.mp4", rotation=rotation, seconds=0.5, audio=False)
    frame = first_video_frame(path)
    assert (frame.width, frame.height) == (320, 180)  # coded landscape
    assert clockwise_rotation(frame.rotation) == rotation
    assert frame.rotation % 360 == (360 - rotation) % 360  # PyAV reads counter-clockwise (-90 for 90)


def test_bad_rotation_is_refused(media_dir: Path) -> None:
    with pytest.raises(ValueError, match="rotation"):
        make_clip(media_dir / "rot45.mp4", rotation=45)


@pytest.mark.parametrize("fps", [60, Fraction(60000, 1001)], ids=["60", "59.94"])
def test_frame_rates(media_dir: Path, fps: Fraction | int) -> None:
    path = make_clip(media_dir / f"fps{float(fps):.2f}.mp4", fps=fps, seconds=1.0, audio=False)
    with av.open(str(path)) as container:
        assert video_stream(container).average_rate == fps
    frames = video_frames(path)
    assert len(frames) == 60
    assert frames[1].time == pytest.approx(float(1 / Fraction(fps)), abs=1e-4)


def test_vfr_has_irregular_pts(media_dir: Path) -> None:
    path = make_clip(media_dir / "vfr.mp4", vfr=True, audio=False)
    with av.open(str(path)) as container:
        stream = video_stream(container)
        assert stream.time_base == Fraction(1, 90000)
        assert stream.average_rate is not None
        assert float(stream.average_rate) == pytest.approx(24, abs=1)  # 2 frames per 1/30 + 1/20 s
        pts = sorted(f.pts for f in container.decode(stream) if f.pts is not None)
    deltas = np.diff(pts)
    assert set(deltas.tolist()) == {3000, 4500}  # 1/30 s and 1/20 s at 90 kHz
    assert (deltas[:-1] != deltas[1:]).all()  # alternating


@pytest.mark.parametrize(
    ("pix_fmt", "bits", "chroma_width"),
    [("yuv420p10le", 10, 160), ("yuv444p", 8, 320)],
)
def test_pixel_formats(media_dir: Path, pix_fmt: str, bits: int, chroma_width: int) -> None:
    path = make_clip(media_dir / f"{pix_fmt}.mp4", pix_fmt=pix_fmt, seconds=0.5, audio=False)
    with av.open(str(path)) as container:
        assert video_stream(container).codec_context.pix_fmt == pix_fmt
    frame = first_video_frame(path)
    assert frame.format.name == pix_fmt
    assert frame.format.components[0].bits == bits
    assert frame.format.chroma_width(320) == chroma_width
    if bits > 8:
        luma = frame.to_ndarray()
        assert luma.dtype == np.uint16
        assert int(luma.max()) > 255  # really uses the 10-bit range


def test_interlaced(media_dir: Path) -> None:
    path = make_clip(media_dir / "interlaced.mp4", interlaced=True, seconds=0.5, audio=False)
    with av.open(str(path)) as container:
        assert video_stream(container).codec_context.field_order == AV_FIELD_TT
    frames = video_frames(path)
    assert frames and all(f.interlaced_frame for f in frames)


def test_progressive_by_default(default_clip: Path) -> None:
    with av.open(str(default_clip)) as container:
        assert video_stream(container).codec_context.field_order == AV_FIELD_PROGRESSIVE


def test_anamorphic_sar(media_dir: Path) -> None:
    path = make_clip(media_dir / "sar.mp4", width=480, height=360, sar=(4, 3), seconds=0.5, audio=False)
    with av.open(str(path)) as container:
        stream = video_stream(container)
        assert stream.sample_aspect_ratio == Fraction(4, 3)
        assert stream.codec_context.sample_aspect_ratio == Fraction(4, 3)
        assert stream.display_aspect_ratio == Fraction(16, 9)
        assert stream.codec_context.width * stream.sample_aspect_ratio == 640  # display 640x360
    frame = first_video_frame(path)
    assert (frame.width, frame.height) == (480, 360)


def test_no_audio(media_dir: Path) -> None:
    path = make_clip(media_dir / "silent.mp4", audio=False, seconds=0.5)
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["video"]


@pytest.mark.parametrize("container_name", ["mp4", "mpegts"])
def test_audio_starts_late(media_dir: Path, container_name: str) -> None:
    path = make_clip(media_dir / f"late.{container_name}", audio_start_s=0.5, container=container_name)
    video_t0, audio_t0 = first_time(path, "video"), first_time(path, "audio")
    assert audio_t0 - video_t0 == pytest.approx(0.5, abs=0.002)
    if container_name == "mp4":
        assert video_t0 == 0
        with av.open(str(path)) as container:
            audio = container.streams.audio[0]
            assert audio.start_time is not None and audio.time_base is not None
            assert audio.start_time * audio.time_base == Fraction(1, 2)


@pytest.mark.parametrize(("channels", "layout"), [(1, "mono"), (2, "stereo"), (6, "5.1")])
def test_audio_layouts_and_per_channel_tones(media_dir: Path, channels: int, layout: str) -> None:
    path = make_clip(media_dir / f"audio{channels}.mp4", audio_channels=channels, seconds=1.0)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.channels == channels
        assert stream.codec_context.layout.name == layout
        names = [c.name for c in stream.codec_context.layout.channels]
    samples, rate = audio_samples(path)
    assert samples.shape[0] == channels
    for index, name in enumerate(names):
        window = samples[index, 4800 : 4800 + 32768]
        assert dominant_frequency(window, rate) == pytest.approx(channel_frequency(index, name), abs=3)


def test_other_containers(media_dir: Path) -> None:
    mkv = make_clip(media_dir / "clip.mkv", container="mkv", seconds=0.5)
    ts = make_clip(media_dir / "clip.ts", container="ts", seconds=0.5)
    for path, name in ((mkv, "matroska"), (ts, "mpegts")):
        with av.open(str(path)) as container:
            assert name in container.format.name
            assert [s.type for s in container.streams] == ["video", "audio"]


def test_other_video_codec(media_dir: Path) -> None:
    path = make_clip(
        media_dir / "mpeg4.avi", video_codec="mpeg4", container="avi", audio_codec="libmp3lame", seconds=0.5
    )
    with av.open(str(path)) as container:
        assert video_stream(container).codec_context.name == "mpeg4"
        assert container.streams.audio[0].codec_context.name.startswith("mp3")  # decoder: mp3float


def test_audio_only(media_dir: Path) -> None:
    path = make_audio_only(media_dir / "audio.m4a")
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["audio"]
        assert container.streams.audio[0].codec_context.channels == 2
        assert container.duration is not None
        assert container.duration / av.time_base == pytest.approx(2.0, abs=0.05)


def test_many_streams(media_dir: Path) -> None:
    path = make_many_streams(media_dir / "many.mkv", n=40)
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1
        assert len(container.streams.audio) == 40
        assert len(container.streams) == 41


def test_huge_dimensions(media_dir: Path) -> None:
    path = make_huge_dimensions(media_dir / "huge.mp4")
    with av.open(str(path)) as container:
        stream = video_stream(container)
        assert (stream.codec_context.width, stream.codec_context.height) == (8200, 16)
    frames = video_frames(path)
    assert len(frames) == 3
    assert (frames[0].width, frames[0].height) == (8200, 16)


# ----------------------------------------------------------------------------- hostile inputs


def test_empty(media_dir: Path) -> None:
    path = make_empty(media_dir / "empty.mp4")
    assert path.stat().st_size == 0
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(path))


def test_random_bytes(media_dir: Path) -> None:
    a = make_random_bytes(media_dir / "random.mp4")
    b = make_random_bytes(media_dir / "random_again.mp4")
    c = make_random_bytes(media_dir / "random2.mp4", n=1000, seed=2)
    assert a.stat().st_size == 64_000 and c.stat().st_size == 1000
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes()[:1000] != c.read_bytes()
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(a))


def test_text(media_dir: Path) -> None:
    path = make_text(media_dir / "notes.mp4")
    assert "not a video" in path.read_text(encoding="utf-8")
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(path))


@pytest.mark.parametrize(
    ("codec", "format_name", "magic"),
    [("png", "png_pipe", b"\x89PNG"), ("mjpeg", "jpeg_pipe", b"\xff\xd8")],
)
def test_image_as_video(media_dir: Path, codec: str, format_name: str, magic: bytes) -> None:
    path = make_image_as_video(media_dir / f"x_{codec}.mp4", codec=codec)
    assert path.read_bytes().startswith(magic)
    with av.open(str(path)) as container:
        assert container.format.name == format_name
    frames = video_frames(path)
    assert len(frames) == 1
    assert (frames[0].width, frames[0].height) == (320, 180)


def test_truncated_moov_at_end_loses_the_index(default_clip: Path, media_dir: Path) -> None:
    path = make_truncated(media_dir / "truncated.mp4", default_clip)
    assert path.stat().st_size == default_clip.stat().st_size // 2
    assert "moov" not in box_kinds(path)
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(path))


def test_truncated_faststart_keeps_moov_but_cuts_mdat(faststart_clip: Path, media_dir: Path) -> None:
    path = make_truncated_faststart(media_dir / "truncated_faststart.mp4", faststart_clip)
    boxes = {box.kind: box for box in mp4_top_level_boxes(path)}
    assert boxes["moov"].offset < boxes["mdat"].offset
    assert boxes["mdat"].offset + boxes["mdat"].size > path.stat().st_size  # mdat runs past EOF
    decoded = 0
    with av.open(str(path)) as container:  # opens and probes fine
        assert (video_stream(container).codec_context.width, len(container.streams)) == (320, 2)
        try:
            for _ in container.decode(video=0):
                decoded += 1
        except av.error.FFmpegError:
            pass
    assert 0 < decoded < 30  # the full clip has 30 frames


def test_truncated_faststart_makes_its_own_source(media_dir: Path) -> None:
    path = make_truncated_faststart(media_dir / "truncated_faststart_own.mp4")
    kinds = box_kinds(path)
    assert kinds.index("moov") < kinds.index("mdat")


def test_truncated_faststart_refuses_moov_at_end(default_clip: Path, media_dir: Path) -> None:
    with pytest.raises(ValueError, match="faststart"):
        make_truncated_faststart(media_dir / "nope.mp4", default_clip)


def test_hls_trap(media_dir: Path) -> None:
    secret = media_dir / "secret.txt"
    secret.write_text("TOP SECRET\n", encoding="utf-8")
    with CanaryServer() as canary:
        path = make_hls_trap(media_dir / "playlist.mp4", canary.url, secret)
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines[0] == "#EXTM3U"
        assert f"{canary.url}/seg.ts" in lines
        assert f"file://{secret.resolve()}" in lines
        assert lines[lines.index(f"{canary.url}/seg.ts") - 1] == "#EXTINF:1,"
        # FFmpeg itself does not follow it by default ...
        with pytest.raises(av.error.FFmpegError):
            av.open(str(path))
        with pytest.raises(av.error.FFmpegError):
            av.open(str(path), format="hls")
        assert canary.hits == []
        # ... but the trap is live: with FFmpeg's protections off it reaches the canary.
        unsafe = {
            "allowed_segment_extensions": "ALL",
            "allowed_extensions": "ALL",
            "protocol_whitelist": "file,http,tcp,crypto,data",
        }
        with pytest.raises(av.error.FFmpegError):  # the canary's body is not a TS segment
            av.open(str(path), format="hls", options=unsafe)
        assert "/seg.ts" in canary.paths


def test_concat_trap(default_clip: Path, media_dir: Path) -> None:
    with CanaryServer() as canary:
        path = make_concat_trap(media_dir / "list.avi", canary.url, default_clip)
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines == [
            "ffconcat version 1.0",
            f"file '{default_clip.resolve()}'",
            f"file '{canary.url}/x.mp4'",
        ]
        # probed as concat despite the .avi name; safe=1 refuses the absolute path
        with pytest.raises(PermissionError):
            av.open(str(path))
        assert canary.hits == []
        # live: with safe=0 and http allowed, demuxing past the first entry hits the canary
        with av.open(str(path), options={"safe": "0", "protocol_whitelist": "file,http,tcp"}) as container:
            assert container.format.name == "concat"
            try:
                for _ in container.demux():
                    pass
            except av.error.FFmpegError:
                pass
        assert "/x.mp4" in canary.paths


# ----------------------------------------------------------------------------- canary


def test_canary_records_requests() -> None:
    with CanaryServer(body=b"hello") as canary:
        url = canary.url
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{url}/probe?x=1", timeout=5) as response:
            assert response.status == 200
            assert response.read() == b"hello"
        request = urllib.request.Request(f"{url}/upload", data=b"payload", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        hits = canary.hits
        assert [(h.method, h.path) for h in hits] == [("GET", "/probe?x=1"), ("POST", "/upload")]
        assert hits[0].time <= hits[1].time
        assert hits[0].user_agent is not None and hits[0].user_agent.startswith("Python-urllib")
    # stopped: the port no longer answers
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/late", timeout=2)
    assert len(canary.hits) == 2


def test_canary_starts_empty_and_stops_twice_safely() -> None:
    canary = CanaryServer()
    with canary:
        assert canary.hits == []
    canary.stop()
    with pytest.raises(RuntimeError):
        _ = canary.url
