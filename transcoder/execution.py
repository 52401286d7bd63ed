"""How a run executes: which checkpoint records it resumes from, serial or chunks, and the worker pool.

:func:`prepare` reads the output's checkpoint records
(:mod:`transcoder.checkpoint`), plans the execution (:mod:`transcoder.chunks`)
over the segments they do not cover, and, for chunks, starts the worker
processes (:mod:`transcoder.chunk_pool`). What it returns is what the
:class:`~transcoder.pipeline.Coordinator` needs: the checkpointer, the
segment the main process starts at, and how to learn the segments before it.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from fractions import Fraction

import psutil

from .budget import CpuBudget
from .checkpoint import (
    RECORD_DIR,
    Checkpointer,
    Resume,
    SpanRecord,
    covered_prefix,
    find_records,
    fingerprint,
    resume_from,
    span_segments,
)
from .chunk_pool import ChunkPool, ChunkTask
from .chunks import Chunk, ExecutionPlan, keyframe_times, plan_execution
from .config import ExecutionMode, TranscodeConfig
from .decode import VideoSkip, first_frame_time
from .encode import rung_segment_s, segments_until
from .inventory import HashingSink
from .manifest import SourceIdentity
from .models import Ladder, SourceInfo
from .output import OutputSink, ResumableOutput
from .probe import Source
from .storage import StorageConfig, is_s3_uri
from .threadplan import ThreadPlan, plan_threads
from .viewer import ViewerPart

_log = logging.getLogger("transcoder.execution")


@dataclass(frozen=True, slots=True, kw_only=True)
class Execution:
    """What :func:`prepare` decided and started."""

    plan: ExecutionPlan
    threads: ThreadPlan  # the main process's
    checkpoint: Checkpointer | None
    note: str  # what became of the output's checkpoint records
    first_segment: int = 0  # where the main process's rungs start
    # Chunk mode: the workers' segments, once stored (the argument is called while it waits),
    # and the share of them stored so far.
    prefix: Callable[[Callable[[], None]], Resume] | None = None
    chunks_done: Callable[[], float] | None = None
    resumed_segments: int = 0  # per video rendition, kept from an earlier run
    pool: ChunkPool | None = None
    video_skip: VideoSkip | None = None  # chunk mode: video the main process need not decode
    # Chunk mode with viewer outputs: the workers' taps of them (transcoder.viewer), once their chunks are stored;
    # None: the main process taps the whole timeline itself.
    viewer_parts: Callable[[], Sequence[ViewerPart]] | None = None


def prepare(
    *,
    source: Source,
    destination: object,
    opened: Source,
    info: SourceInfo,
    ladder: Ladder,
    config: TranscodeConfig,
    still: bool,
    budget: CpuBudget,
    sink: OutputSink,
    inventory: HashingSink,
    identity: SourceIdentity,
    storage: StorageConfig | None,
    cancel: threading.Event,
    stack: ExitStack,
) -> Execution:
    """Plan the run's execution; start the chunk workers if it has any (closed by ``stack``)."""
    names = [rung.name for rung in ladder.rungs]
    key, records, note = _records(config, sink, identity, ladder, still=still, names=names)
    chunkable = key is not None and isinstance(source, (str, os.PathLike)) and _is_location(destination)
    mode = config.parallel if chunkable else "serial"
    keyframes = keyframe_times(opened, info) if mode != "serial" else None
    plan = execution_plan(
        ladder,
        info,
        config,
        cores=budget.cores,
        mode=mode,
        keyframes_s=keyframes,
        covered=[Chunk(record.first, record.end) for record in records.values()],
    )
    if config.parallel != "serial" and not chunkable:
        why = "; chunks need a source path or URI, an output location and checkpoints"
        plan = replace(plan, reason=plan.reason + why)
    if plan.mode == "serial" or key is None:
        chain = covered_prefix(records)
        resume = resume_from(chain, names) if chain else None
        _retract_unused(sink, keep=chain)
        checkpoint = None
        if key is not None and isinstance(sink, ResumableOutput):
            if resume is not None:
                inventory.adopt(resume.objects)  # the manifest lists what the earlier run stored
                note = f"{note}: resuming at segment {resume.segments}"
                _log.info("resuming: %s", note)
            checkpoint = Checkpointer(sink, inventory, key, span_segments(config), resume)
        return Execution(
            plan=plan,
            threads=plan_threads(ladder, budget, preset=config.encoder.preset, still=still),
            checkpoint=checkpoint,
            note=note,
            resumed_segments=resume.segments if resume is not None and checkpoint is not None else 0,
        )

    assert isinstance(sink, ResumableOutput)
    worker_budget = CpuBudget(cores=plan.worker_cores, source="chunk worker", detail=f"{budget.cores} cores split")
    worker_threads = plan_threads(ladder, worker_budget, preset=config.encoder.preset, still=still)
    assert isinstance(source, (str, os.PathLike)) and isinstance(destination, (str, os.PathLike))
    origin = first_frame_time(opened, info, threads=1)
    earlier = [record for record in records.values() if record.end <= plan.tail_first]
    # The workers tap their chunks for the viewer outputs when theirs and the
    # main process's tile the timeline; with earlier records the main process
    # decodes and taps all of it, as a serial run does.
    wanted = config.thumbnails or config.chapters or config.poster
    viewer = wanted and not earlier
    tasks = [
        ChunkTask(
            source=str(os.fspath(source)),
            destination=str(os.fspath(destination)),
            storage=storage,
            info=info,
            ladder=ladder,
            config=config,
            threads=worker_threads,
            still=still,
            origin=origin,
            chunk=chunk,
            fingerprint=key,
            viewer=viewer,
        )
        for chunk in plan.chunks
    ]
    _retract_unused(sink, keep=earlier)
    pool = ChunkPool(tasks, workers=plan.workers)
    stack.callback(pool.close)
    checkpoint = Checkpointer(sink, inventory, key, span_segments(config), start=plan.tail_first)

    def prefix(tick: Callable[[], None]) -> Resume:
        before = resume_from([*earlier, *pool.wait(cancel, tick)], names)
        inventory.adopt(before.objects)
        return before

    if earlier:
        note = f"{note}: {len(earlier)} of them kept, the rest of the timeline in chunks"
    return Execution(
        plan=plan,
        threads=worker_threads,
        checkpoint=checkpoint,
        note=note,
        first_segment=plan.tail_first,
        prefix=prefix,
        chunks_done=lambda: pool.done_share,
        pool=pool,
        # The workers' video is left undecoded unless the main process taps it itself.
        video_skip=_video_skip(ladder, plan, origin, keyframes) if viewer or not wanted else None,
        resumed_segments=sum(record.end - record.first for record in earlier),
        viewer_parts=(lambda: pool.viewer_parts) if viewer else None,
    )


