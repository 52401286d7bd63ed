"""The run's stage threads: the decoder, one per rung, the audio.

Each stage owns its FFmpeg objects and releases them in its own thread when
it ends, on every path (success, its own failure, another stage's failure,
a cancel): the decoder its input container, codec contexts and filter graph
(inside :meth:`~transcoder.decode.Decoder.run`); a rung its x264 context and
muxer (:meth:`~transcoder.encode.RungEncoder.close`); the audio stage its AAC
contexts, resampler and muxers. Stages meet only through bounded queues and
one :class:`Control`; the :class:`~transcoder.pipeline.Coordinator` builds,
starts and waits for them.
"""

from __future__ import annotations

import queue
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from .audio import AudioEncoder
from .colour import ScalerColour
from .config import TranscodeConfig
from .decode import Decoder, DecodeSpan, VideoSkip
from .encode import RungEncoder, frames_until, rung_segment_s, segments_until
from .errors import CancelledError
from .models import AudioPlan, Ladder, LoudnessResult, Rung, SourceInfo
from .output import OutputSink
from .probe import Source
from .segmenter import ClosedSegment, HlsSegmenter
from .still import RepeatDetector
from .threadplan import ThreadPlan
from .threads import lower_thread_priority, name_os_thread
from .viewer import FrameTap, PictureTap

_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class End:
    """The last item of a stage's queue: decoding is done; the timeline ends at ``end_s``."""

    end_s: Fraction


class Control:
    """The run's cancel flag and first error, shared by every stage. Thread-safe."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            # The first real failure wins; the CancelledErrors it causes in
            # the other stages are consequences, not news.
            if self._error is None or (isinstance(self._error, CancelledError) and not isinstance(exc, CancelledError)):
                self._error = exc
        self.cancel.set()

    def take_error(self) -> BaseException | None:
        """The first error, forgotten here (a raised error's traceback leads back to its holder)."""
        with self._lock:
            error, self._error = self._error, None
        return error

    def put(self, q: queue.Queue[Any], item: Any) -> None:
        while True:
            if self.cancel.is_set():
                raise CancelledError("stopped: another stage failed or the run was cancelled")
            try:
                q.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue[Any]) -> Any:
        while True:
            if self.cancel.is_set():
                raise CancelledError("stopped: another stage failed or the run was cancelled")
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue


