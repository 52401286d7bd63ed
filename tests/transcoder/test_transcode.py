"""End to end: transcode tiny real clips, then check the output with independent tools.

Outputs are decoded with PyAV and playlists parsed with the ``m3u8`` package;
peaks, averages, durations and timestamps are measured here from the files on
disk (the engine's own ``TranscodeResult`` is only checked against those
measurements). Each transcode runs once per module (see :func:`variant`) and
many tests look at it.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import m3u8
import numpy as np
import numpy.typing as npt
import pytest

import transcoder
from tests.support.media import ClipFactory
from transcoder import (
    CancelledError,
    EncoderSettings,
    LadderPolicy,
    LocalDirectory,
    OutputError,
    Progress,
    RenditionResult,
    RungSpec,
    TranscodeConfig,
    TranscodeResult,
)
from transcoder.bitstream import avc_codecs_tag, mp4_top_level_boxes
from transcoder.budget import CpuBudget
from transcoder.encode import codec_options
from transcoder.threadplan import BACKGROUND_NICE, plan_threads

pytestmark = pytest.mark.slow

Samples = npt.NDArray[np.float64]

SMALL_LADDER = LadderPolicy(
    rungs=(
        RungSpec(short_side=360, bitrate_kbps=800),
        RungSpec(short_side=240, bitrate_kbps=400),
        RungSpec(short_side=144, bitrate_kbps=200),
    ),
    # 180p -> 144p saves only ~14% with the shared audio; these tests check
    # every planned rung, so only rungs that are not cheaper may be dropped.
    min_rung_saving=0.0,
)
FAST = EncoderSettings(preset="ultrafast")
TS_CLOCK = 90_000

# name -> (make_clip arguments, TranscodeConfig overrides)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "main": ({"width": 640, "height": 360, "seconds": 5.0}, {}),
    "late_audio": ({"seconds": 2.0, "audio_start_s": 0.5}, {}),
    "rotated": ({"seconds": 2.0, "rotation": 90}, {}),
    "portrait": ({"seconds": 2.0, "width": 180, "height": 320}, {}),
    "odd": ({"seconds": 2.0, "width": 321, "height": 181, "pix_fmt": "yuv444p"}, {}),
    # superfast, unlike ultrafast, uses High-profile tools (CABAC, 8x8 transform).
    "10bit": ({"seconds": 2.0, "pix_fmt": "yuv420p10le"}, {"encoder": EncoderSettings(preset="superfast")}),
    "interlaced": ({"seconds": 2.0, "interlaced": True}, {}),
    "60fps": ({"seconds": 2.0, "width": 640, "height": 360, "fps": 60}, {}),
    "vfr": ({"seconds": 2.0, "vfr": True}, {}),
    "5.1": ({"seconds": 2.0, "audio_channels": 6}, {}),
    "mono": ({"seconds": 2.0, "audio_channels": 1, "audio_rate": 44100}, {}),
    "no_audio": ({"seconds": 2.0, "audio": False}, {}),
    "sar": ({"seconds": 2.0, "width": 480, "height": 360, "sar": (4, 3)}, {}),
    "fmp4": ({"seconds": 3.0}, {"segment_format": "fmp4"}),
    "short": ({"seconds": 0.5}, {"segment_s": 4.0, "gop_s": 2.0}),  # the defaults
    # The default preset (B-frames) and rungs at different frame rates: 180p
    # at 60 fps, 144p capped at 30 fps.
    "mixed_fps": (
        {"seconds": 2.0, "fps": 60},
        {
            "encoder": EncoderSettings(),
            "ladder": LadderPolicy(
                rungs=(RungSpec(short_side=180, bitrate_kbps=400), RungSpec(short_side=144, bitrate_kbps=200)),
                low_rung_below_short_side=160,
                min_rung_saving=0.0,
            ),
            "segment_s": 1.0,
        },
    ),
}


def make_config(**overrides: Any) -> TranscodeConfig:
    settings: dict[str, Any] = {"ladder": SMALL_LADDER, "encoder": FAST, "segment_s": 2.0, "gop_s": 1.0}
    settings.update(overrides)
    return TranscodeConfig(**settings)


# ----------------------------------------------------------------------------- measuring helpers


@dataclass(frozen=True, slots=True)
class Packet:
    pts_s: float
    keyframe: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class Audio:
    """Decoded audio: ``samples`` (channels x n) from ``start_s`` on the TS clock, in seconds."""

    start_s: float
    rate: int
    channels: int
    samples: Samples

    def window(self, begin_s: float, end_s: float, origin_s: float) -> Samples:
        """Samples between ``begin_s`` and ``end_s`` seconds after ``origin_s``."""
        first = round((origin_s + begin_s - self.start_s) * self.rate)
        last = round((origin_s + end_s - self.start_s) * self.rate)
        assert 0 <= first < last <= self.samples.shape[1], (first, last, self.samples.shape)
        return self.samples[:, first:last]


def ts_packets(data: bytes, kind: str) -> list[Packet]:
    """The ``kind`` ("video" or "audio") packets of an MPEG-TS byte string, in file order."""
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        streams = [s for s in container.streams if s.type == kind]
        assert streams, f"no {kind} stream"
        return [
            Packet(float(p.pts * p.time_base), p.is_keyframe, bytes(p))
            for p in container.demux(*streams)
            if p.size and p.pts is not None and p.time_base is not None
        ]


def decoded_video(source: str | io.BytesIO, fmt: str | None = None) -> list[av.VideoFrame]:
    with av.open(source, mode="r", format=fmt) as container:
        return list(container.decode(video=0))


def pts_deltas(frames: list[av.VideoFrame]) -> set[int]:
    """The distinct differences between consecutive presentation timestamps."""
    pts = [f.pts for f in frames]
    assert None not in pts
    return {b - a for a, b in itertools.pairwise(p for p in pts if p is not None)}


def decoded_audio(data: bytes) -> Audio:
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
    assert frames and frames[0].pts is not None and frames[0].time_base is not None
    samples = np.concatenate([f.to_ndarray() for f in frames], axis=1).astype(np.float64)
    return Audio(
        start_s=float(frames[0].pts * frames[0].time_base),
        rate=frames[0].sample_rate,
        channels=len(frames[0].layout.channels),
        samples=samples,
    )


def rms(samples: Samples) -> float:
    return float(np.sqrt(np.mean(samples**2)))


def tone_share(channel: Samples, rate: int, frequency: float) -> float:
    """Share of the channel's power within 5 Hz of ``frequency`` (0..1)."""
    power = np.abs(np.fft.rfft(channel * np.hanning(channel.size))) ** 2
    freqs = np.fft.rfftfreq(channel.size, 1 / rate)
    return float(power[np.abs(freqs - frequency) <= 5].sum() / power.sum())