def execution_plan(
    ladder: Ladder,
    info: SourceInfo,
    config: TranscodeConfig,
    *,
    cores: int,
    mode: ExecutionMode,
    keyframes_s: Sequence[float] | None,
    covered: Sequence[Chunk] = (),
) -> ExecutionPlan:
    """:func:`~transcoder.chunks.plan_execution` for this source and ladder (``transcode --plan`` shows it)."""
    top = ladder.rungs[0]
    segment_s = rung_segment_s(ladder, top)
    # Planned on the video's own duration: a chunk never lies past its last frame.
    duration = Fraction(info.video.duration_s or info.duration_s).limit_denominator(1000)
    return plan_execution(
        ladder,
        mode=mode,
        cores=cores,
        segments=segments_until(duration, top.fps, segment_s),
        segment_s=segment_s,
        keyframes_s=keyframes_s,
        covered=covered,
        workers=config.workers,
        memory_bytes=psutil.virtual_memory().available,
    )


def _video_skip(
    ladder: Ladder, plan: ExecutionPlan, origin: Fraction, keyframes: Sequence[float] | None
) -> VideoSkip | None:
    """What the main process of a chunked run need not decode: the workers' video (they tap it for the viewer outputs).

    Decoding starts at a keyframe at least a GOP (the longest in the index)
    before the main process's own chunk, so one lies before its first slot.
    """
    if not keyframes or plan.tail_first == 0:
        return None
    gap = max((b - a for a, b in itertools.pairwise(keyframes)), default=float("inf"))
    top = ladder.rungs[0]
    start = Fraction(plan.tail_first) * Fraction(rung_segment_s(ladder, top)).limit_denominator(100000)
    until = start - Fraction(gap).limit_denominator(100000) - 1 / top.fps
    return VideoSkip(origin=origin, until_s=until) if until > 0 else None


def _records(
    config: TranscodeConfig,
    sink: OutputSink,
    identity: SourceIdentity,
    ladder: Ladder,
    *,
    still: bool,
    names: list[str],
) -> tuple[str | None, dict[int, SpanRecord], str]:
    """The run's fingerprint and the output's records that match it; a note on what became of them."""
    if not isinstance(sink, ResumableOutput):
        return None, {}, "off" if not config.checkpoint else "the output cannot hold checkpoints"
    if not config.checkpoint:
        _retract_unused(sink, keep=[])  # this run rewrites what they vouch for: they go first
        return None, {}, "off"
    key = fingerprint(identity, ladder, config, still=still)
    if key is None:
        return None, {}, "the source has no identity to check a checkpoint against (a file object)"
    records, note = find_records(sink, key, names)
    return key, records, note


def _retract_unused(sink: OutputSink, *, keep: list[SpanRecord]) -> None:
    """Remove the records this run will not build on: it rewrites the segments they name."""
    if not isinstance(sink, ResumableOutput):
        return
    kept = {record.path for record in keep}
    for path in sink.listing(RECORD_DIR):
        if path not in kept:
            sink.retract(path)


def _is_location(destination: object) -> bool:
    return is_s3_uri(destination) or isinstance(destination, (str, os.PathLike))


__all__ = ["Execution", "execution_plan", "prepare"]
