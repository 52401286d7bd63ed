"""Where the output ends, and where audio segments start (issue 14, items 5 and 8).

* Audio that outlasts the video (the camera stopped, the microphone went on)
  is kept whole: every rung holds its last frame until the audio ends.
* Video that outlasts the audio gets silence to its end.
* The audio rendition is cut where the video is: the same number of segments,
  each audio segment starting within one AAC frame of the video's.

Sources come from :func:`tests.support.media_audio.make_av_clip`; outputs are read
back with PyAV and the ``m3u8`` package, not with the engine's own results.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import m3u8
import numpy as np
import numpy.typing as npt
import pytest

import transcoder
from tests.support.media import make_clip
from tests.support.media_audio import make_av_clip
from transcoder import (
    CancelledError,
    EncoderSettings,
    LadderPolicy,
    LocalDirectory,
    Progress,
    RungSpec,
    SourceInfo,
    TranscodeConfig,
    TranscodeResult,
)
from transcoder.encode import RungEncoder, rung_segment_s, segments_until
from transcoder.hold import encode_still_gop
from transcoder.ladder import plan_ladder
from transcoder.probe import probe
from transcoder.segmenter import HlsSegmenter

pytestmark = pytest.mark.slow

AAC_FRAME_S = 1024 / 48000
FPS = 30
LADDER = LadderPolicy(
    rungs=(RungSpec(short_side=180, bitrate_kbps=400), RungSpec(short_side=144, bitrate_kbps=200)),
    low_rung_below_short_side=100,
    min_rung_saving=0.0,  # the held half is still: pruning would drop the 144p rung
)
Samples = npt.NDArray[np.float64]


def make_config(**overrides: Any) -> TranscodeConfig:
    settings: dict[str, Any] = {"ladder": LADDER, "encoder": EncoderSettings(preset="ultrafast")}
    settings.update(overrides)  # segments of 4 s, GOPs of 2 s: the defaults
    return TranscodeConfig(**settings)


# ----------------------------------------------------------------------------- reading the output


@dataclasses.dataclass(frozen=True, slots=True)
class Output:
    source: Path
    out: Path
    segment_format: str
    result: TranscodeResult
    progress: tuple[Progress, ...]

    @property
    def rungs(self) -> list[str]:
        return [r.name for r in self.result.renditions if r.kind == "video"]

    def playlist(self, rendition: str) -> Any:
        return m3u8.load(str(self.out / rendition / "index.m3u8"))

    def extinfs(self, rendition: str) -> list[float]:
        return [float(s.duration) for s in self.playlist(rendition).segments]

    def segment_bytes(self, rendition: str) -> list[bytes]:
        """Each segment, playable on its own (fMP4 ones with the init segment in front)."""
        init = (self.out / rendition / "init.mp4").read_bytes() if self.segment_format == "fmp4" else b""
        return [init + (self.out / rendition / s.uri).read_bytes() for s in self.playlist(rendition).segments]

    def whole(self, rendition: str) -> io.BytesIO:
        """The rendition as one stream: its segments (after the init segment) end to end."""
        parts = [(self.out / rendition / s.uri).read_bytes() for s in self.playlist(rendition).segments]
        init = (self.out / rendition / "init.mp4").read_bytes() if self.segment_format == "fmp4" else b""
        return io.BytesIO(init + b"".join(parts))

    def first_pts_s(self, rendition: str) -> list[float]:
        """The earliest presentation time in each segment of ``rendition``, in seconds."""
        firsts = []
        for data in self.segment_bytes(rendition):
            with av.open(io.BytesIO(data), mode="r") as container:
                stream = container.streams[0]
                times = [float(p.pts * p.time_base) for p in container.demux(stream) if p.size and p.pts is not None]
            firsts.append(min(times))
        return firsts

    def audio(self) -> tuple[float, Samples]:
        """Decoded audio: the time of its first sample and the samples (channels x n)."""
        with av.open(self.whole("audio"), mode="r") as container:
            frames = list(container.decode(audio=0))
        assert frames[0].pts is not None and frames[0].time_base is not None
        assert {f.sample_rate for f in frames} == {48000}
        start = float(frames[0].pts * frames[0].time_base)
        return start, np.concatenate([f.to_ndarray() for f in frames], axis=1).astype(np.float64)

    def video_frames(self, rendition: str) -> list[av.VideoFrame]:
        with av.open(self.whole(rendition), mode="r") as container:
            return list(container.decode(video=0))

    def video_start_s(self) -> float:
        return self.first_pts_s(self.rungs[0])[0]


def rms(samples: Samples) -> float:
    return float(np.sqrt(np.mean(samples**2)))


def window(start_s: float, samples: Samples, begin_s: float, end_s: float, origin_s: float) -> Samples:
    first = round((origin_s + begin_s - start_s) * 48000)
    last = round((origin_s + end_s - start_s) * 48000)
    assert 0 <= first < last <= samples.shape[1], (first, last, samples.shape)
    return samples[:, first:last]


def luma(frame: av.VideoFrame) -> npt.NDArray[np.float64]:
    return frame.to_ndarray(format="gray").astype(np.float64)


def transcode(source: Path, out: Path, **overrides: Any) -> Output:
    progress: list[Progress] = []
    config = make_config(**overrides)
    result = transcoder.transcode(source, out, config=config, progress=progress.append)
    return Output(source, out, config.segment_format, result, tuple(progress))


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Output]:
    """``output(video_s, audio_s, segment_format)``: that transcode, run once per module."""
    root = tmp_path_factory.mktemp("timeline")
    runs: dict[tuple[float, float, str], Output] = {}

    def get(video_s: float, audio_s: float, segment_format: str = "ts") -> Output:
        key = (video_s, audio_s, segment_format)
        if key not in runs:
            name = f"v{video_s}_a{audio_s}_{segment_format}"
            source = make_av_clip(root / f"{name}.mp4", video_s=video_s, audio_s=audio_s)
            runs[key] = transcode(source, root / name, segment_format=segment_format)
        return runs[key]

    return get


# ----------------------------------------------------------------------------- 5. audio that outlasts the video


@pytest.mark.parametrize("segment_format", ["ts", "fmp4"])
def test_audio_that_outlasts_the_video_is_kept_whole(output: Callable[..., Output], segment_format: str) -> None:
    run = output(3.0, 6.0, segment_format)
    video_start = run.video_start_s()
    start, samples = run.audio()
    # The tone (RMS ~0.18) plays to the end of the source's 6 s ...
    assert rms(window(start, samples, 5.5, 5.95, video_start)) > 0.1
    loud = np.flatnonzero(np.abs(samples[0]) > 0.01)
    tone_end = start + (loud[-1] + 1) / 48000 - video_start
    assert tone_end == pytest.approx(6.0, abs=AAC_FRAME_S)
    # ... and the playlist says so.
    assert sum(run.extinfs("audio")) == pytest.approx(6.0, abs=AAC_FRAME_S)


def test_every_rung_holds_its_last_frame_until_the_audio_ends(output: Callable[..., Output]) -> None:
    run = output(3.0, 6.0)
    assert len(run.rungs) == 2
    for rung in run.rungs:
        assert sum(run.extinfs(rung)) == pytest.approx(6.0, abs=1 / FPS), rung
        frames = run.video_frames(rung)
        assert len(frames) == 6 * FPS, rung
        pts = [f.pts for f in frames]
        assert None not in pts and len(set(pts)) == len(pts)
    # The 180p rung is the source's own size: its held frames are the
    # source's last frame, and not some other one (the picture moves).
    with av.open(str(run.source)) as container:
        last_source = luma(list(container.decode(video=0))[-1])
    frames = run.video_frames("180p")
    held = [luma(f) for f in frames[3 * FPS - 1 :]]
    for picture in held:
        assert np.abs(picture - last_source).mean() < 3.0
    assert np.abs(luma(frames[FPS]) - last_source).mean() > 10.0


def test_progress_reaches_the_end_while_holding(output: Callable[..., Output]) -> None:
    run = output(3.0, 6.0)
    transcoding = [p.fraction for p in run.progress if p.phase == "transcoding"]
    assert transcoding == sorted(transcoding)
    # Before the hold the rungs stopped at 3 of 6 s: the bar sat at 50%.
    assert transcoding[-1] >= 0.99
    assert run.progress[-1].phase == "done" and run.progress[-1].fraction == 1.0


@pytest.mark.parametrize("segment_format", ["ts", "fmp4"])
def test_video_that_outlasts_the_audio_gets_silence(output: Callable[..., Output], segment_format: str) -> None:
    run = output(6.0, 3.0, segment_format)
    video_start = run.video_start_s()
    start, samples = run.audio()
    assert rms(window(start, samples, 0.5, 2.9, video_start)) > 0.1
    assert rms(window(start, samples, 3.1, 5.95, video_start)) < 1e-3
    assert start + samples.shape[1] / 48000 - video_start >= 6.0
    assert sum(run.extinfs("audio")) == pytest.approx(6.0, abs=AAC_FRAME_S)
    assert len(run.extinfs("audio")) == len(run.extinfs(run.rungs[0])) == 2


def test_audio_is_kept_only_to_the_probed_duration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A file that understates its length (here: a probe result cut to 3 s)
    # cannot make the rungs hold their last frame past what the duration
    # limit was checked on: audio past it (plus one second) is dropped.
    def understated(source: Any, **kwargs: Any) -> SourceInfo:
        return dataclasses.replace(probe(source, **kwargs), duration_s=3.0)

    monkeypatch.setattr("transcoder.run.probe", understated)
    source = make_av_clip(tmp_path / "src.mp4", video_s=2.0, audio_s=6.0)
    run = transcode(source, tmp_path / "out")
    assert run.result.source.duration_s == 3.0
    assert sum(run.extinfs("audio")) == pytest.approx(4.0, abs=2 * AAC_FRAME_S)
    for rung in run.rungs:
        assert sum(run.extinfs(rung)) == pytest.approx(4.0, abs=2 * AAC_FRAME_S), rung


def test_a_long_hold_stops_when_cancelled(tmp_path: Path) -> None:
    source = make_av_clip(tmp_path / "src.mp4", video_s=0.5, audio_s=0.5)
    info = transcoder.probe(source)
    config = make_config()
    ladder = plan_ladder(info, config.ladder, gop_s=config.gop_s, segment_s=config.segment_s)
    rung = ladder.rungs[0]
    segmenter = HlsSegmenter(
        name=rung.name, sink=LocalDirectory(tmp_path / "out"), segment_s=rung_segment_s(ladder, rung)
    )
    encoder = RungEncoder(
        rung, ladder, segmenter=segmenter, preset="ultrafast", crf=23, threads=1, interpolation="bicubic"
    )
    with av.open(str(source)) as container:
        encoder.push(next(container.decode(video=0)), Fraction(0))
    cancel = threading.Event()
    cancel.set()
    try:
        with pytest.raises(CancelledError):
            encoder.finish(Fraction(3600), cancel=cancel)  # an hour's hold, were it not cancelled
        assert encoder.frames_out == 0
    finally:
        segmenter.abandon()


# ----------------------------------------------------------------------------- 8. audio segments line up


# 4 s: the audio runs half a frame past the boundary at 4 s, where the video
# ends; the muxer cuts a sliver there that must be folded back. 10 s: the
# boundary at 8 s is a whole number of AAC frames (375), where a frame starts
# exactly on it and must open the next segment, not close the previous one.
@pytest.mark.parametrize("seconds", [8.0, 6.0, 7.5, 4.0, 10.0])
@pytest.mark.parametrize("segment_format", ["ts", "fmp4"])
def test_audio_segments_line_up_with_the_video(
    output: Callable[..., Output], seconds: float, segment_format: str
) -> None:
    run = output(seconds, seconds, segment_format)
    audio = run.extinfs("audio")
    audio_starts = run.first_pts_s("audio")
    for rung in run.rungs:
        video = run.extinfs(rung)
        video_starts = run.first_pts_s(rung)
        assert len(audio) == len(video), (rung, audio, video)
        # Playlist timelines: each boundary within one AAC frame, at or before
        # the video's (the audio segment opens with the frame covering it).
        boundaries = zip(itertools.accumulate(audio[:-1]), itertools.accumulate(video[:-1]), strict=True)
        for a, v in boundaries:
            assert -AAC_FRAME_S + 1e-5 < a - v <= 1e-5, (rung, audio, video)
        # Real timestamps. The first audio packet is the encoder's priming, one
        # frame before the video; fMP4 places each track with an edit list in
        # milliseconds, which shifts the whole track by that rounding.
        shift = audio_starts[0] + AAC_FRAME_S - video_starts[0]
        assert abs(shift) <= (1e-3 if segment_format == "fmp4" else 1e-6), (rung, audio_starts, video_starts)
        for a_start, v_start in zip(audio_starts[1:], video_starts[1:], strict=True):
            assert -AAC_FRAME_S + 1e-6 < a_start - v_start - shift <= 1e-6, (rung, audio_starts, video_starts)
    # The last audio segment absorbs the remainder: no sliver after it.
    assert audio[-1] > 1.0
    assert sum(audio) == pytest.approx(seconds, abs=2 * AAC_FRAME_S)


@pytest.mark.parametrize(
    ("end_s", "fps", "segment_s", "segments"),
    [
        (Fraction(8), Fraction(30), 4.0, 2),
        (Fraction(8) + Fraction(1, 60), Fraction(30), 4.0, 2),  # rounds to 240 frames
        (Fraction(8) + Fraction(2, 60), Fraction(30), 4.0, 3),  # 241 frames: a 1-frame segment
        (Fraction(7, 2), Fraction(30), 4.0, 1),
        (Fraction(0), Fraction(30), 4.0, 1),  # an output has at least one frame
        (Fraction(12), Fraction(30000, 1001), 4.004, 3),
        (Fraction(12), Fraction(60), 4.0, 3),
    ],
)
def test_segments_until(end_s: Fraction, fps: Fraction, segment_s: float, segments: int) -> None:
    assert segments_until(end_s, fps, segment_s) == segments


# ----------------------------------------------------------------------------- A/V start at 29.97 fps


def test_audio_starts_with_the_video_at_ntsc_rates(tmp_path: Path) -> None:
    # The timeline origin is a whole number of frames: 30 frames (1.001 s) at
    # 29.97 fps. Audio placed at 1 s would start 1 ms early; at the 29 frames
    # a truncated offset gave (0.968 s), video started 32 ms before the audio.
    source = make_clip(tmp_path / "ntsc.mp4", fps=Fraction(30000, 1001), seconds=2.0)
    run = transcode(source, tmp_path / "out")
    audio_first = run.first_pts_s("audio")[0]
    for rung in run.rungs:
        # The first audio packet is the encoder's priming, one AAC frame early.
        assert audio_first + AAC_FRAME_S == pytest.approx(run.first_pts_s(rung)[0], abs=1e-4), rung


def test_matroska_audio_outlasting_the_video_is_not_a_truncation(tmp_path: Path) -> None:
    # Matroska declares no per-stream duration: the container's (the audio's
    # 6 s) is all the probe has, and 3 s of video is not a file cut short.
    source = make_av_clip(tmp_path / "src.mkv", video_s=3.0, audio_s=6.0, container="matroska")
    assert transcoder.probe(source).video.duration_s is None
    run = transcode(source, tmp_path / "out")
    assert sum(run.extinfs("audio")) == pytest.approx(6.0, abs=AAC_FRAME_S)
    for rung in run.rungs:
        assert sum(run.extinfs(rung)) == pytest.approx(6.0, abs=1 / FPS), rung


def test_poster_is_taken_from_the_video_not_from_the_held_tail(tmp_path: Path) -> None:
    # 0.5 s of video under 6 s of audio: candidates along the container's 6 s
    # (the first at 0.6 s) would all lie past the last frame, leaving only the
    # first frame, which the picker never wants.
    source = make_av_clip(tmp_path / "src.mp4", video_s=0.5, audio_s=6.0)
    run = transcode(source, tmp_path / "out")
    assert run.result.poster_uri is not None
    with av.open(str(run.out / run.result.poster_uri), mode="r") as container:
        poster = luma(next(container.decode(video=0)))
    with av.open(str(source), mode="r") as container:
        sources = [luma(f) for f in container.decode(video=0)]
    assert poster.shape == sources[0].shape
    nearest = min(range(len(sources)), key=lambda i: float(np.abs(sources[i] - poster).mean()))
    assert nearest > 0


@pytest.mark.parametrize("segment_format", ["ts", "fmp4"])
def test_a_long_hold_is_spliced_from_still_gops(tmp_path: Path, segment_format: str) -> None:
    # 1 s of video under 20 s of audio: 570 held slots, far more than the few
    # GOPs below which the hold is encoded frame by frame. The default preset
    # (B-frames, so a decode delay the copies must keep) and 2 s GOPs.
    source = make_av_clip(tmp_path / "src.mp4", video_s=1.0, audio_s=20.0)
    run = transcode(source, tmp_path / "out", segment_format=segment_format, encoder=EncoderSettings())
    with av.open(str(source), mode="r") as container:
        last_source = luma(list(container.decode(video=0))[-1])
    gop = 2 * FPS
    for rung in run.rungs:
        assert len(run.extinfs(rung)) == len(run.extinfs("audio")) == 5, rung
        with av.open(run.whole(rung), mode="r") as container:
            stream = container.streams.video[0]
            assert stream.time_base is not None
            # (pts, dts, keyframe) in seconds, read while the demuxer is open
            packets = [
                (float(p.pts * stream.time_base), float(p.dts * stream.time_base), p.is_keyframe)
                for p in container.demux(stream)
                if p.size and p.pts is not None and p.dts is not None
            ]
        assert len(packets) == 20 * FPS
        assert all(b[1] > a[1] for a, b in itertools.pairwise(packets))  # decoding order holds
        first = min(pts for pts, _, _ in packets)
        keyframes = sorted(round((pts - first) * FPS) for pts, _, key in packets if key)
        assert keyframes == list(range(0, 20 * FPS, gop)), rung
        frames = run.video_frames(rung)
        assert len(frames) == 20 * FPS
        if rung == "180p":  # the source's own size: compare with its last frame
            for frame in frames[FPS - 1 :: 7]:
                assert np.abs(luma(frame) - last_source).mean() < 3.0
        # Every still GOP carries the SEI x264 writes at an encoder's first
        # frame: more than one means the hold was spliced, not re-encoded.
        data = b"".join((run.out / rung / s.uri).read_bytes() for s in run.playlist(rung).segments)
        assert data.count(b"x264 - core") > 1, rung


def test_a_still_gop_that_does_not_match_is_not_spliced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Parameter sets that differ from the rung's (other colour tags, another
    # level): the copies would not decode as the rung's stream, so the rung
    # encodes every held frame itself.
    real = encode_still_gop

    def foreign(*args: Any, **kwargs: Any) -> Any:
        still = real(*args, **kwargs)
        return dataclasses.replace(still, parameter_sets=b"\x67other") if still is not None else None

    monkeypatch.setattr("transcoder.encode.encode_still_gop", foreign)
    source = make_av_clip(tmp_path / "src.mp4", video_s=1.0, audio_s=12.0)
    run = transcode(source, tmp_path / "out")
    for rung in run.rungs:
        assert len(run.video_frames(rung)) == 12 * FPS
        data = b"".join((run.out / rung / s.uri).read_bytes() for s in run.playlist(rung).segments)
        assert data.count(b"x264 - core") == 1, rung