def source_video_duration_s(path: Path) -> float:
    """Video duration of a source, from its packets: last end minus first start."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        spans = [(p.pts, p.pts + (p.duration or 0)) for p in container.demux(stream) if p.size and p.pts is not None]
        assert stream.time_base is not None
        return float((max(end for _, end in spans) - min(start for start, _ in spans)) * stream.time_base)


def onset_s(channel: Samples, rate: int, threshold: float = 0.01) -> float:
    """Seconds from the start of ``channel`` to its first sample louder than ``threshold``."""
    loud = np.flatnonzero(np.abs(channel) > threshold)
    assert loud.size, "no sound at all"
    return float(loud[0]) / rate


def rfc_peak_bps(sizes: list[int], durations: list[float], target_s: int) -> float:
    """RFC 8216 section 4.3.4.2 peak segment bit rate of one media playlist.

    The largest rate of any contiguous run of segments whose total duration
    lies in [0.5, 1.5] x TARGETDURATION; the per-segment maximum if no run does.
    """
    low, high = 0.5 * target_s, 1.5 * target_s
    best = 0.0
    for start in range(len(sizes)):
        run_bytes, run_s = 0, 0.0
        for size, duration in zip(sizes[start:], durations[start:], strict=True):
            run_bytes += size
            run_s += duration
            if run_s > high:
                break
            if run_s >= low:
                best = max(best, run_bytes * 8 / run_s)
    return best or max(size * 8 / d for size, d in zip(sizes, durations, strict=True) if d > 0)


def is_relative(uri: str) -> bool:
    parts = urlsplit(uri)
    return bool(uri) and not parts.scheme and not parts.netloc and not uri.startswith(("/", "\\"))


# ----------------------------------------------------------------------------- running the engine


@dataclass(frozen=True, slots=True)
class Run:
    """One finished transcode and what the engine reported while it ran."""

    source: Path
    out: Path
    result: TranscodeResult
    progress: tuple[Progress, ...]

    def master(self) -> Any:
        return m3u8.load(str(self.out / "master.m3u8"))

    def playlist(self, relpath: str) -> Any:
        return m3u8.load(str(self.out / relpath))

    @property
    def videos(self) -> list[RenditionResult]:
        return [r for r in self.result.renditions if r.kind == "video"]

    def segment_paths(self, rendition: str) -> list[Path]:
        """Segment files of ``rendition`` in playlist order (read from the playlist, not the result)."""
        playlist = self.playlist(f"{rendition}/index.m3u8")
        return [self.out / rendition / segment.uri for segment in playlist.segments]

    def extinfs(self, rendition: str) -> list[float]:
        return [float(s.duration) for s in self.playlist(f"{rendition}/index.m3u8").segments]

    def first_pts_s(self, rendition: str, kind: str) -> float:
        first = self.segment_paths(rendition)[0].read_bytes()
        return min(p.pts_s for p in ts_packets(first, kind))

    def audio_samples(self) -> Audio:
        return decoded_audio(b"".join(p.read_bytes() for p in self.segment_paths("audio")))


def run(source: Path, out: Path, **overrides: Any) -> Run:
    progress: list[Progress] = []
    result = transcoder.transcode(source, out, config=make_config(**overrides), progress=progress.append)
    return Run(source=source, out=out, result=result, progress=tuple(progress))


@pytest.fixture(scope="module")
def variant(clip: ClipFactory, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Run]:
    """``variant(name)``: the transcode of ``VARIANTS[name]``, run once per module."""
    runs: dict[str, Run] = {}
    root = tmp_path_factory.mktemp("transcodes")

    def get(name: str) -> Run:
        if name not in runs:
            clip_args, overrides = VARIANTS[name]
            runs[name] = run(clip(**clip_args), root / name, **overrides)
        return runs[name]

    return get


@pytest.fixture(scope="module")
def main(variant: Callable[[str], Run]) -> Run:
    return variant("main")


MAIN_SIZES = {"360p": (640, 360), "240p": (426, 240), "144p": (256, 144)}


# ----------------------------------------------------------------------------- 1. the ladder and the master playlist


def test_every_rung_decodes_at_its_planned_size(main: Run) -> None:
    planned = {r.name: (r.width, r.height) for r in main.result.ladder.rungs}
    assert planned == MAIN_SIZES
    for name, size in MAIN_SIZES.items():
        frames = decoded_video(str(main.out / name / "index.m3u8"))
        assert len(frames) == 150  # 5 s at 30 fps
        assert {(f.width, f.height) for f in frames} == {size}
        assert {f.format.name for f in frames} == {"yuv420p"}


def test_rendition_count(main: Run) -> None:
    master = main.master()
    assert [r.kind for r in main.result.renditions].count("video") == 3
    assert [r.kind for r in main.result.renditions].count("audio") == 1
    assert len(master.playlists) == 3
    assert len(master.iframe_playlists) == 3
    assert [(m.type, m.group_id, m.uri) for m in master.media] == [("AUDIO", "audio", "audio/index.m3u8")]
    assert sorted(p.name for p in main.out.iterdir() if p.is_dir()) == ["144p", "240p", "360p", "audio", "storyboard"]


def _peak_and_average(run_: Run, rendition: str) -> tuple[float, float]:
    """(RFC 8216 peak, average) in bit/s of one rendition, from its files and its playlist."""
    playlist = run_.playlist(f"{rendition}/index.m3u8")
    sizes = [(run_.out / rendition / s.uri).stat().st_size for s in playlist.segments]
    durations = [float(s.duration) for s in playlist.segments]
    peak = rfc_peak_bps(sizes, durations, int(playlist.target_duration))
    return peak, sum(sizes) * 8 / sum(durations)


def test_master_bandwidths_are_the_measured_peak_and_average(main: Run) -> None:
    master = main.master()
    bandwidths = [p.stream_info.bandwidth for p in master.playlists]
    assert bandwidths == sorted(bandwidths)
    assert [p.uri for p in master.playlists] == ["144p/index.m3u8", "240p/index.m3u8", "360p/index.m3u8"]
    audio_peak, audio_average = _peak_and_average(main, "audio")
    for variant_ in master.playlists:
        info = variant_.stream_info
        assert info.audio == "audio"
        video_peak, video_average = _peak_and_average(main, variant_.uri.split("/")[0])
        peak, average = video_peak + audio_peak, video_average + audio_average
        assert info.bandwidth >= peak
        assert info.bandwidth <= peak * 1.1  # Apple's validator: within 10% of the real peak
        assert info.average_bandwidth == pytest.approx(average, rel=0.1)
        assert info.average_bandwidth <= info.bandwidth


def test_master_codecs_resolution_and_frame_rate_match_the_streams(main: Run) -> None:
    rungs = {r.name: r for r in main.result.ladder.rungs}
    for variant_ in main.master().playlists:
        name = variant_.uri.split("/")[0]
        info = variant_.stream_info
        first_segment = main.segment_paths(name)[0].read_bytes()
        packets = ts_packets(first_segment, "video")
        sps_tag = avc_codecs_tag(first_segment)
        assert avc_codecs_tag(packets[0].data) == sps_tag
        video_codecs = [c for c in info.codecs.split(",") if c.startswith("avc1.")]
        assert video_codecs == [sps_tag]
        assert "mp4a.40.2" in info.codecs.split(",")
        # The SPS level is the planned one (level_idc = 10 x level).
        assert int(sps_tag[-2:], 16) == round(float(rungs[name].level) * 10)
        assert info.resolution == MAIN_SIZES[name]
        frames = decoded_video(io.BytesIO(first_segment), "mpegts")
        assert (frames[0].width, frames[0].height) == MAIN_SIZES[name]
        assert info.frame_rate == 30.0
        deltas = pts_deltas(frames)
        assert deltas == {TS_CLOCK // 30}
    for iframe in main.master().iframe_playlists:
        name = iframe.uri.split("/")[0]
        assert iframe.iframe_stream_info.codecs == avc_codecs_tag(main.segment_paths(name)[0].read_bytes())
        assert iframe.iframe_stream_info.resolution == MAIN_SIZES[name]


def _check_uris(run_: Run) -> None:
    master = run_.master()
    referenced = [p.uri for p in master.playlists] + [p.uri for p in master.iframe_playlists]
    referenced += [m.uri for m in master.media if m.uri]
    for uri in referenced:
        assert is_relative(uri), uri
        assert (run_.out / uri).is_file(), uri
        media = run_.playlist(uri)
        base = (run_.out / uri).parent
        for segment in media.segments:
            assert is_relative(segment.uri), segment.uri
            assert (base / segment.uri).is_file(), segment.uri
        for section in media.segment_map or []:
            assert is_relative(section.uri), section.uri
            assert (base / section.uri).is_file(), section.uri


def test_every_uri_is_relative_and_exists(main: Run) -> None:
    _check_uris(main)


def test_iframe_playlists_slice_exactly_one_keyframe_each(main: Run) -> None:
    master = main.master()
    assert sorted(p.uri for p in master.iframe_playlists) == [f"{n}/iframes.m3u8" for n in ("144p", "240p", "360p")]
    for entry in master.iframe_playlists:
        playlist = main.playlist(entry.uri)
        assert playlist.is_i_frames_only
        assert playlist.version >= 4
        name = entry.uri.split("/")[0]
        # One entry per keyframe: GOP 1 s over 5 s.
        assert len(playlist.segments) == 5
        assert sum(float(s.duration) for s in playlist.segments) == pytest.approx(5.0, abs=1e-3)
        peak = 0.0
        for segment in playlist.segments:
            assert math.floor(float(segment.duration) + 0.5) <= playlist.target_duration
            length, offset = (int(x) for x in segment.byterange.split("@"))
            data = (main.out / name / segment.uri).read_bytes()
            assert offset + length <= len(data)
            frames = decoded_video(io.BytesIO(data[offset : offset + length]), "mpegts")
            assert len(frames) == 1
            assert frames[0].key_frame
            assert (frames[0].width, frames[0].height) == MAIN_SIZES[name]
            peak = max(peak, length * 8 / float(segment.duration))
        assert entry.iframe_stream_info.bandwidth >= peak


# ----------------------------------------------------------------------------- 2. keyframes and alignment


def test_segments_start_with_a_keyframe_at_the_same_time_in_every_rung(main: Run) -> None:
    starts: dict[str, list[float]] = {}
    for name in MAIN_SIZES:
        starts[name] = []
        for path in main.segment_paths(name):
            data = path.read_bytes()
            packets = ts_packets(data, "video")
            assert packets[0].keyframe, path
            frames = decoded_video(io.BytesIO(data), "mpegts")
            assert frames[0].key_frame, path
            starts[name].append(min(p.pts_s for p in packets))
    counts = {len(s) for s in starts.values()}
    assert counts == {3}  # 2 s + 2 s + 1 s
    reference = starts["360p"]
    for name, times in starts.items():
        assert times == pytest.approx(reference, abs=0.001), name
    extinfs = {tuple(main.extinfs(name)) for name in MAIN_SIZES}
    assert extinfs == {(2.0, 2.0, 1.0)}
    # Each segment starts where the previous one ends.
    assert np.diff(reference) == pytest.approx([2.0, 2.0], abs=0.001)


@pytest.mark.parametrize("name", ["late_audio", "rotated", "interlaced", "60fps", "vfr", "mixed_fps"])
def test_every_segment_starts_with_a_keyframe(variant: Callable[[str], Run], name: str) -> None:
    run_ = variant(name)
    for rung in run_.videos:
        for path in run_.segment_paths(rung.name):
            data = path.read_bytes()
            assert ts_packets(data, "video")[0].keyframe, path
            assert decoded_video(io.BytesIO(data), "mpegts")[0].key_frame, path


# ----------------------------------------------------------------------------- 3. durations


@pytest.mark.parametrize("name", ["main", "late_audio", "odd", "interlaced", "60fps", "vfr", "sar", "5.1", "short"])
def test_durations_match_the_source(variant: Callable[[str], Run], name: str) -> None:
    run_ = variant(name)
    source_s = source_video_duration_s(run_.source)
    for rung in run_.videos:
        assert rung.fps is not None
        total = sum(run_.extinfs(rung.name))
        assert abs(total - source_s) <= 1 / float(rung.fps) + 1e-6, (rung.name, total, source_s)
    audio_total = sum(run_.extinfs("audio"))
    assert audio_total == pytest.approx(source_s, abs=0.1)


# ----------------------------------------------------------------------------- 4. A/V sync


@pytest.mark.parametrize("name", ["main", "late_audio"])
def test_audio_and_video_start_together(variant: Callable[[str], Run], name: str) -> None:
    run_ = variant(name)
    audio_start = run_.first_pts_s("audio", "audio")
    for rung in run_.videos:
        assert abs(run_.first_pts_s(rung.name, "video") - audio_start) < 0.1, rung.name


def test_late_audio_is_preceded_by_silence(variant: Callable[[str], Run]) -> None:
    run_ = variant("late_audio")
    video_start = run_.first_pts_s(run_.videos[0].name, "video")
    audio = run_.audio_samples()
    assert (audio.channels, audio.rate) == (2, 48000)
    assert rms(audio.window(0.0, 0.45, video_start)) < 1e-3
    assert rms(audio.window(0.55, 1.9, video_start)) > 0.1  # the source tone has an RMS of ~0.18


def test_audio_onset_matches_the_source_to_5_ms(variant: Callable[[str], Run]) -> None:
    run_ = variant("late_audio")
    # In the source, as FFmpeg decodes it: where the tone starts, from the first video frame.
    with av.open(str(run_.source)) as container:
        video_t0 = float(next(container.decode(video=0)).time or 0.0)
    with av.open(str(run_.source)) as container:
        frames = list(container.decode(audio=0))
    source_samples = np.concatenate([f.to_ndarray() for f in frames], axis=1).astype(np.float64)
    source_onset = float(frames[0].time or 0.0) + onset_s(source_samples[0], frames[0].sample_rate) - video_t0
    # In the output: from the first video frame's PTS.
    audio = run_.audio_samples()
    video_start = run_.first_pts_s(run_.videos[0].name, "video")
    output_onset = audio.start_s + onset_s(audio.samples[0], audio.rate) - video_start
    assert output_onset == pytest.approx(source_onset, abs=0.005)


# ----------------------------------------------------------------------------- 5. portrait


@pytest.mark.parametrize("name", ["rotated", "portrait"])
def test_portrait_sources_give_portrait_rungs(variant: Callable[[str], Run], name: str) -> None:
    run_ = variant(name)
    expected = {"180p": (180, 320), "144p": (144, 256)}
    assert {r.name: (r.width, r.height) for r in run_.videos} == expected
    for rendition, size in expected.items():
        frames = decoded_video(str(run_.out / rendition / "index.m3u8"))
        assert {(f.width, f.height) for f in frames} == {size}
    resolutions = {p.uri.split("/")[0]: p.stream_info.resolution for p in run_.master().playlists}
    assert resolutions == expected


def test_rotation_turns_the_picture_clockwise(variant: Callable[[str], Run]) -> None:
    run_ = variant("rotated")
    with av.open(str(run_.source)) as container:
        coded = next(container.decode(video=0)).reformat(format="gray").to_ndarray().astype(np.float64)
    out = decoded_video(str(run_.out / "180p" / "index.m3u8"))[0].reformat(format="gray").to_ndarray()
    upright = np.rot90(coded, k=-1)  # clockwise
    assert upright.shape == out.shape
    assert float(np.abs(upright - out).mean()) < 5
    assert float(np.abs(np.rot90(coded, k=1) - out).mean()) > 20  # the wrong way round is far off


# ----------------------------------------------------------------------------- 6. awkward sources


def _video_stream_facts(run_: Run, rendition: str) -> tuple[list[av.VideoFrame], str | None]:
    data = run_.segment_paths(rendition)[0].read_bytes()
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        profile = container.streams.video[0].codec_context.profile
    return decoded_video(io.BytesIO(data), "mpegts"), profile


def test_odd_sized_source_gives_even_8_bit_420_rungs(variant: Callable[[str], Run]) -> None:
    run_ = variant("odd")
    assert {r.name: (r.width, r.height) for r in run_.videos} == {"180p": (320, 180), "144p": (256, 144)}
    for rung in run_.videos:
        frames, _profile = _video_stream_facts(run_, rung.name)
        assert (frames[0].width, frames[0].height) == (rung.width, rung.height)
        assert frames[0].width % 2 == 0 and frames[0].height % 2 == 0
        assert frames[0].format.name == "yuv420p"


def test_10_bit_source_gives_8_bit_high_profile(variant: Callable[[str], Run]) -> None:
    run_ = variant("10bit")
    with av.open(str(run_.source)) as container:
        assert next(container.decode(video=0)).format.name == "yuv420p10le"
    for rung in run_.videos:
        frames, profile = _video_stream_facts(run_, rung.name)
        assert frames[0].format.name == "yuv420p"
        assert max(c.bits for c in frames[0].format.components) == 8
        assert profile == "High"
        tag = avc_codecs_tag(run_.segment_paths(rung.name)[0].read_bytes())
        assert tag.startswith("avc1.64"), tag  # profile_idc 100 (High), not 110 (High 10)
        assert rung.codecs == tag


def test_interlaced_source_gives_progressive_output(variant: Callable[[str], Run]) -> None:
    run_ = variant("interlaced")
    with av.open(str(run_.source)) as container:
        assert next(container.decode(video=0)).interlaced_frame
    for rung in run_.videos:
        frames = decoded_video(str(run_.out / rung.name / "index.m3u8"))
        assert len(frames) == 60
        assert not any(f.interlaced_frame for f in frames)


def test_60_fps_source_is_capped_at_30_below_720p(variant: Callable[[str], Run]) -> None:
    run_ = variant("60fps")
    source_s = source_video_duration_s(run_.source)
    assert all(r.fps == 30 for r in run_.videos)
    assert {p.stream_info.frame_rate for p in run_.master().playlists} == {30.0}
    for rung in run_.videos:
        frames = decoded_video(str(run_.out / rung.name / "index.m3u8"))
        assert abs(len(frames) - 30 * source_s) <= 1
        assert pts_deltas(frames) == {TS_CLOCK // 30}


def test_60_fps_source_gives_exactly_30_frames_per_second(variant: Callable[[str], Run]) -> None:
    run_ = variant("60fps")
    source_s = source_video_duration_s(run_.source)  # 2.0 s: 120 frames
    for rung in run_.videos:
        frames = decoded_video(str(run_.out / rung.name / "index.m3u8"))
        assert len(frames) == round(30 * source_s), rung.name
        assert run_.extinfs(rung.name) == [pytest.approx(source_s, abs=1e-3)], rung.name


def test_vfr_source_gives_constant_frame_rate(variant: Callable[[str], Run]) -> None:
    run_ = variant("vfr")
    assert run_.result.source.video.is_vfr
    source_s = source_video_duration_s(run_.source)
    for rung in run_.videos:
        assert rung.fps is not None
        frames = decoded_video(str(run_.out / rung.name / "index.m3u8"))
        deltas = pts_deltas(frames)
        # One frame duration each; 90 kHz ticks can only round a rate like 24.2 fps.
        assert max(deltas) - min(deltas) <= 1, deltas
        assert all(abs(d - TS_CLOCK / rung.fps) <= 1 for d in deltas), deltas
        assert len(frames) / float(rung.fps) == pytest.approx(source_s, abs=1 / float(rung.fps))


@pytest.mark.parametrize("name", ["5.1", "mono"])
def test_audio_is_stereo_48k(variant: Callable[[str], Run], name: str) -> None:
    run_ = variant(name)
    audio = run_.audio_samples()
    assert (audio.channels, audio.rate) == (2, 48000)
    left, right = audio.window(0.5, 1.5, audio.start_s)
    assert rms(left) > 0.05 and rms(right) > 0.05
    if name == "mono":
        # The 330 Hz tone in both channels: resampled from 44.1 kHz, not played at a wrong rate.
        assert np.allclose(left, right, atol=1e-4)
        assert tone_share(left, audio.rate, 330) > 0.95
    else:
        # tests.support.media tones: FL 330 Hz, FR 440, FC 550, BL 770, BR 880. The downmix keeps
        # the sides apart and puts the centre in both.
        assert tone_share(left, audio.rate, 330) > 0.3 and tone_share(right, audio.rate, 440) > 0.3
        assert tone_share(left, audio.rate, 440) < 1e-3 and tone_share(left, audio.rate, 880) < 1e-3
        assert tone_share(right, audio.rate, 330) < 1e-3 and tone_share(right, audio.rate, 770) < 1e-3
        assert tone_share(left, audio.rate, 550) > 0.1 and tone_share(right, audio.rate, 550) > 0.1
    master = run_.master()
    assert [m.channels for m in master.media] == ["2"]


def test_source_without_audio_has_no_audio_group(variant: Callable[[str], Run]) -> None:
    run_ = variant("no_audio")
    master = run_.master()
    assert len(master.media) == 0
    for variant_ in master.playlists:
        assert variant_.stream_info.audio is None
        codecs = variant_.stream_info.codecs.split(",")
        assert len(codecs) == 1 and codecs[0].startswith("avc1.")
    assert not (run_.out / "audio").exists()
    assert [r.kind for r in run_.result.renditions] == ["video", "video"]
    for rung in run_.videos:
        with av.open(io.BytesIO(run_.segment_paths(rung.name)[0].read_bytes()), mode="r", format="mpegts") as container:
            assert [s.type for s in container.streams] == ["video"]


def test_anamorphic_source_gets_a_square_pixel_display_size_ladder(variant: Callable[[str], Run]) -> None:
    run_ = variant("sar")
    assert {r.name: (r.width, r.height) for r in run_.videos} == MAIN_SIZES
    for rung in run_.videos:
        data = run_.segment_paths(rung.name)[0].read_bytes()
        with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
            sar = container.streams.video[0].codec_context.sample_aspect_ratio
            frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (rung.width, rung.height)
        assert sar in (None, Fraction(0), Fraction(1))  # square (or unspecified) pixels


# ----------------------------------------------------------------------------- 7. fMP4


def test_fmp4_output(variant: Callable[[str], Run]) -> None:
    run_ = variant("fmp4")
    _check_uris(run_)
    for name in ("180p", "144p", "audio"):
        playlist = run_.playlist(f"{name}/index.m3u8")
        assert playlist.version >= 6
        assert [s.uri for s in playlist.segment_map] == ["init.mp4"]
        init = run_.out / name / "init.mp4"
        kinds = [kind for kind, _offset, _size in mp4_top_level_boxes(init.read_bytes())]
        assert kinds[:2] == ["ftyp", "moov"]
        assert [s.duration for s in playlist.segments] == pytest.approx([2.0, 1.0], abs=0.03)
        for segment in playlist.segments:
            assert segment.uri.endswith(".m4s")
            kinds = [kind for kind, _offset, _size in mp4_top_level_boxes((run_.out / name / segment.uri).read_bytes())]
            assert "moof" in kinds and "mdat" in kinds
    for rung in run_.videos:
        frames = decoded_video(str(run_.out / rung.name / "index.m3u8"))
        assert len(frames) == 90
        assert frames[0].key_frame
        assert {(f.width, f.height) for f in frames} == {(rung.width, rung.height)}
        assert sum(f.key_frame for f in frames) == 3  # GOP 1 s
    with av.open(str(run_.out / "audio" / "index.m3u8")) as container:
        audio = list(container.decode(audio=0))
    assert sum(f.samples for f in audio) / 48000 == pytest.approx(3.0, abs=0.1)
    assert {f.sample_rate for f in audio} == {48000}


def test_fmp4_iframe_playlist_points_at_the_idr_starting_each_segment(variant: Callable[[str], Run]) -> None:
    # FFmpeg's hls muxer writes one fragment per segment and a byte range must
    # start at its moof, so fMP4 I-frame playlists list the IDR opening each
    # segment (TS ones list every GOP): each range, after the init segment,
    # decodes to exactly one keyframe, and durations add up to the rendition.
    run_ = variant("fmp4")
    for rung in run_.videos:
        media = run_.playlist(f"{rung.name}/index.m3u8")
        playlist = run_.playlist(f"{rung.name}/iframes.m3u8")
        assert len(playlist.segments) == len(media.segments), rung.name
        init = (run_.out / rung.name / "init.mp4").read_bytes()
        for entry, segment in zip(playlist.segments, media.segments, strict=True):
            assert entry.uri == segment.uri
            assert float(entry.duration) == pytest.approx(float(segment.duration), abs=0.002)
            length, offset = (int(x) for x in entry.byterange.split("@"))
            data = (run_.out / rung.name / entry.uri).read_bytes()
            assert data[offset + 4 : offset + 8] == b"moof"
            assert length < len(data) - offset  # the IDR only, not the whole fragment
            with av.open(io.BytesIO(init + data[offset : offset + length]), mode="r") as container:
                frames = list(container.decode(video=0))
            assert [f.key_frame for f in frames] == [True], (rung.name, entry.uri)


# ----------------------------------------------------------------------------- 8. a clip shorter than a segment


def test_half_second_clip(variant: Callable[[str], Run]) -> None:
    run_ = variant("short")
    master = run_.master()
    assert len(master.playlists) == 2
    uris = [p.uri for p in master.playlists] + [p.uri for p in master.iframe_playlists] + [m.uri for m in master.media]
    for uri in uris:
        playlist = run_.playlist(uri)
        assert playlist.target_duration >= 1
        for segment in playlist.segments:
            assert math.floor(float(segment.duration) + 0.5) <= playlist.target_duration, (uri, segment.duration)
    for rung in run_.videos:
        assert len(run_.extinfs(rung.name)) == 1
        frames = decoded_video(str(run_.out / rung.name / "index.m3u8"))
        assert len(frames) == 15 and frames[0].key_frame
    assert len(run_.extinfs("audio")) == 1


# ----------------------------------------------------------------------------- 9. poster


@pytest.mark.parametrize(("name", "size"), [("main", (640, 360)), ("rotated", (180, 320))])
def test_poster_is_a_real_picture(variant: Callable[[str], Run], name: str, size: tuple[int, int]) -> None:
    run_ = variant(name)
    assert run_.result.poster_uri == "poster.jpg"
    (frame,) = decoded_video(str(run_.out / "poster.jpg"))
    assert Fraction(frame.width, frame.height) == Fraction(*size)
    luma = frame.reformat(format="gray").to_ndarray().astype(np.float64)
    assert 16 < float(luma.mean()) < 240
    assert float(luma.std()) > 5


# ----------------------------------------------------------------------------- 10. progress and the result


def test_progress_reports(main: Run) -> None:
    reports = main.progress
    assert reports
    fractions = [p.fraction for p in reports]
    assert fractions == sorted(fractions)
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert reports[-1].phase == "done"
    assert reports[-1].fraction == 1.0
    phases = [p.phase for p in reports]
    assert phases[-2:] == ["publishing", "done"]
    assert set(phases[:-2]) <= {"transcoding"}
    assert all(p.total_s == pytest.approx(5.0, abs=0.05) for p in reports)


def _files_on_disk(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_result_describes_what_is_on_disk(main: Run) -> None:
    result = main.result
    assert result.master_uri == "master.m3u8"
    assert sorted(result.files) == sorted(_files_on_disk(main.out))
    assert len(set(result.files)) == len(result.files)
    assert result.wall_s > 0 and result.cpu_s > 0 and result.peak_rss_bytes > 0
    assert len(result.renditions) == 4
    for rendition in result.renditions:
        playlist = main.playlist(rendition.playlist_uri)
        assert rendition.segment_count == len(playlist.segments)
        sizes = [(main.out / rendition.name / s.uri).stat().st_size for s in playlist.segments]
        assert [s.size_bytes for s in rendition.segments] == sizes
        assert rendition.size_bytes == sum(sizes)
        assert [s.duration_s for s in rendition.segments] == pytest.approx(
            [float(s.duration) for s in playlist.segments]
        )
        assert rendition.peak_bps >= rendition.average_bps > 0
        peak, average = _peak_and_average(main, rendition.name)
        assert rendition.peak_bps == pytest.approx(peak, abs=1)
        assert rendition.average_bps == pytest.approx(average, abs=1)
    assert result.output_bytes == sum(r.size_bytes for r in result.renditions)


# ----------------------------------------------------------------------------- 11. failures publish nothing


class FailingSink:
    """A local directory that refuses the ``fail_at``-th object put into it."""

    def __init__(self, root: Path, fail_at: int) -> None:
        self.inner = LocalDirectory(root)
        self.fail_at = fail_at
        self.stored: list[str] = []
        self._count = 0
        self._lock = threading.Lock()

    def put(self, relpath: str, data: bytes) -> None:
        with self._lock:
            self._count += 1
            if self._count == self.fail_at:
                raise OutputError("disk full (test)", context={"path": relpath})
            self.stored.append(relpath)
        self.inner.put(relpath, data)

    def flush(self) -> None:
        self.inner.flush()

    def publish(self, relpath: str, data: bytes) -> None:
        self.inner.publish(relpath, data)

    def abort(self, keep: Collection[str] = ()) -> None:
        self.inner.abort(keep)

    def retract(self, relpath: str) -> None:
        self.inner.retract(relpath)

    def discard(self, relpaths: Sequence[str]) -> None:
        self.inner.discard(relpaths)

    def describe(self, relpath: str) -> str:
        return self.inner.describe(relpath)


def _leave_stale_output(out: Path) -> None:
    out.mkdir(parents=True)
    (out / "master.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n180p/index.m3u8\n")
    (out / "unrelated.txt").write_text("not written by the engine")


def test_a_failing_sink_leaves_no_master_and_removes_what_was_written(clip: ClipFactory, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _leave_stale_output(out)
    sink = FailingSink(out, fail_at=2)
    with pytest.raises(OutputError):
        transcoder.transcode(clip(seconds=2.0), sink, config=make_config())
    assert sink.stored  # something was written before the failure ...
    assert not any((out / relpath).exists() for relpath in sink.stored)  # ... and removed again
    assert _files_on_disk(out) == {"unrelated.txt"}  # the stale master is gone too
    assert [p for p in out.iterdir() if p.is_dir()] == []


def _cancel_run(source: Path, out: Path, *, preset_event: bool) -> None:
    cancel = threading.Event()
    if preset_event:
        cancel.set()

    def progress(_report: Progress) -> None:
        cancel.set()

    transcoder.transcode(source, out, config=make_config(), progress=progress, cancel=cancel)


@pytest.mark.parametrize("preset_event", [True, False], ids=["set-before", "set-from-progress"])
def test_cancel_publishes_nothing(clip: ClipFactory, tmp_path: Path, preset_event: bool) -> None:
    out = tmp_path / "out"
    _leave_stale_output(out)
    with pytest.raises(CancelledError):
        _cancel_run(clip(seconds=2.0), out, preset_event=preset_event)
    assert _files_on_disk(out) == {"unrelated.txt"}


_RAISING_CALLBACK = """
import json, sys, threading
from pathlib import Path
import transcoder
from transcoder import EncoderSettings, LadderPolicy, RungSpec, TranscodeConfig

