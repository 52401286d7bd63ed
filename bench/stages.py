"""T_limit: what the ladder's work costs on one thread, stage by stage.

On a few cores the ladder is CPU-bound, so no implementation beats
``T_limit = (decode + every scale + every encode + audio) / cores``, each piece timed on ONE
thread. :func:`measure_stages` does one pass over the source on the calling thread: decode with
``thread_count=1`` (and the engine's filters before scaling); per rung ``VideoReformatter``
bicubic (``threads=1``) and libx264 with the engine's options and ``threads=1`` (no lookahead
thread: it all runs on the caller), fed with the same frame-rate rule as :mod:`bench.quality`;
audio decode + resample + AAC. Each call is timed with the thread CPU clock, so other processes
do not count; decode is the pass's thread CPU minus everything timed. No frame is kept.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

from .quality import filter_graph, filtered, source_index
from .variants import Plan, Rung

__all__ = ["Stages", "available_cores", "decode_frames", "encode_frames", "measure_stages", "scale_frames"]


def available_cores() -> int:
    return len(os.sched_getaffinity(0))


@dataclass(frozen=True, slots=True, kw_only=True)
class Stages:
    """CPU seconds of each piece on one thread, for the whole source (extrapolated from ``measured_s``)."""

    frames: int
    measured_s: float
    cores: int
    decode_cpu_s: float
    audio_cpu_s: float
    scale_cpu_s: dict[str, float]
    encode_cpu_s: dict[str, float]

    @property
    def total_cpu_s(self) -> float:
        return self.decode_cpu_s + self.audio_cpu_s + sum(self.scale_cpu_s.values()) + sum(self.encode_cpu_s.values())

    @property
    def t_limit_s(self) -> float:
        return self.total_cpu_s / self.cores


def new_encoder(rung: Rung, threads: int = 1) -> Any:
    """A libx264 context with the engine's options for ``rung`` (opened on the first frame)."""
    cc = av.CodecContext.create("libx264", "w")
    cc.width, cc.height, cc.pix_fmt = rung.width, rung.height, "yuv420p"
    cc.time_base, cc.framerate = 1 / rung.fps, rung.fps
    cc.bit_rate = rung.bitrate_kbps * 1000
    cc.thread_type, cc.thread_count = "FRAME", threads
    cc.options = dict(rung.x264)
    return cc


class _Timed:
    """Scale + encode of one rung, each call timed with the thread CPU clock."""

    def __init__(self, rung: Rung) -> None:
        self.rung, self.encoder, self.scaler = rung, new_encoder(rung), VideoReformatter()
        self.scale_s = self.encode_s = 0.0
        self.next_slot = 0

    def encode(self, frame: av.VideoFrame | None) -> None:
        if frame is not None:
            frame.pts, frame.time_base = self.next_slot, 1 / self.rung.fps
            gop_start = self.next_slot % self.rung.gop_frames == 0
            frame.pict_type = PictureType.I if gop_start else PictureType.NONE
            self.next_slot += 1
        t0 = time.thread_time()
        self.encoder.encode(frame)
        self.encode_s += time.thread_time() - t0

    def push(self, frame: av.VideoFrame, index: int, source_fps: Fraction) -> None:
        scaled = None
        while source_index(self.next_slot, source_fps, self.rung.fps) == index:
            if scaled is None:
                t0 = time.thread_time()
                scaled = scale_frames([frame], self.rung, self.scaler)[0]
                self.scale_s += time.thread_time() - t0
            self.encode(scaled)


def measure_stages(plan: Plan, *, cores: int | None = None, max_seconds: float | None = None) -> Stages:
    """Decode, every rung's scale and encode, and audio, on one thread (``max_seconds``: extrapolate)."""
    rungs = [_Timed(r) for r in plan.rungs]
    audio_s, frames, limit = 0.0, 0, round((max_seconds or plan.duration_s + 1) * plan.fps)
    thread0 = time.thread_time()
    with av.open(str(plan.source)) as container:
        video = container.streams.video[0]
        video.codec_context.thread_count = 1
        streams: list[Any] = [video]
        if plan.audio and container.streams.audio:
            streams.append(container.streams.audio[0])
            streams[1].codec_context.thread_count = 1
            resampler = av.AudioResampler(
                format="fltp", layout="stereo", rate=plan.audio["sample_rate"], frame_size=1024
            )
            aac = av.CodecContext.create("aac", "w")
            aac.sample_rate, aac.layout, aac.format = plan.audio["sample_rate"], "stereo", "fltp"
            aac.bit_rate, aac.time_base = plan.audio["bitrate_kbps"] * 1000, Fraction(1, plan.audio["sample_rate"])

        def decoded() -> Iterable[av.VideoFrame]:
            nonlocal audio_s
            for packet in container.demux(*streams):
                if packet.stream is video:
                    yield from packet.decode()
                    continue
                t0 = time.thread_time()
                for aframe in packet.decode():
                    aframe.pts = None
                    for out in resampler.resample(aframe):
                        aac.encode(out)
                audio_s += time.thread_time() - t0

        for frame in filtered(iter(decoded()), filter_graph(video, plan.filters, threads=1)):
            if frames >= limit:
                break
            for work in rungs:
                work.push(frame, frames, plan.fps)
            frames += 1
    for work in rungs:
        work.encode(None)
    timed = sum(w.scale_s + w.encode_s for w in rungs) + audio_s
    measured_s = min(plan.duration_s, frames / float(plan.fps))
    x = plan.duration_s / measured_s if measured_s else 1.0
    return Stages(
        frames=frames,
        measured_s=measured_s,
        cores=cores or available_cores(),
        decode_cpu_s=x * max(0.0, time.thread_time() - thread0 - timed),
        audio_cpu_s=x * audio_s,
        scale_cpu_s={w.rung.name: x * w.scale_s for w in rungs},
        encode_cpu_s={w.rung.name: x * w.encode_s for w in rungs},
    )


# --- what the pytest-benchmark benches time (bench/test_bench_stages.py) ---------------------


def decode_frames(source: Path, *, threads: int = 1, keep: bool = True) -> list[av.VideoFrame]:
    """Every video frame, decoded with ``thread_count=threads`` (kept only when ``keep``)."""
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        return [f for f in container.decode(stream) if keep]


def scale_frames(
    frames: Iterable[av.VideoFrame], rung: Rung, scaler: VideoReformatter | None = None
) -> list[av.VideoFrame]:
    """``frames`` bicubic-scaled to the rung with one reused reformatter on one thread (as they are at its size)."""
    scaler = scaler or VideoReformatter()
    return [
        f
        if (f.width, f.height, f.format.name) == (rung.width, rung.height, "yuv420p")
        else scaler.reformat(
            f, width=rung.width, height=rung.height, format="yuv420p", interpolation=Interpolation.BICUBIC, threads=1
        )
        for f in frames
    ]


def encode_frames(frames: Iterable[av.VideoFrame], rung: Rung, *, threads: int = 1) -> int:
    """Encode scaled ``frames`` with the engine's options; the bytes produced."""
    encoder, size = new_encoder(rung, threads), 0
    for slot, frame in enumerate([*frames, None]):
        if frame is not None:
            frame.pts, frame.time_base = slot, 1 / rung.fps
            frame.pict_type = PictureType.I if slot % rung.gop_frames == 0 else PictureType.NONE
        size += sum(p.size for p in encoder.encode(frame))
    return size
