"""Worker processes that encode time chunks (:mod:`transcoder.chunks`) into the run's output.

Each chunk runs in a fresh process (``spawn``; one chunk per process: no
FFmpeg or x264 state carries from one chunk to the next, and a crash takes
one chunk down). The worker opens the source itself (an ``s3://`` source by
its own ranged GETs, never a full download), decodes from the keyframe
before the chunk, encodes every video rung for the chunk's segments with the
same settings as a serial run, stores the segments through its own sink as
they close, and then writes the chunk's checkpoint record
(:class:`~transcoder.checkpoint.SpanRecord`) after them. The record is also
what it returns: the main process adds those segments to its renditions;
with it come the chunk's viewer taps (:class:`~transcoder.viewer.ViewerPart`:
storyboard tiles, poster candidates, the chapter detector's signal).

Memory bound per worker: a serial run's for its ladder (``queue_depth``
decoded frames per rung, x264's lookahead, one open segment per rung).

A failed chunk's error comes back as the same :class:`~transcoder.errors.TranscodeError`
class with its message and context (exceptions are sent as plain data:
their constructors take keyword arguments pickle does not replay).
"""

from __future__ import annotations

import os
import pickle
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from . import errors
from .checkpoint import RenditionSpan, SpanRecord, StoredSegment
from .chunks import Chunk
from .colour import colour_of
from .config import TranscodeConfig
from .decode import DecodeSpan
from .encode import rung_segment_s
from .errors import CancelledError, MediaError, TranscodeError
from .inventory import HashingSink
from .models import ChunkStats, Ladder, SourceInfo
from .opening import open_source
from .output import LocalDirectory, OutputSink
from .stages import Control, DecodeStage, RungStage, Stage, stop_stages
from .storage import S3Location, StorageConfig, is_s3_uri
from .storage import errors as storage_errors
from .threadplan import ThreadPlan
from .usage import peak_rss_bytes
from .viewer import PartTaps, Viewer, ViewerPart, part_spans

_POLL_S = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkTask:
    """Everything a worker needs to encode one chunk (plain data: it crosses a process boundary)."""

    source: str  # a local path or s3://bucket/key
    destination: str  # a local directory or s3://bucket/prefix/
    storage: StorageConfig | None
    info: SourceInfo
    ladder: Ladder  # the rungs to encode
    config: TranscodeConfig
    threads: ThreadPlan  # for the worker's share of the budget
    still: bool
    origin: Fraction  # the source time of the first video frame (transcoder.decode.first_frame_time)
    chunk: Chunk
    fingerprint: str
    viewer: bool = False  # tap the chunk for the viewer outputs (transcoder.viewer)


@dataclass(frozen=True, slots=True)
class _Failure:
    kind: str
    message: str
    context: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Done:
    record: SpanRecord
    viewer: ViewerPart | None
    cpu_s: float
    wall_s: float
    peak_rss_bytes: int


def run_chunk(task: ChunkTask) -> tuple[SpanRecord, ViewerPart | None] | _Failure:
    """Encode ``task.chunk`` and store it with its record; in a worker process."""
    try:
        return _encode(task)
    except TranscodeError as exc:
        plain = (str, int, float, bool, type(None))
        context = {k: v if isinstance(v, plain) else str(v) for k, v in exc.context.items()}
        return _Failure(type(exc).__name__, exc.message, context)
    except Exception as exc:
        return _Failure("MediaError", "a chunk failed", {"chunk": task.chunk.first, "error": repr(exc)[:200]})