source, out = sys.argv[1], Path(sys.argv[2])
config = TranscodeConfig(
    ladder=LadderPolicy(rungs=(RungSpec(short_side=360, bitrate_kbps=800), RungSpec(short_side=144, bitrate_kbps=200))),
    encoder=EncoderSettings(preset="ultrafast"),
    segment_s=2.0,
    gop_s=1.0,
)

def progress(report):
    raise RuntimeError("the progress callback failed")

raised = None
try:
    transcoder.transcode(source, out, config=config, progress=progress)
except Exception as exc:
    raised = type(exc).__name__
stages = [t.name for t in threading.enumerate() if t.name in ("decoder", "audio") or t.name.startswith("rung-")]
# Wait for every other thread to end (bounded): with none left, nothing can write a file later.
for thread in threading.enumerate():
    if thread is not threading.main_thread():
        thread.join(timeout=10)
threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
print(json.dumps({"raised": raised, "stages_alive": stages, "threads_left": threads, "files": files}))
"""


def test_a_raising_progress_callback_stops_the_run_cleanly(clip: ClipFactory, tmp_path: Path) -> None:
    # In a child process: the failure mode is a crash of the whole interpreter.
    source = clip(**VARIANTS["main"][0])
    done = subprocess.run(
        [sys.executable, "-c", _RAISING_CALLBACK, str(source), str(tmp_path / "out")],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {"raised": "RuntimeError", "stages_alive": [], "threads_left": [], "files": []}


# ----------------------------------------------------------------------------- timestamps across frame rates


def test_rungs_at_different_frame_rates_share_segment_timestamps(variant: Callable[[str], Run]) -> None:
    run_ = variant("mixed_fps")
    assert sorted(float(r.fps or 0) for r in run_.videos) == [30.0, 60.0]
    starts = {}
    for rung in run_.videos:
        starts[rung.name] = [
            min(p.pts_s for p in ts_packets(path.read_bytes(), "video")) for path in run_.segment_paths(rung.name)[:2]
        ]
    first, *others = starts.values()
    for times in others:
        assert times == pytest.approx(first, abs=0.001), starts


# ----------------------------------------------------------------------------- x264 threading as encoded


def x264_settings(segment: bytes) -> dict[str, str]:
    """The settings x264 wrote into its SEI ("x264 - core ... - options: a=1 b=2 ...") in the first packet."""
    packet = ts_packets(segment, "video")[0].data
    start = packet.index(b"x264 - core")
    text = packet[start : packet.index(b"\x00", start)].decode("ascii", "replace")
    options = text.split(" - options: ", 1)[1]
    return dict(item.split("=", 1) for item in options.split() if "=" in item)


@pytest.mark.parametrize("budget", [1, 2, 8])
def test_x264_runs_the_planned_frame_threads(clip: ClipFactory, tmp_path: Path, budget: int) -> None:
    done = run(clip(seconds=1.0), tmp_path / "out", threads=budget)
    plan = plan_threads(done.result.ladder, CpuBudget(cores=budget, source="override"))
    for rendition in done.videos:
        settings = x264_settings(done.segment_paths(rendition.name)[0].read_bytes())
        assert settings["threads"] == str(plan.encoder_threads[rendition.name]), rendition.name
        assert settings["sliced_threads"] == "0", rendition.name


@dataclass(frozen=True, slots=True)
class PutSeen:
    relpath: str
    own: str  # the OS name of the thread that stored the object
    every: tuple[tuple[str, int], ...]  # (OS name, niceness) of every thread of the process at that moment


class ThreadNameSink(FailingSink):
    """A local directory that notes which OS threads were there when each object was stored."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fail_at=0)  # the count starts at 1: never fails
        self.seen: list[PutSeen] = []

    def put(self, relpath: str, data: bytes) -> None:
        every = []
        for stat in Path("/proc/self/task").glob("*/stat"):
            with contextlib.suppress(OSError):  # a thread that exited meanwhile
                text = stat.read_text()
                name, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
                every.append((name, int(fields[16])))  # field 19 of proc(5): nice
        own = Path("/proc/thread-self/comm").read_text().strip()
        self.seen.append(PutSeen(relpath, own, tuple(every)))
        super().put(relpath, data)


