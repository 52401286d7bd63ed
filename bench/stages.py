"""T_limit: what the ladder's work costs on one thread, stage by stage.

The ladder is CPU-bound on a few cores, so the floor of any implementation is

    T_limit = (decode + every rung's scale + every rung's encode + audio) / cores

in CPU seconds of each piece of work done on ONE thread (no threading
overhead, no waiting). :func:`measure_stages` measures the pieces in one pass
over the source, all on the calling thread:

* decode: demux + video decode with ``thread_count=1`` (plus the deinterlace or
  rotation filters the engine would apply);
* scale, per rung: ``VideoReformatter`` bicubic to yuv420p, ``threads=1`` (the
  engine's scaler; a rung of the source's own size costs nothing);
* encode, per rung: libx264 with the engine's exact options and
  ``threads=1`` (so x264 has no lookahead thread and runs on the caller), fed
  the scaled frames with the engine's frame-rate conversion (``CfrSlots``);
  packets are counted, not muxed;
* audio: decode + resample to stereo 48 kHz + AAC, once.

Each call is timed with the thread CPU clock (``time.thread_time``), so every
piece is measured as if alone: one thread, nothing of ours running beside
it, and preemption by other processes does not count. Decode is the pass's
thread CPU minus everything timed explicitly. Frames are never cached (a
minute of 1080p is 5.6 GB): each decoded frame is scaled and encoded at once
and dropped.

The small helpers at the end (:func:`decode_frames`, :func:`scale_frames`,
:func:`encode_frames`) are what the pytest-benchmark benches time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.filter
from av.audio.codeccontext import AudioCodecContext
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType
from av.video.reformatter import Interpolation, VideoReformatter

from transcoder.encode import CfrSlots

from .ffmpeg_cli import LadderSettings, RungPlan

__all__ = [
    "StageCosts",
    "available_cores",
    "decode_frames",
    "encode_frames",
    "measure_stages",
    "new_encoder",
    "scale_frames",
]

_PIX_FMT = "yuv420p"


def available_cores() -> int:
    """The cores this process may use (its affinity mask)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageCosts:
    """CPU seconds of each piece of the ladder's work on one thread.

    ``media_s`` is how much of the source was measured; when it is less than
    ``source_s`` (``max_seconds``) the totals are extrapolated linearly.
    """

    frames: int
    media_s: float
    source_s: float
    cores: int
    decode_cpu_s: float
    audio_cpu_s: float
    scale_cpu_s: dict[str, float]
    encode_cpu_s: dict[str, float]
    encoded_bytes: dict[str, int] = field(default_factory=dict)
    pass_wall_s: float = 0.0
    pass_process_cpu_s: float = 0.0  # all threads of this process during the pass
    pass_thread_cpu_s: float = 0.0  # the measuring thread alone

    @property
    def extrapolation(self) -> float:
        return self.source_s / self.media_s if self.media_s > 0 else 1.0

    @property
    def measured_cpu_s(self) -> float:
        """decode + scales + encodes + audio, over what was measured."""
        return self.decode_cpu_s + self.audio_cpu_s + sum(self.scale_cpu_s.values()) + sum(self.encode_cpu_s.values())

    @property
    def total_cpu_s(self) -> float:
        """decode + scales + encodes + audio for the whole source."""
        return self.measured_cpu_s * self.extrapolation

    @property
    def t_limit_s(self) -> float:
        return self.total_cpu_s / self.cores

    def per_frame_ms(self, cpu_s: float) -> float:
        return 1000 * cpu_s / self.frames if self.frames else 0.0

    def as_dict(self) -> dict[str, Any]:
        x = self.extrapolation
        return {
            "method": "one pass, one thread; thread CPU clock around each call; decode = the rest",
            "frames_measured": self.frames,
            "media_s_measured": round(self.media_s, 3),
            "source_s": round(self.source_s, 3),
            "extrapolation": round(x, 4),
            "cores": self.cores,
            "decode_cpu_s": round(self.decode_cpu_s * x, 3),
            "audio_cpu_s": round(self.audio_cpu_s * x, 3),
            "scale_cpu_s": {k: round(v * x, 3) for k, v in self.scale_cpu_s.items()},
            "encode_cpu_s": {k: round(v * x, 3) for k, v in self.encode_cpu_s.items()},
            "encoded_bytes_threads1": dict(self.encoded_bytes),
            "per_source_frame_ms": {
                "decode": round(self.per_frame_ms(self.decode_cpu_s), 3),
                "scales": round(self.per_frame_ms(sum(self.scale_cpu_s.values())), 3),
                "encodes": round(self.per_frame_ms(sum(self.encode_cpu_s.values())), 3),
                "audio": round(self.per_frame_ms(self.audio_cpu_s), 3),
            },
            "total_cpu_s": round(self.total_cpu_s, 3),
            "t_limit_s": round(self.t_limit_s, 3),
            "pass_wall_s": round(self.pass_wall_s, 3),
            "pass_process_cpu_s": round(self.pass_process_cpu_s, 3),
            "pass_thread_cpu_s": round(self.pass_thread_cpu_s, 3),
        }