def _encode(task: ChunkTask) -> tuple[SpanRecord, ViewerPart | None]:
    cancel = threading.Event()
    control = Control(cancel)
    with ExitStack() as stack:
        opened = stack.enter_context(open_source(task.source, storage=task.storage, cancel=cancel))
        sink = _sink(task, stack, cancel)
        inventory = HashingSink(sink)
        colour = colour_of(task.info.video)
        first, end = task.chunk.first, task.chunk.end
        taps = None
        if task.viewer:
            viewer = Viewer.make(task.config, task.info, task.ladder, colour.scaler)
            taps = PartTaps(viewer, *part_spans(task.ladder, first, end))
        rungs = [
            RungStage(
                rung,
                task.ladder,
                config=task.config,
                sink=inventory,
                threads=task.threads,
                colour=colour.scaler,
                control=control,
                still=task.still,
                first_segment=first,
                end_segment=end,
                on_picture=taps.picture_tap if taps is not None and rung is task.ladder.rungs[-1] else None,
            )
            for rung in task.ladder.rungs
        ]
        times = [_segment_time(task.ladder, stage, index) for stage in rungs for index in (first, end)]
        start = min(times[0::2])
        if start > 0 and task.info.video.interlaced and task.info.video.fps > 0:
            # The deinterlacer (bwdif) reads the frame before each one: the
            # chunk's first must have it, as in a serial run, or its picture
            # differs. Decode from a keyframe before that frame.
            start -= 1 / task.info.video.fps
        span = DecodeSpan(origin=task.origin, start_s=max(Fraction(0), start), stop_s=max(times[1::2]))
        decode = DecodeStage(
            opened,
            task.info,
            threads=task.threads.decoder_threads,
            rung_queues=[stage.queue for stage in rungs],
            audio_queue=None,
            reuse_still_frames=task.config.encoder.reuse_still_frames,
            control=control,
            taps=taps.frame_taps if taps is not None else (),
            span=span,
        )
        stages: list[Stage] = [decode, *rungs]
        try:
            for stage in stages:
                stage.start()
            for stage in stages:
                stage.join()
            if (error := control.take_error()) is not None:
                raise error
            inventory.flush()
            record = _record(task, rungs, inventory)
            inventory.put(record.path, record.to_json())
            inventory.flush()
            return record, taps.part() if taps is not None else None
        except BaseException:
            cancel.set()
            stop_stages(stages)
            sink.abort()
            raise


def _segment_time(ladder: Ladder, stage: RungStage, index: int) -> Fraction:
    rung = stage.encoder.rung
    per_segment = round(Fraction(rung_segment_s(ladder, rung)) * rung.fps)
    return Fraction(index * per_segment) / rung.fps


def _sink(task: ChunkTask, stack: ExitStack, cancel: threading.Event) -> OutputSink:
    if not is_s3_uri(task.destination):
        return LocalDirectory(task.destination)
    from .storage.client import make_client
    from .storage.uploader import S3Sink

    location = S3Location.parse(task.destination, prefix=True)
    s3_sink = S3Sink(make_client(task.storage), location, task.storage, cancel=cancel)
    stack.callback(s3_sink.close)
    return s3_sink


def _record(task: ChunkTask, rungs: Sequence[RungStage], inventory: HashingSink) -> SpanRecord:
    parts: list[RenditionSpan] = []
    for stage in rungs:
        encoder, segmenter = stage.encoder, stage.encoder.segmenter
        own = segmenter.measured_segments()
        closed = segmenter.segments
        if len(own) != task.chunk.segments:
            raise MediaError(
                "a chunk came out with the wrong number of segments",
                context={"rendition": encoder.rung.name, "chunk": task.chunk.first, "segments": len(own)},
            )
        segments = []
        for info, raw in zip(own, closed, strict=True):
            entry = inventory.entry(f"{encoder.rung.name}/{raw.uri}")
            assert entry is not None  # put through the inventory when it closed
            segments.append(StoredSegment.of(raw, sha256=entry.sha256, duration_s=info.duration_s))
        init = f"{encoder.rung.name}/{segmenter.init_uri}" if segmenter.init_uri and task.chunk.first == 0 else None
        parts.append(
            RenditionSpan(
                name=encoder.rung.name,
                codecs=encoder.codecs,
                init=inventory.entry(init) if init else None,
                segments=tuple(segments),
            )
        )
    return SpanRecord(fingerprint=task.fingerprint, first=task.chunk.first, renditions=tuple(parts))


def _error(failure: _Failure) -> TranscodeError:
    """The parent's error for a worker's failure: the same class where it is a known one."""
    known: dict[str, type[TranscodeError]] = {
        cls.__name__: cls
        for module in (errors, storage_errors)
        for cls in vars(module).values()
        if isinstance(cls, type) and issubclass(cls, TranscodeError)
    }
    cls = known.get(failure.kind, MediaError)
    try:
        return cls(failure.message, context=failure.context)
    except TypeError:  # a class whose constructor wants more
        return MediaError(failure.message, context={**failure.context, "error": failure.kind})


