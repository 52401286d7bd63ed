"""The run coordinator: wires decoder, rung encoders and audio into threads.

Threads (named, one owner per FFmpeg object)::

    decoder ──► [queue per rung] ──► rung-<name>: scale, x264, segment ──► sink
            └─► [audio queue]    ──► audio: resample, AAC, segment      ──► sink

The decoder thread also feeds the storyboard (thumbnail tiles, from decoded
frames) and the smallest rung's thread the chapter detector (from its scaled
pictures); their files are put after the playlists and before the master,
which alone names them (:func:`~transcoder.publish.put_viewer_files`).

Memory bound: ``queue_depth`` x rungs decoded frames (shared between rungs,
so usually fewer), plus x264's lookahead per rung and one open segment per
rendition; it does not grow with the input's length.

Checkpoints and chunks (:mod:`transcoder.checkpoint`, :mod:`transcoder.chunks`):
the coordinator ticks a :class:`~transcoder.checkpoint.Checkpointer` with the
progress reports, which writes a record after each span of stored segments.
A resumed run's rungs start after the segments an earlier run stored; in a
chunked run they start at the main process's own chunk, and the segments the
worker processes stored join them (``prefix``) before the playlists are
written. The workers tap their own chunks for the viewer outputs and the
main process merges their parts with its own (:mod:`transcoder.viewer`), so
its decoder reads only the audio of the workers' stretch, demuxing past
their video (``video_skip``; not when earlier checkpoint records cover part
of it: the main process then taps the whole timeline itself).

A :class:`Coordinator` runs one ladder. Each stage (:mod:`transcoder.stages`)
owns its FFmpeg objects and releases them in its own thread when it ends, on
every path. The coordinator (the calling thread) holds the first error,
cancels every stage, waits for them, and asks the sink to undo what was
stored. Only after every stage succeeded and the sink confirmed every object
does it publish (:mod:`transcoder.publish`): the master playlist last.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av

from .colour import colour_of
from .config import TranscodeConfig
from .encode import RungEncoder
from .errors import CancelledError, MediaError, TranscodeError
from .execution import Execution
from .models import ChaptersResult, Ladder, Progress, RenditionResult, SourceInfo, ThumbnailsResult
from .output import OutputSink
from .probe import Source
from .pruning import RungDecision
from .publish import decide_rungs, discard_dropped, master_playlist, put_viewer_files, write_playlists
from .segmenter import ClosedSegment
from .stages import AudioStage, Control, DecodeStage, RungStage, Stage, stop_stages
from .threadplan import ThreadPlan
from .viewer import FrameTap, PartTaps, PictureTap, Viewer, part_spans

MASTER = "master.m3u8"
POSTER = "poster.jpg"
ProgressSink = Callable[[Progress], None]

_PROGRESS_S = 0.25  # how often the coordinator looks at the stages (and reports progress)


@dataclass(frozen=True, slots=True)
class LadderOutput:
    """What :meth:`Coordinator.run` published."""

    renditions: tuple[RenditionResult, ...]
    master_uri: str
    poster_uri: str | None
    files: tuple[str, ...]
    rung_decisions: tuple[RungDecision, ...] = ()
    thumbnails: ThumbnailsResult | None = None
    chapters: ChaptersResult | None = None


# Called after every other object is stored and before the master playlist,
# with what is about to be published and the master's bytes; returns the
# paths it put through the sink (the manifest), which the coordinator flushes.
BeforeMaster = Callable[[LadderOutput, bytes], Sequence[str]]


class Coordinator:
    """Transcodes ``source`` into ``ladder`` and publishes it through ``sink``. Single use.

    ``before_master`` (see :data:`BeforeMaster`) writes the objects that must
    come last but one (the manifest). ``still``: encode every rung with a still
    source's x264 settings (:func:`~transcoder.encode.x264_options`).
    ``sink`` stays the caller's: the coordinator puts, flushes and publishes
    through it, and aborts it on failure; closing it is the caller's job.
    ``execution`` (:func:`~transcoder.execution.prepare`): write checkpoint
    records as spans are stored, start after the resume point, keep what the
    records vouch for when the run fails; in chunk mode, encode only the main
    process's chunk and add the workers' segments before publishing.
    """

    def __init__(
        self,
        source: Source,
        info: SourceInfo,
        ladder: Ladder,
        *,
        config: TranscodeConfig,
        sink: OutputSink,
        threads: ThreadPlan,
        progress: ProgressSink | None = None,
        cancel: threading.Event | None = None,
        before_master: BeforeMaster | None = None,
        still: bool = False,
        execution: Execution | None = None,
    ) -> None:
        self.source = source
        # How the run executes (transcoder.execution): its checkpointer, which
        # records spans as they are stored and whose resume point says where
        # each rung starts; in chunk mode the segment the rungs start at,
        # ``prefix`` (waits for the segments before it, the workers', and says
        # what they are, before the playlists are written), the workers'
        # progress and the video the decoder need not decode.
        self.checkpoint = execution.checkpoint if execution is not None else None
        self.first_segment = execution.first_segment if execution is not None else 0
        self.prefix = execution.prefix if execution is not None else None
        self.chunks_done = execution.chunks_done if execution is not None else None
        self.video_skip = execution.video_skip if execution is not None else None
        # Chunk mode with viewer outputs: the workers' parts of them (transcoder.viewer), once stored.
        self.viewer_parts = execution.viewer_parts if execution is not None else None
        self.still = still  # a still source's x264 settings on every rung (transcoder.still)
        self.info = info
        self.ladder = ladder
        self.config = config
        self.sink = sink
        self.threads = threads
        self.progress = progress
        self.before_master = before_master
        self.control = Control(cancel or threading.Event())
        self._rungs: list[RungStage] = []
        self._audio: AudioStage | None = None
        self._viewer: Viewer | None = None
        self._part_taps: PartTaps | None = None  # chunk mode: the viewer taps of the main process's own chunk
        self._decode: DecodeStage | None = None
        self._stages: list[Stage] = []  # in start order
        self._started = time.monotonic()

    def run(self) -> LadderOutput:
        """Build the stages, run them in threads, publish; blocks until done.

        Raises a :class:`TranscodeError` (after undoing what was stored) on any
        failure, or :class:`CancelledError` when ``cancel`` is set. When it
        returns or raises, every thread the run started has ended and every
        FFmpeg object it made is closed.
        """
        self._started = time.monotonic()
        try:
            self.sink.retract(MASTER)  # a stale master must never point into a half-rewritten ladder
            self._build()
            self._run_stages()
            return self._publish()
        except BaseException as exc:
            self.control.cancel.set()
            stop_stages(self._stages)
            self.sink.abort(keep=self.checkpoint.keep() if self.checkpoint is not None else ())
            if isinstance(exc, TranscodeError):
                raise
            if isinstance(exc, av.FFmpegError):
                raise MediaError("media processing failed", context={"error": exc.strerror}) from exc
            raise

    def _build(self) -> None:
        """Make every stage; each owns its FFmpeg objects from here on (stages.stop_stages on failure)."""
        info, ladder, config = self.info, self.ladder, self.config
        colour = colour_of(info.video)  # decided once per run, from the probe
        viewer = self._viewer = Viewer.make(config, info, ladder, colour.scaler)
        frame_taps: tuple[FrameTap, ...] = viewer.frame_taps
        picture_tap: PictureTap | None = viewer.chapters
        if self.viewer_parts is not None:
            # The workers tap their chunks; this process taps only its own.
            self._part_taps = PartTaps(viewer, *part_spans(ladder, self.first_segment, None))
            frame_taps, picture_tap = self._part_taps.frame_taps, self._part_taps.picture_tap
        resume = self.checkpoint.resume if self.checkpoint is not None else None
        for rung in ladder.rungs:
            self._rungs.append(
                RungStage(
                    rung,
                    ladder,
                    config=config,
                    sink=self.sink,
                    threads=self.threads,
                    colour=colour.scaler,
                    control=self.control,
                    # The smallest rung's pictures: its scaler has done most of
                    # the detector's downscale (0.1 ms a 640x360 frame against
                    # 0.6 ms a decoded 1080p one), and its thread is the one
                    # with the most slack, not the decoder on the critical path.
                    on_picture=picture_tap if rung is ladder.rungs[-1] else None,
                    still=self.still,
                    restored=resume.restored.get(rung.name, ()) if resume is not None else (),
                    codecs=resume.codecs.get(rung.name) if resume is not None else None,
                    first_segment=self.first_segment if self.prefix is not None else None,
                )
            )
            self._stages.append(self._rungs[-1])
        if ladder.audio and info.audio is not None:
            self._audio = AudioStage(ladder, config=config, sink=self.sink, control=self.control)
            self._stages.append(self._audio)
        decode = DecodeStage(
            self.source,
            info,
            threads=self.threads.decoder_threads,
            rung_queues=[stage.queue for stage in self._rungs],
            audio_queue=self._audio.queue if self._audio is not None else None,
            reuse_still_frames=config.encoder.reuse_still_frames,
            control=self.control,
            taps=frame_taps,
            skip=self.video_skip,
        )
        self._decode = decode
        self._stages.insert(0, decode)

    def _run_stages(self) -> None:
        """Start every stage and wait for all of them, reporting progress; raise the first error."""
        for stage in self._stages:
            stage.start()
        total_s = self.info.duration_s
        while any(stage.is_alive() for stage in self._stages):
            for stage in self._stages:
                stage.join(timeout=_PROGRESS_S if stage.is_alive() else 0)
                if stage.is_alive():
                    break
            if self.checkpoint is not None and not self.control.cancel.is_set():
                self.checkpoint.tick([_Rendition(stage.encoder) for stage in self._rungs])
            if self.progress is not None and not self.control.cancel.is_set():
                self.progress(self._report("transcoding", self._done_s(), total_s))
        if (error := self.control.take_error()) is not None:
            try:
                raise error
            finally:
                del error  # the traceback holds this frame: no cycle back to the error
        if self.control.cancel.is_set():
            raise CancelledError("the run was cancelled")

    def _publish(self) -> LadderOutput:
        config, sink, total_s = self.config, self.sink, self.info.duration_s
        encoders = [stage.encoder for stage in self._rungs]
        if self.prefix is not None:
            progress = self.progress

            def tick() -> None:
                if progress is not None:
                    progress(self._report("transcoding", self._done_s(), total_s))

            before = self.prefix(tick)
            for encoder in encoders:
                encoder.segmenter.restore(before.restored.get(encoder.rung.name, ()))
                encoder.codecs = encoder.codecs or before.codecs.get(encoder.rung.name)
        viewer = self._viewer
        assert viewer is not None
        if self._part_taps is not None and self.viewer_parts is not None:
            viewer.merge([*self.viewer_parts(), self._part_taps.part()])
        audio = self._audio.renditions if self._audio is not None else []
        decisions = decide_rungs(encoders, audio, min_saving=config.ladder.min_rung_saving)
        kept = [enc for enc, decision in zip(encoders, decisions, strict=True) if decision.kept]
        discard_dropped([enc for enc in encoders if enc not in kept], sink)
        loudness = self._audio.loudness if self._audio is not None else None
        renditions, files = write_playlists(kept, audio, sink, loudness=loudness)
        poster_uri = None
        if viewer.poster is not None and (jpeg := viewer.poster.jpeg()) is not None:
            sink.put(POSTER, jpeg)
            poster_uri = POSTER
            files.append(POSTER)
        # Every stage has ended (joined): the taps they fed are ours now.
        assert self._decode is not None
        end_s = self._decode.end_s
        published = put_viewer_files(
            viewer.storyboard.finish(end_s) if viewer.storyboard is not None else None,
            viewer.chapters.finish(end_s) if viewer.chapters is not None else None,
            sink,
        )
        files.extend(published.files)
        if self.progress is not None:
            self.progress(self._report("publishing", total_s, total_s))
        sink.flush()  # every object the master names is stored before it appears
        if self.control.cancel.is_set():
            raise CancelledError("the run was cancelled")
        master = master_playlist(
            renditions, session_data=published.session_data, image_streams=published.image_streams
        ).encode()
        output = LadderOutput(
            renditions=renditions,
            master_uri=MASTER,
            poster_uri=poster_uri,
            files=tuple(files),
            rung_decisions=decisions,
            thumbnails=published.thumbnails,
            chapters=published.chapters,
        )
        if self.checkpoint is not None:
            self.checkpoint.unlist()  # a published output names no records (removed after the master)
        if self.before_master is not None:
            files.extend(self.before_master(output, master))  # the manifest: after everything, before the master
            sink.flush()
            if self.control.cancel.is_set():
                raise CancelledError("the run was cancelled")
        sink.publish(MASTER, master)
        files.append(MASTER)
        if self.checkpoint is not None:
            self.checkpoint.remove_records()
        if self.progress is not None:
            self.progress(self._report("done", total_s, total_s))
        return dataclasses.replace(output, files=tuple(files))

    def _done_s(self) -> float:
        """Seconds of the timeline encoded: the main process's rungs, and in chunk mode the workers' share."""
        done = min(stage.encoder.encoded_s for stage in self._rungs)
        if self.chunks_done is not None:
            done = min(done, self.info.duration_s * self.chunks_done())
        return done

    def _report(self, phase: str, done_s: float, total_s: float) -> Progress:
        return _progress(phase, done_s, total_s, self._started)


class _Rendition:
    """A rung as the checkpointer reads it (transcoder.checkpoint.VideoRendition)."""

    def __init__(self, encoder: RungEncoder) -> None:
        self._encoder = encoder

    @property
    def name(self) -> str:
        return self._encoder.rung.name

    @property
    def codecs(self) -> str | None:
        return self._encoder.codecs

    @property
    def init_uri(self) -> str | None:
        return self._encoder.segmenter.init_uri

    @property
    def segment_s(self) -> float:
        rung = self._encoder.rung
        frames = round(Fraction(self._encoder.segmenter.segment_s) * rung.fps)
        # Printed as the muxer prints EXTINF (%f), so a resumed playlist reads
        # as the uninterrupted run's.
        return float(f"{float(frames / rung.fps):f}")

    def closed_segments(self) -> tuple[int, list[ClosedSegment]]:
        return self._encoder.segmenter.closed_segments()


def _progress(phase: str, done_s: float, total_s: float, started: float) -> Progress:
    elapsed = time.monotonic() - started
    speed = done_s / elapsed if elapsed > 0 else 0.0
    eta = (total_s - done_s) / speed if speed > 0 else None
    return Progress(phase=phase, done_s=done_s, total_s=total_s, elapsed_s=elapsed, speed=speed, eta_s=eta)
