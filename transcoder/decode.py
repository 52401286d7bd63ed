"""The decoder: demuxes the source once and decodes video and audio once.

One :class:`Decoder` owns the input container, both decoders and the optional
filter graph (deinterlacing, turning rotated video upright). It hands every
video frame, with its time on the output timeline, to ``on_video`` and every
audio frame to ``on_audio``; both callbacks may block (bounded queues), which
is how the slowest rung paces the decode. The output timeline starts at the
first video frame: audio times are measured from that same origin. It ends
where the longer stream ends (:attr:`Decoder.end_s`): a camera that stopped
before the microphone leaves audio the video must cover by holding its last
frame.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.container
import av.filter

from .colour import colour_of
from .errors import CancelledError, InputError
from .models import SourceInfo
from .probe import Source, open_input
from .tonemap import cube_file, tone_map_filters

VideoSink = Callable[[av.VideoFrame, Fraction], None]
AudioSink = Callable[[av.AudioFrame, Fraction], None]

# Isolated broken packets are common in phone recordings and decoders conceal
# them; a file that keeps failing is broken, not damaged.
_MAX_DECODE_ERRORS = 25
# A file whose frames stop this much before its declared end was cut short.
# Dropped leading B-frames and rounding explain a few frames or a fraction of
# a second, never more. (Frames an edit list hides are not expected at all:
# the declared duration is the edited one, and ``VideoInfo.shown_frames``
# leaves them out of the count.)
_TRUNCATION_TOLERANCE_S = 1.0
_TRUNCATION_TOLERANCE = 0.005
_MISSING_FRAMES_TOLERANCE = 3
# Audio is kept to this far past the probed (container) duration, which the
# duration limit was checked on: audio beyond it is dropped, so a file that
# understates its length cannot make the video hold its last frame for hours.
_AUDIO_OVERRUN_S = Fraction(1)
# Audio streams routinely end a little after the last frame (AAC padding, the
# muxer's interleaving): that much is kept as audio but does not make the video
# hold its last frame (which would add a sliver of a segment to every rung).
_HOLD_MIN_S = Fraction(1, 4)


@dataclass(frozen=True, slots=True)
class DecodeSpan:
    """Part of the video to decode, in output time: from the keyframe before ``start_s`` to ``stop_s``.

    ``origin`` is the source time of the whole file's first video frame (what
    a full decode measures output time from): :func:`first_frame_time`.
    Delivery ends with the first frame at or past ``stop_s``.
    """

    origin: Fraction
    start_s: Fraction
    stop_s: Fraction


@dataclass(frozen=True, slots=True)
class VideoSkip:
    """Video the main process of a chunked run leaves to the workers: not decoded, only demuxed past.

    Video packets are dropped until the first keyframe at or after ``until_s``
    (output time; ``origin`` as in :class:`DecodeSpan`). Audio is decoded
    throughout. Only when nothing in this process needs those frames: the
    workers tap their own chunks for the viewer outputs (:mod:`transcoder.viewer`).
    """

    origin: Fraction
    until_s: Fraction


class _First(Exception):
    pass


def first_frame_time(source: Source, info: SourceInfo, *, threads: int = 1) -> Fraction:
    """The source time of the first video frame a full decode delivers (the output timeline's origin)."""

    def first(frame: av.VideoFrame, _time: Fraction) -> None:
        raise _First  # the origin is set: stop here

    decoder = Decoder(source, info, threads=threads, on_video=first, on_audio=None, cancel=threading.Event())
    with contextlib.suppress(_First):
        decoder.run()
    if decoder.origin is None:
        raise InputError("input has no decodable video frame")
    return decoder.origin


class Decoder:
    """Demuxes and decodes ``source``; one owner thread runs :meth:`run`."""

    def __init__(
        self,
        source: Source,
        info: SourceInfo,
        *,
        threads: int,
        on_video: VideoSink,
        on_audio: AudioSink | None,
        cancel: threading.Event,
        span: DecodeSpan | None = None,
        skip: VideoSkip | None = None,
    ) -> None:
        """``span``: decode only part of the video (a chunk, :mod:`transcoder.chunks`); no audio then.

        ``skip``: do not decode the video before a point (:class:`VideoSkip`).
        """
        self.source = source
        self.span = span
        self.skip = skip
        self.info = info
        self.threads = threads
        self.on_video = on_video
        self.on_audio = on_audio
        self.cancel = cancel
        self.origin: Fraction | None = None  # source time of the first video frame
        self.video_end_s = Fraction(0)  # output time where the last video frame ends
        self.audio_end_s = Fraction(0)  # output time where the last delivered audio frame ends
        self.decoded_s = 0.0
        self.frames_decoded = 0
        self._errors = 0
        self._last_video_s: Fraction | None = None
        self._frame_duration = 1 / info.video.fps if info.video.fps > 0 else Fraction(1, 25)
        self._pending_audio: list[tuple[av.AudioFrame, Fraction]] = []
        self._audio_limit_s = Fraction(info.duration_s) + _AUDIO_OVERRUN_S
        if span is not None:
            self.origin = span.origin
        if skip is not None:
            self.origin = skip.origin
        self._skipping = skip is not None

    @property
    def end_s(self) -> Fraction:
        """Output time where the video ends: the end of the longer stream.

        Read after :meth:`run` returned. Audio that outlasts the video by more
        than ``_HOLD_MIN_S`` extends the timeline (the video holds its last
        frame); by less, the video ends with its last frame and the audio
        rendition keeps the rest. Audio counts only up to the probed duration
        (plus ``_AUDIO_OVERRUN_S``), see :meth:`_deliver_audio`.
        """
        if self.span is not None:
            # A chunk ends at its boundary; a video that ran out before it
            # (the probe overstated it) is held there, as audio past the end is.
            return self.span.stop_s
        if self.audio_end_s - self.video_end_s > _HOLD_MIN_S:
            return self.audio_end_s
        return self.video_end_s

    def run(self) -> None:
        with open_input(self.source) as container:
            vstream = container.streams[self.info.video.index]
            vcc = vstream.codec_context
            # "AUTO" picks frame threading where the codec has it: PyAV's
            # default (SLICE) leaves ordinary uploads on one thread.
            vcc.thread_type = "AUTO"
            vcc.thread_count = self.threads
            streams: list[Any] = [vstream]
            astream = None
            if self.on_audio is not None and self.info.audio is not None:
                astream = container.streams[self.info.audio.index]
                streams.append(astream)
            graph = _filter_graph(vstream, self.info, threads=self.threads)
            if self.span is not None:
                self._seek(container, vstream)
            try:
                for packet in container.demux(*streams):
                    if self.cancel.is_set():
                        raise CancelledError("decoding cancelled")
                    if packet.stream is vstream:
                        if self._skipping and self._skipped(packet, vstream):
                            continue
                        for frame in self._decode(packet):
                            self.frames_decoded += 1
                            self._video(frame, graph)
                        if self._stopped():
                            return
                    elif astream is not None:
                        for aframe in self._decode(packet):
                            self._audio(aframe)
            except av.FFmpegError as exc:
                raise InputError(
                    "input is corrupt", context={"at_s": round(self.decoded_s, 3), "error": exc.strerror}
                ) from exc
            for frame in self._flush_decoder(vstream):
                self.frames_decoded += 1
                self._video(frame, graph)
            if graph is not None:
                self._drain(graph, flush=True)
        if self.span is not None:
            return
        self._check_complete()

    def _seek(self, container: Any, vstream: Any) -> None:
        """Start at the keyframe at or before the span's start (the demuxer's index says where)."""
        assert self.span is not None and self.origin is not None
        if self.span.start_s <= 0 or vstream.time_base is None:
            return
        target = self.origin + self.span.start_s
        container.seek(int(target / Fraction(vstream.time_base)), stream=vstream, backward=True, any_frame=False)

    def _skipped(self, packet: av.Packet[Any], vstream: Any) -> bool:
        """Whether ``packet`` is dropped undecoded (see :class:`VideoSkip`); counted as a frame for the checks."""
        assert self.skip is not None and self.origin is not None
        pts, base = packet.pts, vstream.time_base
        at = Fraction(pts) * Fraction(base) - self.origin if pts is not None and base is not None else None
        if packet.is_keyframe and at is not None and at >= self.skip.until_s:
            self._skipping = False
            return False
        if packet.size:
            self.frames_decoded += 1
        return True

    def _stopped(self) -> bool:
        """A span's decode is done once a frame at or past its stop was delivered."""
        return self.span is not None and self._last_video_s is not None and self._last_video_s >= self.span.stop_s

    def _decode(self, packet: av.Packet[Any]) -> list[Any]:
        try:
            return list(packet.decode())
        except av.InvalidDataError:
            self._errors += 1
            if self._errors > _MAX_DECODE_ERRORS:
                raise
            return []

    def _flush_decoder(self, vstream: Any) -> list[av.VideoFrame]:
        # demux() ends with an empty packet per stream that flushes its
        # decoder; this only catches frames a decoder still holds otherwise.
        try:
            return list(vstream.codec_context.decode(None))
        except (av.EOFError, av.InvalidDataError):
            return []

    def _video(self, frame: av.VideoFrame, graph: _Graph | None) -> None:
        if graph is None:
            self._deliver(frame)
            return
        graph.push(frame)
        self._drain(graph, flush=False)

    def _drain(self, graph: _Graph, *, flush: bool) -> None:
        if flush:
            graph.push(None)
        while True:
            try:
                out = graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            self._deliver(out)

    def _deliver(self, frame: av.VideoFrame) -> None:
        if self._stopped():
            return  # frames the decoder or filters still held: past the span
        time = self._time_of(frame)
        if self.origin is None:
            self.origin = time
            self._release_audio()
        rel = time - self.origin
        if self._last_video_s is not None and rel <= self._last_video_s:
            # Broken or repeated timestamps: keep the order, never go back.
            rel = self._last_video_s + self._frame_duration / 1000
        self._last_video_s = rel
        self.video_end_s = rel + self._frame_duration
        self.decoded_s = float(rel)
        self.on_video(frame, rel)

    def _time_of(self, frame: av.VideoFrame) -> Fraction:
        if frame.pts is None or frame.time_base is None:
            if self._last_video_s is None or self.origin is None:
                return Fraction(0)
            return self.origin + self._last_video_s + self._frame_duration
        return Fraction(frame.pts) * Fraction(frame.time_base)

    def _audio(self, frame: av.AudioFrame) -> None:
        if self.on_audio is None or frame.pts is None or frame.time_base is None:
            return
        time = Fraction(frame.pts) * Fraction(frame.time_base)
        if self.origin is None:
            # Audio can come before the first video frame is decoded (frame
            # threads delay the video): hold it until the origin is known.
            self._pending_audio.append((frame, time))
            return
        self._deliver_audio(frame, time - self.origin)

    def _release_audio(self) -> None:
        pending, self._pending_audio = self._pending_audio, []
        assert self.origin is not None
        for frame, time in pending:
            self._deliver_audio(frame, time - self.origin)

    def _deliver_audio(self, frame: av.AudioFrame, rel: Fraction) -> None:
        if self.on_audio is None or rel >= self._audio_limit_s:
            return
        if frame.sample_rate > 0:
            self.audio_end_s = max(self.audio_end_s, rel + Fraction(frame.samples, frame.sample_rate))
        self.on_audio(frame, rel)

    def _check_complete(self) -> None:
        """Refuse a source whose frames stopped coming before its index or duration says.

        Frames an edit list hides are decoded (a trim may start mid-GOP) but
        never returned by the decoder, so they are left out of the count.
        """
        if self.origin is None:
            raise InputError("input has no decodable video frame")
        indexed = self.info.video.frame_count
        shown = self.info.video.shown_frames
        expected = shown if shown is not None else indexed
        missing = (expected or 0) - self.frames_decoded
        if expected and missing > max(_MISSING_FRAMES_TOLERANCE, expected * _TRUNCATION_TOLERANCE):
            raise InputError(
                "input is truncated",
                context={"indexed_frames": indexed, "shown_frames": expected, "decoded_frames": self.frames_decoded},
            )
        declared = self.info.video.duration_s or self.info.duration_s
        # Without a video duration (Matroska, MPEG-TS) the container's is the
        # longer stream's: audio that outlasts the video is not a truncation.
        decoded = float(self.video_end_s if self.info.video.duration_s else max(self.video_end_s, self.audio_end_s))
        if declared and declared - decoded > max(_TRUNCATION_TOLERANCE_S, declared * _TRUNCATION_TOLERANCE):
            raise InputError(
                "input is truncated", context={"declared_s": round(declared, 3), "decoded_s": round(decoded, 3)}
            )


class _Graph:
    """A linear FFmpeg filter graph (``buffer -> filters... -> buffersink``)."""

    def __init__(self, stream: Any, filters: list[tuple[str, str]], *, threads: int = 0) -> None:
        self.graph = av.filter.Graph()
        if threads:
            # The default (0) is one thread per host CPU, not the job's budget.
            self.graph.threads = threads
        node = self.graph.add_buffer(template=stream)
        for name, args in filters:
            nxt = self.graph.add(name, args)
            node.link_to(nxt)
            node = nxt
        sink = self.graph.add("buffersink")
        node.link_to(sink)
        self.graph.configure()

    def push(self, frame: av.VideoFrame | None) -> None:
        self.graph.push(frame)

    def pull(self) -> av.VideoFrame:
        frame = self.graph.pull()
        assert isinstance(frame, av.VideoFrame)
        return frame


def video_filters(info: SourceInfo) -> list[tuple[str, str]]:
    """The filters a source needs before scaling: deinterlace, then turn upright.

    Shown by ``transcode --plan``. Interlaced video is deinterlaced with
    ``bwdif`` at frame rate (one frame per frame, not per field).
    """
    filters: list[tuple[str, str]] = []
    if info.video.interlaced:
        filters.append(("bwdif", "mode=send_frame:parity=auto:deint=all"))
    rotation = info.video.rotation_deg
    if rotation == 90:
        filters.append(("transpose", "clock"))
    elif rotation == 180:
        filters.extend([("hflip", ""), ("vflip", "")])
    elif rotation == 270:
        filters.append(("transpose", "cclock"))
    return filters


def _filter_graph(stream: Any, info: SourceInfo, *, threads: int = 0) -> _Graph | None:
    filters = video_filters(info)
    colour = colour_of(info.video)
    if colour.tone_map == "none":
        return _Graph(stream, filters) if filters else None
    # HDR or BT.2020: the run's LUT after deinterlacing and rotation, once per
    # decoded frame, so every rung gets SDR BT.709 limited-range frames.
    # lut3d reads the file when it is added: it need not outlive the graph.
    # lut3d and scale run slice threads: the decoder's share of the budget,
    # not the graph's default of one per host CPU.
    with cube_file(colour) as path:
        return _Graph(stream, filters + tone_map_filters(colour, path), threads=threads)