@pytest.mark.skipif(sys.platform != "linux", reason="reads thread names and priorities from /proc")
def test_rung_threads_and_their_x264_threads_carry_its_name_and_priority(clip: ClipFactory, tmp_path: Path) -> None:
    sink = ThreadNameSink(tmp_path / "out")
    result = transcoder.transcode(clip(seconds=3.0, width=640, height=360), sink, config=make_config(threads=2))
    plan = plan_threads(result.ladder, CpuBudget(cores=2, source="override"))
    # Three rungs on two cores fill the budget: the largest runs first, the others at low priority.
    assert plan.encoder_nice == {"360p": 0, "240p": BACKGROUND_NICE, "144p": BACKGROUND_NICE}
    for name in MAIN_SIZES:
        segments = [s for s in sink.seen if s.relpath.startswith(f"{name}/") and s.relpath.endswith(".ts")]
        assert len(segments) >= 2, name
        # Segments are stored by their rung's thread, named in the OS ...
        assert {s.own for s in segments} == {f"rung-{name}"}
        # ... and x264's frame threads, started by it, took its name and its priority.
        threads = max(([nice for thread, nice in s.every if thread == f"rung-{name}"] for s in segments), key=len)
        assert len(threads) == 1 + plan.encoder_threads[name] == 1 + 3, name
        assert set(threads) == {plan.encoder_nice[name]}, name
    others = {nice for s in sink.seen for thread, nice in s.every if not thread.startswith("rung-")}
    assert others == {0}  # the decoder, audio and the caller keep normal priority