def new_encoder(rung: RungPlan, *, threads: int = 1) -> VideoCodecContext:
    """A libx264 context with the engine's options for ``rung`` (not yet open)."""
    cc = av.CodecContext.create("libx264", "w")
    cc.width = rung.width
    cc.height = rung.height
    cc.pix_fmt = _PIX_FMT
    cc.time_base = Fraction(1) / rung.fps
    cc.framerate = rung.fps
    cc.bit_rate = rung.bitrate_kbps * 1000
    cc.thread_type = "FRAME"
    cc.thread_count = threads
    cc.options = dict(rung.x264)
    return cc


def _needs_scale(frame: av.VideoFrame, rung: RungPlan) -> bool:
    return (frame.width, frame.height, frame.format.name) != (rung.width, rung.height, _PIX_FMT)


class _RungWork:
    """Scale + encode of one rung, timed; the same frame-rate logic as the engine."""

    def __init__(self, rung: RungPlan) -> None:
        self.rung = rung
        self.slots = CfrSlots(rung.fps)
        self.reformatter = VideoReformatter()
        self.encoder = new_encoder(rung, threads=1)
        self.pending: av.VideoFrame | None = None
        self.frames_out = 0
        self.bytes_out = 0
        self.scale_s = 0.0
        self.encode_s = 0.0
        self._time_base = Fraction(1) / rung.fps

    def push(self, frame: av.VideoFrame, time_s: Fraction) -> None:
        if self.pending is not None:
            self._emit(self.pending, self.slots.slots_before(time_s))
        self.pending = frame

    def finish(self, end_s: Fraction) -> None:
        if self.pending is not None:
            self._emit(self.pending, self.slots.slots_until_end(end_s))
            self.pending = None
        t0 = time.thread_time()
        packets = self.encoder.encode(None)
        self.encode_s += time.thread_time() - t0
        self.bytes_out += sum(p.size for p in packets)

    def _emit(self, source: av.VideoFrame, repeat: int) -> None:
        if repeat <= 0:
            return
        frame = source
        if _needs_scale(source, self.rung):
            t0 = time.thread_time()
            frame = self.reformatter.reformat(
                source,
                width=self.rung.width,
                height=self.rung.height,
                format=_PIX_FMT,
                interpolation=Interpolation.BICUBIC,
                threads=1,
            )
            self.scale_s += time.thread_time() - t0
        for _ in range(repeat):
            slot = self.frames_out
            frame.pts = slot
            frame.time_base = self._time_base
            frame.pict_type = PictureType.I if slot % self.rung.gop_frames == 0 else PictureType.NONE
            t0 = time.thread_time()
            packets = self.encoder.encode(frame)
            self.encode_s += time.thread_time() - t0
            self.bytes_out += sum(p.size for p in packets)
            self.frames_out += 1