class Stage(threading.Thread):
    """A named stage thread: runs :meth:`work`, hands its error to the coordinator, then closes.

    :meth:`close` runs in the stage's own thread when it was started (its
    FFmpeg objects have that one owner), else the coordinator calls it.
    """

    def __init__(self, name: str, control: Control, *, nice: int = 0) -> None:
        super().__init__(name=name, daemon=True)
        self.control = control
        self._nice = nice

    def run(self) -> None:
        name_os_thread(self.name)
        lower_thread_priority(self._nice)
        try:
            self.work()
        except BaseException as exc:
            _drop_locals(exc)
            self.control.failed(exc)
        finally:
            self.close()

    def work(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the stage owns; idempotent, never raises."""


class DecodeStage(Stage):
    """Demuxes and decodes the source once and hands every frame to the rung and audio queues.

    The :class:`Decoder` opens the input container, its decoders and filter
    graph inside :meth:`Decoder.run` and closes them when it returns or raises.

    ``taps`` (the poster's, the storyboard's: :mod:`transcoder.viewer`) are
    fed every frame in this thread (none is thread-safe): the coordinator
    reads them only after this stage has ended (``join``), as it does
    :attr:`end_s`.
    """

    def __init__(
        self,
        source: Source,
        info: SourceInfo,
        *,
        threads: int,
        rung_queues: list[queue.Queue[Any]],
        audio_queue: queue.Queue[Any] | None,
        reuse_still_frames: bool,
        control: Control,
        taps: Sequence[FrameTap] = (),
        span: DecodeSpan | None = None,
        skip: VideoSkip | None = None,
    ) -> None:
        super().__init__("decoder", control)
        self._rung_queues = rung_queues
        self._audio_queue = audio_queue
        self._taps = tuple(taps)
        self._repeats = RepeatDetector() if reuse_still_frames else None
        self._decoder = Decoder(
            source,
            info,
            threads=threads,
            on_video=self._on_video,
            on_audio=self._on_audio if audio_queue is not None else None,
            cancel=control.cancel,
            span=span,
            skip=skip,
        )

    @property
    def end_s(self) -> Fraction:
        """Where the timeline ends (the longer stream); final once the stage has ended."""
        return self._decoder.end_s

    def work(self) -> None:
        self._decoder.run()
        end = End(self._decoder.end_s)
        for q in self._rung_queues:
            self.control.put(q, end)
        if self._audio_queue is not None:
            self.control.put(self._audio_queue, end)

    def close(self) -> None:
        self._repeats = None  # holds the last decoded frame

    def _on_video(self, frame: av.VideoFrame, time_s: Fraction) -> None:
        # Runs in the decoder thread: the comparison costs ~0.13 ms on a
        # still 1080p frame, 15-30 us on one that changed (transcoder.still).
        same = self._repeats.same_as_previous(frame) if self._repeats is not None else False
        for q in self._rung_queues:
            self.control.put(q, (frame, time_s, same))
        # A poster candidate or a tile costs one downscale per candidate
        # point or interval (a few ms per run), cut from the decoded frame:
        # the sharpest picture there is.
        for tap in self._taps:
            tap.offer(frame, time_s)

    def _on_audio(self, frame: av.AudioFrame, time_s: Fraction) -> None:
        assert self._audio_queue is not None
        self.control.put(self._audio_queue, (frame, time_s))


class RungStage(Stage):
    """Scales, encodes and segments one rung (:class:`RungEncoder`) from its queue."""

    def __init__(
        self,
        rung: Rung,
        ladder: Ladder,
        *,
        config: TranscodeConfig,
        sink: OutputSink,
        threads: ThreadPlan,
        colour: ScalerColour | None,
        control: Control,
        on_picture: PictureTap | None = None,
        still: bool = False,
        restored: tuple[tuple[ClosedSegment, float], ...] = (),
        codecs: str | None = None,
        first_segment: int | None = None,
        end_segment: int | None = None,
    ) -> None:
        """``on_picture`` (the chapter detector's tap: one rung at most, it is not thread-safe) sees every output
        picture of this rung.

        ``still``: encode with a still source's x264 settings (:func:`~transcoder.encode.x264_options`).
        ``restored``: the segments an earlier run stored (:mod:`transcoder.checkpoint`), whose
        ``codecs`` it measured; encoding starts after them. ``first_segment`` and
        ``end_segment``: encode only segments first .. end-1 (a chunk, :mod:`transcoder.chunks`;
        the first defaults to after ``restored``, the end to the rendition's).
        """
        super().__init__(f"rung-{rung.name}", control, nice=threads.encoder_nice.get(rung.name, 0))
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=config.queue_depth)
        segment_s = rung_segment_s(ladder, rung)
        segmenter = HlsSegmenter(
            name=rung.name,
            sink=sink,
            segment_s=segment_s,
            segment_format=config.segment_format,
            restored=restored,
            first_segment=first_segment,
        )
        per_segment = round(Fraction(segment_s) * rung.fps)
        first = len(restored) if first_segment is None else first_segment
        try:
            self.encoder = RungEncoder(
                rung,
                ladder,
                segmenter=segmenter,
                preset=config.encoder.preset,
                crf=config.encoder.crf,
                threads=threads.encoder_threads.get(rung.name, 1),
                interpolation=config.encoder.scaler,
                lookahead_thread=threads.x264_lookahead_thread,
                colour=colour,
                on_picture=on_picture.offer if on_picture is not None else None,
                still=still,
                start_slot=first * per_segment,
                end_slot=None if end_segment is None else end_segment * per_segment,
            )
            if codecs is not None:
                self.encoder.codecs = codecs
        except BaseException:
            segmenter.abandon()
            raise

    def work(self) -> None:
        while not isinstance(item := self.control.get(self.queue), End):
            self.encoder.push(*item)
        # The timeline ends with the longer stream: audio that goes on after
        # the camera stopped is covered by the last frame, held.
        self.encoder.finish(item.end_s, cancel=self.control.cancel)

    def close(self) -> None:
        self.encoder.close()
        _drain(self.queue)


class AudioStage(Stage):
    """Resamples, encodes and segments the audio once for every audio plan (:class:`AudioEncoder`)."""

    def __init__(self, ladder: Ladder, *, config: TranscodeConfig, sink: OutputSink, control: Control) -> None:
        super().__init__("audio", control)
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max(64, config.queue_depth * 8))
        self._ladder = ladder
        self.renditions: list[tuple[AudioPlan, HlsSegmenter]] = []
        self._encoder: AudioEncoder | None = None
        self.loudness: LoudnessResult | None = None  # measured, once the work is done (None: off)
        self._muxers_closed = False
        top = ladder.rungs[0]
        try:
            for plan in ladder.audio:
                segmenter = HlsSegmenter(
                    name=plan.name,
                    sink=sink,
                    segment_s=rung_segment_s(ladder, top),
                    segment_format=config.segment_format,
                    video=False,
                    origin_fps=top.fps,
                )
                self.renditions.append((plan, segmenter))
            self._encoder = AudioEncoder(ladder.audio, {plan.name: segmenter for plan, segmenter in self.renditions})
        except BaseException:
            self.close()
            raise

    def work(self) -> None:
        encoder = self._encoder
        assert encoder is not None
        while not isinstance(item := self.control.get(self.queue), End):
            encoder.push(*item)
        end_s = item.end_s
        # Audio lasts at least as long as every rung's frames (a rung's last
        # frame may end half a frame after end_s), so no video segment lacks
        # its audio; and it gets the top rung's segment count, which its
        # segment length follows.
        video_end_s = max(Fraction(frames_until(end_s, rung.fps), 1) / rung.fps for rung in self._ladder.rungs)
        top = self._ladder.rungs[0]
        encoder.finish(
            max(end_s, video_end_s),
            segments=segments_until(end_s, top.fps, rung_segment_s(self._ladder, top)),
        )
        self.loudness = encoder.loudness
        self._muxers_closed = True

    def close(self) -> None:
        # The muxers drop their AAC contexts when they close; dropping the
        # encoder drops the last references to them and to the resampler.
        # After a failed finish some muxers may be closed already: closing
        # one again does nothing.
        if not self._muxers_closed:
            self._muxers_closed = True
            for _plan, segmenter in self.renditions:
                segmenter.abandon()
        self._encoder = None
        _drain(self.queue)


def stop_stages(stages: list[Stage]) -> None:
    """After a failure (the cancel is set): every stage ends and has released what it owns."""
    for stage in stages:
        if stage.ident is not None:
            # A started stage closes its own objects as it ends: wait for
            # it to see the cancel rather than close them under its feet.
            stage.join()
        else:
            stage.close()


def _drop_locals(exc: BaseException) -> None:
    """Clear the local variables of the frames ``exc`` (and its causes) passed through.

    A traceback keeps every frame's locals alive: packets, streams, a
    decoder's codec context, and through them FFmpeg contexts and their
    threads, for as long as the error lives (the caller may keep it for
    long). The error's message, context, cause and line numbers stay.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__


def _drain(q: queue.Queue[Any]) -> None:
    """Drop the frames still queued (memory a failed run would otherwise keep)."""
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