class ChunkPool:
    """Runs ``tasks`` in worker processes, ``workers`` at a time, started at once; :meth:`wait` collects records.

    Each chunk is a ``python -m transcoder.chunk_worker`` process of its own: the
    task goes in pickled on stdin, the record (or the failure) comes back
    pickled on stdout. A worker never imports the caller's main module (a
    library user's script runs no second time). :meth:`close` kills whatever
    still runs (a failed or cancelled run); a chunk without a record left
    segments that the next run overwrites.
    """

    def __init__(self, tasks: Sequence[ChunkTask], *, workers: int) -> None:
        self.tasks = tuple(tasks)
        self._lock = threading.Lock()
        self._closed = False
        self._processes: set[subprocess.Popen[bytes]] = set()
        self._stats: list[ChunkStats] = []
        self._viewer: dict[int, ViewerPart] = {}
        self._threads = ThreadPoolExecutor(max(1, workers), thread_name_prefix="chunk")
        self._results = [self._threads.submit(self._run, task) for task in self.tasks]

    @property
    def done_share(self) -> float:
        """The share of the tasks' segments whose chunk is stored (or failed)."""
        total = sum(task.chunk.segments for task in self.tasks) or 1
        done = sum(task.chunk.segments for task, result in zip(self.tasks, self._results, strict=True) if result.done())
        return done / total

    @property
    def stats(self) -> tuple[ChunkStats, ...]:
        """What each finished chunk cost, in chunk order."""
        with self._lock:
            return tuple(sorted(self._stats, key=lambda stat: stat.first))

    @property
    def viewer_parts(self) -> tuple[ViewerPart, ...]:
        """The finished chunks' viewer taps (:mod:`transcoder.viewer`), in chunk order."""
        with self._lock:
            return tuple(part for _, part in sorted(self._viewer.items()))

    def _run(self, task: ChunkTask) -> SpanRecord | _Failure:
        with self._lock:
            if self._closed:
                return _Failure("CancelledError", "the run was cancelled", {})
            process = subprocess.Popen(
                [sys.executable, "-m", "transcoder.chunk_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            self._processes.add(process)
        try:
            out, err = process.communicate(pickle.dumps(task))
        finally:
            with self._lock:
                self._processes.discard(process)
        if process.returncode != 0 or not out:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
            return _Failure(
                "MediaError",
                "a chunk worker died",
                {"chunk": task.chunk.first, "status": process.returncode, "stderr": " | ".join(tail)[:300]},
            )
        result: _Done | _Failure = pickle.loads(out)
        if isinstance(result, _Failure):
            return result
        stat = ChunkStats(
            first=task.chunk.first,
            end=task.chunk.end,
            cpu_s=result.cpu_s,
            wall_s=result.wall_s,
            peak_rss_bytes=result.peak_rss_bytes,
        )
        with self._lock:
            self._stats.append(stat)
            if result.viewer is not None:
                self._viewer[task.chunk.first] = result.viewer
        return result.record

    def wait(self, cancel: threading.Event, tick: Callable[[], None] | None = None) -> list[SpanRecord]:
        """Every chunk's record, once all are stored; raises the first failure (then closes the pool).

        ``tick`` is called a few times a second while it waits (progress reports).
        """
        records: list[SpanRecord] = []
        try:
            for result in self._results:
                while True:
                    if cancel.is_set():
                        raise CancelledError("the run was cancelled")
                    if tick is not None:
                        tick()
                    try:
                        outcome = result.result(timeout=_POLL_S)
                        break
                    except FutureTimeout:
                        continue
                if isinstance(outcome, _Failure):
                    raise _error(outcome)
                records.append(outcome)
        except BaseException:
            self.close()
            raise
        self._threads.shutdown(wait=True)
        return records

    def close(self) -> None:
        """Kill the workers that still run and start no more. Idempotent."""
        with self._lock:
            self._closed = True
            running = list(self._processes)
        for process in running:
            process.kill()
        self._threads.shutdown(wait=True, cancel_futures=True)


def main() -> int:
    """A worker: one pickled :class:`ChunkTask` on stdin, its record (or failure) pickled on stdout."""
    started = time.monotonic()
    result_stream = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else written to stdout (a library's print) goes to stderr
    task = pickle.loads(sys.stdin.buffer.read())
    if not isinstance(task, ChunkTask):
        return 2
    outcome = run_chunk(task)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = (
        outcome
        if isinstance(outcome, _Failure)
        else _Done(*outcome, usage.ru_utime + usage.ru_stime, time.monotonic() - started, peak_rss_bytes())
    )
    result_stream.write(pickle.dumps(result))
    result_stream.flush()
    return 0


__all__ = ["ChunkPool", "ChunkTask", "run_chunk"]