class _AudioWork:
    """Resample to the plan's format and encode AAC, timed; decode is timed by the caller."""

    def __init__(self, bitrate_kbps: int, sample_rate: int) -> None:
        self.rate = sample_rate
        self.resampler = av.AudioResampler(format="fltp", layout="stereo", rate=sample_rate, frame_size=1024)
        cc: AudioCodecContext = av.CodecContext.create("aac", "w")
        cc.sample_rate = sample_rate
        cc.layout = "stereo"
        cc.format = "fltp"
        cc.bit_rate = bitrate_kbps * 1000
        cc.time_base = Fraction(1, sample_rate)
        cc.thread_count = 1
        self.encoder = cc
        self.samples = 0
        self.cpu_s = 0.0

    def push(self, frame: av.AudioFrame | None) -> None:
        t0 = time.thread_time()
        if frame is not None:
            frame.pts = None
        for out in self.resampler.resample(frame):
            out.pts = self.samples
            out.time_base = Fraction(1, self.rate)
            self.samples += out.samples
            self.encoder.encode(out)
        if frame is None:
            self.encoder.encode(None)
        self.cpu_s += time.thread_time() - t0


def pre_filter_graph(stream: Any, filters: tuple[str, ...], *, threads: int | None = None) -> av.filter.Graph | None:
    """A configured ``buffer -> filters... -> buffersink`` graph for ``stream``; None without filters."""
    if not filters:
        return None
    graph = av.filter.Graph()
    if threads is not None:
        graph.threads = threads
    node = graph.add_buffer(template=stream)
    for spec in filters:
        name, _, args = spec.partition("=")
        nxt = graph.add(name, args or None)
        node.link_to(nxt)
        node = nxt
    sink = graph.add("buffersink")
    node.link_to(sink)
    graph.configure()
    return graph


def _pull_all(graph: av.filter.Graph) -> list[av.VideoFrame]:
    out: list[av.VideoFrame] = []
    while True:
        try:
            out.append(graph.vpull())
        except (av.BlockingIOError, av.EOFError):
            return out


