"""The run coordinator: wires decoder, rung encoders and audio into threads.

Threads (named, one owner per FFmpeg object)::

    decoder ──► [queue per rung] ──► rung-<name>: scale, x264, segment ──► sink
            └─► [audio queue]    ──► audio: resample, AAC, segment      ──► sink

Memory bound: ``queue_depth`` x rungs decoded frames (shared between rungs,
so usually fewer), plus x264's lookahead per rung and one open segment per
rendition; it does not grow with the input's length.

The coordinator (the calling thread) holds the first error, cancels every
stage, closes their muxers and asks the sink to undo what was stored. Only
after every stage succeeded and the sink confirmed every object does it
publish the master playlist: last.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from . import hls
from .audio import AudioEncoder
from .colour import colour_of
from .config import TranscodeConfig
from .decode import Decoder
from .encode import RungEncoder, frames_until, rung_segment_s, scaling_parents, segments_until
from .errors import CancelledError, MediaError, TranscodeError
from .models import AudioPlan, Ladder, Progress, RenditionResult, SourceInfo
from .output import OutputSink
from .poster import PosterPicker
from .probe import Source
from .pruning import RungDecision, RungRates, prune_ladder
from .segmenter import HlsSegmenter
from .still import RepeatDetector
from .threadplan import ThreadPlan
from .threads import lower_thread_priority, name_os_thread

MASTER = "master.m3u8"
POSTER = "poster.jpg"
ProgressSink = Callable[[Progress], None]

_END = object()
_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class LadderOutput:
    """What :func:`run_ladder` published."""

    renditions: tuple[RenditionResult, ...]
    master_uri: str
    poster_uri: str | None
    files: tuple[str, ...]
    rung_decisions: tuple[RungDecision, ...] = ()


class _Stage(threading.Thread):
    """A named stage thread that hands its exception to the coordinator."""

    def __init__(
        self, name: str, target: Callable[[], None], failed: Callable[[BaseException], None], *, nice: int = 0
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self._failed = failed
        self._nice = nice

    def run(self) -> None:
        name_os_thread(self.name)
        lower_thread_priority(self._nice)
        try:
            self._target_fn()
        except BaseException as exc:
            self._failed(exc)


class _Coordinator:
    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            # The first real failure wins; the CancelledErrors it causes in
            # the other stages are consequences, not news.
            if self.error is None or (isinstance(self.error, CancelledError) and not isinstance(exc, CancelledError)):
                self.error = exc
        self.cancel.set()

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


def run_ladder(
    source: Source,
    info: SourceInfo,
    ladder: Ladder,
    *,
    config: TranscodeConfig,
    sink: OutputSink,
    threads: ThreadPlan,
    progress: ProgressSink | None = None,
    cancel: threading.Event | None = None,
    still: bool = False,
) -> LadderOutput:
    """Transcode ``source`` into ``ladder`` and publish it through ``sink``.

    ``still``: encode every rung with a still source's x264 settings
    (:func:`~transcoder.encode.x264_options`). Blocks until done. Raises a
    :class:`TranscodeError` (after undoing what was stored) on any failure,
    or :class:`CancelledError` when ``cancel`` is set.
    """
    cancel = cancel or threading.Event()
    coordinator = _Coordinator(cancel)
    started = time.monotonic()
    segmenters: list[HlsSegmenter] = []
    stages: list[_Stage] = []
    try:
        sink.retract(MASTER)  # a stale master must never point into a half-rewritten ladder
        encoders = []
        rung_queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=config.queue_depth) for _ in ladder.rungs]
        parents = scaling_parents(ladder, _decoded_size(info)) if config.encoder.cascade else [None] * len(ladder.rungs)
        children: list[list[queue.Queue[Any]]] = [[] for _ in ladder.rungs]
        for index, parent in enumerate(parents):
            if parent is not None:
                children[parent].append(rung_queues[index])

        def forwarder(targets: list[queue.Queue[Any]]) -> Callable[[av.VideoFrame, Fraction], None] | None:
            if not targets:
                return None

            def forward(frame: av.VideoFrame, time_s: Fraction) -> None:
                for q in targets:
                    coordinator.put(q, (frame, time_s))

            return forward

        colour = colour_of(info.video)  # decided once per run, from the probe
        for index, rung in enumerate(ladder.rungs):
            segmenter = HlsSegmenter(
                name=rung.name,
                sink=sink,
                segment_s=rung_segment_s(ladder, rung),
                segment_format=config.segment_format,
            )
            segmenters.append(segmenter)
            encoders.append(
                RungEncoder(
                    rung,
                    ladder,
                    segmenter=segmenter,
                    preset=config.encoder.preset,
                    crf=config.encoder.crf,
                    threads=threads.encoder_threads.get(rung.name, 1),
                    interpolation=config.encoder.scaler,
                    lookahead_thread=threads.x264_lookahead_thread,
                    forward=forwarder(children[index]),
                    # Rungs fed by the decoder convert the source's colour;
                    # cascaded rungs get frames their parent already converted.
                    colour=colour.scaler if parents[index] is None else None,
                    still=still,
                )
            )
        audio_encoder: AudioEncoder | None = None
        if ladder.audio and info.audio is not None:
            audio_segment_s = rung_segment_s(ladder, ladder.rungs[0])
            audio_segmenters = {
                plan.name: HlsSegmenter(
                    name=plan.name,
                    sink=sink,
                    segment_s=audio_segment_s,
                    segment_format=config.segment_format,
                    video=False,
                    origin_fps=ladder.rungs[0].fps,
                )
                for plan in ladder.audio
            }
            segmenters.extend(audio_segmenters.values())
            audio_encoder = AudioEncoder(ladder.audio, audio_segmenters)

        top = ladder.rungs[0]
        # Candidates along the video, not the container: audio that outlasts
        # the camera would put them past the last frame.
        poster_span_s = info.video.duration_s or info.duration_s
        poster = (
            PosterPicker(poster_span_s, *_poster_size(top.width, top.height), colour=colour.scaler)
            if config.poster
            else None
        )
        audio_queue: queue.Queue[Any] = queue.Queue(maxsize=max(64, config.queue_depth * 8))

        root_queues = [q for q, parent in zip(rung_queues, parents, strict=True) if parent is None]

        repeats = RepeatDetector() if config.encoder.reuse_still_frames else None

        def on_video(frame: av.VideoFrame, time_s: Fraction) -> None:
            # Runs in the decoder thread: the comparison costs ~0.13 ms on a
            # still 1080p frame, 15-30 us on one that changed (transcoder.still).
            same = repeats.same_as_previous(frame) if repeats is not None else False
            for q in root_queues:
                coordinator.put(q, (frame, time_s, same))
            if poster is not None:
                poster.push(frame, time_s)

        def on_audio(frame: av.AudioFrame, time_s: Fraction) -> None:
            coordinator.put(audio_queue, (frame, time_s))

        decoder = Decoder(
            source,
            info,
            threads=threads.decoder_threads,
            on_video=on_video,
            on_audio=on_audio if audio_encoder is not None else None,
            cancel=cancel,
        )

        def decode() -> None:
            decoder.run()
            for q in root_queues:
                coordinator.put(q, _END)
            coordinator.put(audio_queue, _END)

        def encode_rung(index: int) -> Callable[[], None]:
            encoder, q = encoders[index], rung_queues[index]

            def loop() -> None:
                while (item := coordinator.get(q)) is not _END:
                    encoder.push(*item)
                # The timeline ends with the longer stream: audio that goes on
                # after the camera stopped is covered by the last frame, held.
                encoder.finish(decoder.end_s, cancel=cancel)
                for child in children[index]:
                    coordinator.put(child, _END)

            return loop

        def encode_audio() -> None:
            assert audio_encoder is not None
            while (item := coordinator.get(audio_queue)) is not _END:
                audio_encoder.push(*item)
            end_s = decoder.end_s
            # Audio lasts at least as long as every rung's frames (a rung's
            # last frame may end half a frame after end_s), so no video
            # segment lacks its audio; and it gets the top rung's segment
            # count, which its segment length follows.
            video_end_s = max(Fraction(frames_until(end_s, rung.fps), 1) / rung.fps for rung in ladder.rungs)
            top = ladder.rungs[0]
            audio_encoder.finish(
                max(end_s, video_end_s),
                segments=segments_until(end_s, top.fps, rung_segment_s(ladder, top)),
            )

        stages.append(_Stage("decoder", decode, coordinator.failed))
        stages += [
            _Stage(
                f"rung-{enc.rung.name}",
                encode_rung(i),
                coordinator.failed,
                nice=threads.encoder_nice.get(enc.rung.name, 0),
            )
            for i, enc in enumerate(encoders)
        ]
        if audio_encoder is not None:
            stages.append(_Stage("audio", encode_audio, coordinator.failed))
        for stage in stages:
            stage.start()
        total_s = info.duration_s
        while any(stage.is_alive() for stage in stages):
            for stage in stages:
                stage.join(timeout=0.25 if stage.is_alive() else 0)
                if stage.is_alive():
                    break
            if progress is not None and not cancel.is_set():
                done = min(enc.encoded_s for enc in encoders)
                progress(_progress("transcoding", done, total_s, started))
        if coordinator.error is not None:
            raise coordinator.error
        if cancel.is_set():
            raise CancelledError("the run was cancelled")

        decisions = _decide_rungs(encoders, audio_encoder, config)
        kept = [enc for enc, decision in zip(encoders, decisions, strict=True) if decision.kept]
        _discard_dropped([enc for enc in encoders if enc not in kept], sink)
        renditions, files = _write_playlists(kept, audio_encoder, ladder, sink, config)
        poster_uri = None
        if poster is not None and (jpeg := poster.jpeg()) is not None:
            sink.put(POSTER, jpeg)
            poster_uri = POSTER
            files.append(POSTER)
        if progress is not None:
            progress(_progress("publishing", total_s, total_s, started))
        sink.flush()  # every object the master names is stored before it appears
        if cancel.is_set():
            raise CancelledError("the run was cancelled")
        sink.publish(MASTER, _master(renditions).encode())
        files.append(MASTER)
        if progress is not None:
            progress(_progress("done", total_s, total_s, started))
        return LadderOutput(
            renditions=renditions,
            master_uri=MASTER,
            poster_uri=poster_uri,
            files=tuple(files),
            rung_decisions=decisions,
        )
    except BaseException as exc:
        cancel.set()
        # Stages still running own their muxers: wait for them to see the
        # cancel before closing anything under their feet.
        for stage in stages:
            if stage.ident is not None:  # started
                stage.join()
        for segmenter in segmenters:
            segmenter.abandon()
        sink.abort()
        if isinstance(exc, TranscodeError):
            raise
        if isinstance(exc, av.FFmpegError):
            raise MediaError("media processing failed", context={"error": exc.strerror}) from exc
        raise


def _decoded_size(info: SourceInfo) -> tuple[int, int]:
    """Size of the frames the decoder hands on (after turning them upright)."""
    v = info.video
    if v.rotation_deg in (90, 270):
        return v.coded_height, v.coded_width
    return v.coded_width, v.coded_height


def _progress(phase: str, done_s: float, total_s: float, started: float) -> Progress:
    elapsed = time.monotonic() - started
    speed = done_s / elapsed if elapsed > 0 else 0.0
    eta = (total_s - done_s) / speed if speed > 0 else None
    return Progress(phase=phase, done_s=done_s, total_s=total_s, elapsed_s=elapsed, speed=speed, eta_s=eta)


def _poster_size(width: int, height: int, longest: int = 1280) -> tuple[int, int]:
    scale = min(1.0, longest / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _decide_rungs(
    encoders: list[RungEncoder], audio_encoder: AudioEncoder | None, config: TranscodeConfig
) -> tuple[RungDecision, ...]:
    """Which rungs to publish, from their measured rates as the master would state them."""
    audio: dict[str, tuple[int, int]] = {}
    if audio_encoder is not None:
        for plan, segmenter in audio_encoder.renditions():
            segments = segmenter.measured_segments()
            audio[plan.name] = hls.peak_and_average_bps(segments, target_duration_s=_target(segments))
    rates = []
    for encoder in encoders:
        segments = encoder.segmenter.measured_segments()
        peak, average = hls.peak_and_average_bps(segments, target_duration_s=_target(segments))
        group = encoder.rung.audio.name if encoder.rung.audio else None
        extra_peak, extra_average = audio.get(group, (0, 0)) if group else (0, 0)
        rates.append(
            RungRates(
                name=encoder.rung.name,
                width=encoder.rung.width,
                height=encoder.rung.height,
                bandwidth_bps=peak + extra_peak,
                average_bandwidth_bps=average + extra_average,
            )
        )
    return prune_ladder(rates, min_saving=config.ladder.min_rung_saving)


def _discard_dropped(dropped: list[RungEncoder], sink: OutputSink) -> None:
    """Remove the segments a dropped rung already stored: nothing unpublished stays behind."""
    files = [
        path
        for encoder in dropped
        for path in _segment_files(encoder.rung.name, encoder.segmenter.measured_segments(), encoder.segmenter.init_uri)
    ]
    if files:
        sink.discard(files)


def _write_playlists(
    encoders: list[RungEncoder],
    audio_encoder: AudioEncoder | None,
    ladder: Ladder,
    sink: OutputSink,
    config: TranscodeConfig,
) -> tuple[tuple[RenditionResult, ...], list[str]]:
    files: list[str] = []
    results: list[RenditionResult] = []
    for encoder in encoders:
        segmenter = encoder.segmenter
        segments = segmenter.measured_segments()
        name = encoder.rung.name
        playlist = f"{name}/index.m3u8"
        iframes = f"{name}/iframes.m3u8"
        sink.put(playlist, hls.render_media_playlist(segments, init_uri=segmenter.init_uri).encode())
        sink.put(iframes, hls.render_iframe_playlist(segments, init_uri=segmenter.init_uri).encode())
        files.extend([*_segment_files(name, segments, segmenter.init_uri), playlist, iframes])
        results.append(_rendition(name, "video", playlist, iframes, segmenter, segments, encoder))
    if audio_encoder is not None:
        for plan, segmenter in audio_encoder.renditions():
            segments = segmenter.measured_segments()
            playlist = f"{plan.name}/index.m3u8"
            sink.put(playlist, hls.render_media_playlist(segments, init_uri=segmenter.init_uri).encode())
            files.extend([*_segment_files(plan.name, segments, segmenter.init_uri), playlist])
            results.append(_audio_rendition(plan, playlist, segmenter, segments))
    return tuple(results), files


def _segment_files(name: str, segments: list[Any], init_uri: str | None) -> list[str]:
    files = [f"{name}/{s.uri}" for s in segments]
    if init_uri:
        files.insert(0, f"{name}/{init_uri}")
    return files


def _target(segments: list[Any]) -> int:
    return max(1, max((int(Fraction(s.duration_s) + Fraction(1, 2)) for s in segments), default=1))


def _rendition(
    name: str,
    kind: str,
    playlist: str,
    iframes: str,
    segmenter: HlsSegmenter,
    segments: list[Any],
    encoder: RungEncoder,
) -> RenditionResult:
    peak, average = hls.peak_and_average_bps(segments, target_duration_s=_target(segments))
    rung = encoder.rung
    return RenditionResult(
        name=name,
        kind=kind,
        playlist_uri=playlist,
        iframe_playlist_uri=iframes,
        init_uri=f"{name}/{segmenter.init_uri}" if segmenter.init_uri else None,
        codecs=encoder.codecs or "avc1.640028",
        width=rung.width,
        height=rung.height,
        fps=rung.fps,
        bitrate_kbps=rung.bitrate_kbps,
        reused_frames=encoder.reused_frames,
        segments=tuple(segments),
        peak_bps=peak,
        average_bps=average,
        size_bytes=sum(s.size_bytes for s in segments),
        duration_s=sum(s.duration_s for s in segments),
        audio_group=rung.audio.name if rung.audio else None,
    )


def _audio_rendition(plan: AudioPlan, playlist: str, segmenter: HlsSegmenter, segments: list[Any]) -> RenditionResult:
    peak, average = hls.peak_and_average_bps(segments, target_duration_s=_target(segments))
    return RenditionResult(
        name=plan.name,
        kind="audio",
        playlist_uri=playlist,
        iframe_playlist_uri=None,
        init_uri=f"{plan.name}/{segmenter.init_uri}" if segmenter.init_uri else None,
        codecs=plan.codecs_tag,
        width=None,
        height=None,
        fps=None,
        bitrate_kbps=plan.bitrate_kbps,
        segments=tuple(segments),
        peak_bps=peak,
        average_bps=average,
        size_bytes=sum(s.size_bytes for s in segments),
        duration_s=sum(s.duration_s for s in segments),
    )


def _master(renditions: tuple[RenditionResult, ...]) -> str:
    audio = {r.name: r for r in renditions if r.kind == "audio"}
    audio_entries = [
        hls.AudioEntry(
            group_id=r.name, name=r.name, uri=r.playlist_uri, default=True, channels=2, language=None, codecs=r.codecs
        )
        for r in audio.values()
    ]
    variants = []
    for r in renditions:
        if r.kind != "video":
            continue
        group = r.audio_group if r.audio_group in audio else None
        extra_peak = audio[group].peak_bps if group else 0
        extra_avg = audio[group].average_bps if group else 0
        assert r.width is not None and r.height is not None and r.fps is not None
        variants.append(
            hls.VariantEntry(
                uri=r.playlist_uri,
                iframe_uri=r.iframe_playlist_uri,
                bandwidth_bps=r.peak_bps + extra_peak,
                average_bandwidth_bps=r.average_bps + extra_avg,
                codecs=r.codecs,
                width=r.width,
                height=r.height,
                fps=r.fps,
                audio_group=group,
                iframe_bandwidth_bps=hls.iframe_peak_bps(r.segments) if r.iframe_playlist_uri else None,
                iframe_average_bandwidth_bps=hls.iframe_average_bps(r.segments) if r.iframe_playlist_uri else None,
            )
        )
    return hls.render_master_playlist(variants, audio_entries)