def frames_before_first_packet(options: dict[str, str], threads: int) -> int:
    context = av.CodecContext.create("libx264", "w")
    assert isinstance(context, av.VideoCodecContext)
    context.width, context.height, context.pix_fmt = 320, 180, "yuv420p"
    context.time_base = Fraction(1, 30)
    context.framerate = Fraction(30)
    context.thread_type = "FRAME"
    context.thread_count = threads
    context.options = options
    picture = av.VideoFrame(320, 180, "yuv420p")
    for index in range(200):
        picture.pts = index
        if context.encode(picture):
            return index
    raise AssertionError("no packet after 200 frames")


def test_lookahead_thread_follows_the_budget(main: Run) -> None:
    ladder = main.result.ladder
    rung_ = ladder.rungs[0]
    # 3 rungs: below one core per rung x264's own lookahead thread adds nothing but delay and memory.
    assert plan_threads(ladder, CpuBudget(cores=2, source="override")).x264_lookahead_thread is False
    assert plan_threads(ladder, CpuBudget(cores=8, source="override")).x264_lookahead_thread is True

    def delay(threaded: bool) -> int:
        options = codec_options(rung_, gop_frames=30, preset="veryfast", crf=23, lookahead_thread=threaded)
        return frames_before_first_packet(options, threads=3)

    # x264 holds sync-lookahead (bframes + 1 = 4 at veryfast) more frames when its lookahead has a thread.
    assert delay(True) - delay(False) == 4