def measure_stages(
    settings: LadderSettings,
    *,
    cores: int | None = None,
    max_seconds: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> StageCosts:
    """Measure decode, every rung's scale and encode, and audio, on one thread.

    ``max_seconds`` stops after that much of the source and extrapolates the
    totals by duration (cheaper, less exact). ``progress`` gets the fraction
    of the source done, now and then.
    """
    cores = cores or available_cores()
    info = settings.info
    works = [_RungWork(rung) for rung in settings.rungs]
    audio = (
        _AudioWork(settings.audio.bitrate_kbps, settings.audio.sample_rate)
        if settings.audio is not None and info.audio is not None
        else None
    )
    frame_s = Fraction(1) / Fraction(info.video.fps) if info.video.fps else Fraction(1, 25)
    origin: Fraction | None = None
    last = Fraction(0)
    frames = 0
    limit = Fraction(max_seconds).limit_denominator(1000) if max_seconds else None
    wall0, proc0, thread0 = time.monotonic(), time.process_time(), time.thread_time()
    next_report = 0.1

    def deliver(frame: av.VideoFrame) -> bool:
        nonlocal origin, last, frames
        if frame.pts is not None and frame.time_base is not None:
            t = Fraction(frame.pts) * Fraction(frame.time_base)
        else:
            t = (origin or Fraction(0)) + last + frame_s
        if origin is None:
            origin = t
        rel = max(t - origin, last + frame_s / 1000 if frames else Fraction(0))
        if limit is not None and rel >= limit:
            return False
        last = rel
        frames += 1
        for work in works:
            work.push(frame, rel)
        return True

    with av.open(str(settings.source)) as container:
        vstream = container.streams[info.video.index]
        vstream.codec_context.thread_count = 1
        streams: list[Any] = [vstream]
        astream = None
        if audio is not None and info.audio is not None:
            astream = container.streams[info.audio.index]
            astream.codec_context.thread_count = 1
            streams.append(astream)
        graph = pre_filter_graph(vstream, settings.pre_filters, threads=1)
        going = True
        for packet in container.demux(*streams):
            if packet.stream is vstream:
                for frame in packet.decode():
                    assert isinstance(frame, av.VideoFrame)
                    if graph is not None:
                        graph.vpush(frame)
                        ready = _pull_all(graph)
                    else:
                        ready = [frame]
                    for out in ready:
                        going = going and deliver(out)
                if not going:
                    break
            elif audio is not None:
                t0 = time.thread_time()
                decoded = packet.decode()
                audio.cpu_s += time.thread_time() - t0
                for aframe in decoded:
                    assert isinstance(aframe, av.AudioFrame)
                    audio.push(aframe)
            if progress is not None and info.duration_s > 0 and float(last) / info.duration_s >= next_report:
                progress(float(last) / info.duration_s)
                next_report += 0.1
        else:
            # The whole source: flush the decoder (and the filters) too.
            if graph is not None:
                graph.vpush(None)
                for out in _pull_all(graph):
                    deliver(out)
    end_s = last + frame_s
    for work in works:
        work.finish(end_s)
    if audio is not None:
        audio.push(None)
    thread_cpu = time.thread_time() - thread0
    process_cpu = time.process_time() - proc0
    wall = time.monotonic() - wall0
    timed = sum(w.scale_s + w.encode_s for w in works) + (audio.cpu_s if audio else 0.0)
    media_s = float(end_s) if limit is not None else max(float(end_s), info.duration_s)
    return StageCosts(
        frames=frames,
        media_s=media_s,
        source_s=max(info.duration_s, float(end_s)),
        cores=cores,
        decode_cpu_s=max(0.0, thread_cpu - timed),
        audio_cpu_s=audio.cpu_s if audio else 0.0,
        scale_cpu_s={w.rung.name: w.scale_s for w in works},
        encode_cpu_s={w.rung.name: w.encode_s for w in works},
        encoded_bytes={w.rung.name: w.bytes_out for w in works},
        pass_wall_s=wall,
        pass_process_cpu_s=process_cpu,
        pass_thread_cpu_s=thread_cpu,
    )


# --- helpers for the pytest-benchmark benches ---------------------------------


def decode_frames(
    source: Path, *, threads: int = 1, limit: int | None = None, keep: bool = True
) -> list[av.VideoFrame]:
    """Decode the first video stream (``thread_count=threads``), up to ``limit`` frames.

    Returns the frames when ``keep`` (mind the memory: 3 MB per 1080p frame),
    else an empty list (decode cost only).
    """
    frames: list[av.VideoFrame] = []
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = threads
        if threads > 1:
            stream.codec_context.thread_type = "AUTO"
        for count, frame in enumerate(container.decode(stream), start=1):
            if keep:
                frames.append(frame)
            if limit is not None and count >= limit:
                break
    return frames


def scale_frames(frames: Iterable[av.VideoFrame], rung: RungPlan) -> list[av.VideoFrame]:
    """Bicubic-scale ``frames`` to ``rung``'s size with one reused reformatter, one thread."""
    reformatter = VideoReformatter()
    return [
        reformatter.reformat(
            f, width=rung.width, height=rung.height, format=_PIX_FMT, interpolation=Interpolation.BICUBIC, threads=1
        )
        for f in frames
    ]


def encode_frames(frames: Iterable[av.VideoFrame], rung: RungPlan, *, threads: int = 1) -> int:
    """Encode already-scaled ``frames`` with the engine's x264 options; returns the bytes produced."""
    encoder = new_encoder(rung, threads=threads)
    time_base = Fraction(1) / rung.fps
    size = 0
    for slot, frame in enumerate(frames):
        frame.pts = slot
        frame.time_base = time_base
        frame.pict_type = PictureType.I if slot % rung.gop_frames == 0 else PictureType.NONE
        size += sum(p.size for p in encoder.encode(frame))
    size += sum(p.size for p in encoder.encode(None))
    return size
