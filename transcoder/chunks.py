"""The execution plan: one serial pass, or time chunks encoded side by side. Pure, but for reading the index.

HLS already cuts every rendition at aligned IDRs, so a chunk that covers
whole segments needs no stitching: its segments are final. A chunk is
encoded by a worker process of its own (:mod:`transcoder.chunk_pool`): it
decodes from the source keyframe before its start, drops what comes before
it (the rungs' slot rule), and fills exactly the output slots a serial run
would fill. The main process runs the last chunk itself, alongside the audio
(encoded once, for the whole timeline) and the viewer outputs (storyboard,
chapters, poster), which read every decoded frame; the segments the workers
stored join its renditions before the playlists are written.

When chunks pay (:func:`plan_execution`)
    x264's frame threads stop scaling at about 4 (x264's doc/threads.txt: 3.97x
    at 4 threads on 8 cores), and in a serial run the largest rung, about 57%
    of the default ladder's pixel rate, is the critical path. Where its share
    of the budget is more than 4 threads, one ladder cannot keep the cores
    busy: chunks can. Below that, serial costs less CPU (on 2 cores the chunked
    run cost more, bench/NOTES.md) and is the plan.

Costs a chunk adds, and the plan's limits on them
    Each chunk decodes from the keyframe before its start: with a long GOP (a
    screen recording with one keyframe) that is most of the file per chunk. The
    index gives the keyframes; chunks whose overlap would add more than
    ``MAX_OVERLAP`` of the decode are merged, or the run stays serial. The
    main process decodes the whole source once more (audio and viewer outputs).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from .config import ExecutionMode
from .encode import MID_STREAM_VBV_INIT
from .models import Ladder, SourceInfo
from .probe import Source, open_input

# Frame threads at which x264 stops scaling (x264 doc/threads.txt: 3.97x at 4 threads on 8 cores).
X264_SCALING_THREADS = 4
# Chunks per worker when there are several: more chunks than workers, so the
# last ones balance the load (a single worker has nothing to balance: one).
CHUNKS_PER_WORKER = 3
# Keyframe overlap (decoded before a chunk's start, then dropped) allowed, as a share of the video.
MAX_OVERLAP = 0.10
# A worker's peak resident memory at 1080p (bench: ~400 MiB for the default ladder).
WORKER_MEMORY_BYTES = 450 * 2**20


@dataclass(frozen=True, slots=True, order=True)
class Chunk:
    """Segments ``first`` .. ``end - 1`` of every video rendition."""

    first: int
    end: int

    @property
    def segments(self) -> int:
        return self.end - self.first


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionPlan:
    """How a run is executed, and why (``transcode --plan`` shows :meth:`describe`).

    ``chunks`` go to ``workers`` processes of ``worker_cores`` cores each; the
    main process encodes from ``tail_first`` to the end (every segment from
    there, serial mode's whole ladder when it is 0).
    """

    mode: Literal["serial", "chunks"]
    reason: str
    workers: int = 0
    worker_cores: int = 0
    chunks: tuple[Chunk, ...] = ()
    tail_first: int = 0
    overlap: float = 0.0  # decode overlap of the chunks' starts, share of the video (estimated from the index)

    def describe(self) -> list[str]:
        if self.mode == "serial":
            return [f"execution: serial (one pass): {self.reason}"]
        return [
            f"execution: {len(self.chunks)} chunk(s) on {self.workers} worker process(es) of {self.worker_cores} "
            f"core(s), the main process from segment {self.tail_first}: {self.reason}",
            f"chunk decode overlap: {self.overlap:.1%} of the video (keyframes before chunk starts)",
            f"a chunk's x264 starts its VBV buffer {MID_STREAM_VBV_INIT:.0%} full (vbv-init; a stream's start: 90%)",
        ]


def top_rung_share(ladder: Ladder) -> float:
    """The largest rung's share of the ladder's pixel rate (the serial run's critical path)."""
    costs = [r.width * r.height * float(r.fps) for r in ladder.rungs]
    return max(costs) / sum(costs) if costs and sum(costs) > 0 else 1.0


def plan_execution(
    ladder: Ladder,
    *,
    mode: ExecutionMode,
    cores: int,
    segments: int,
    segment_s: float,
    keyframes_s: Sequence[float] | None,
    covered: Sequence[Chunk] = (),
    workers: int | None = None,
    memory_bytes: int | None = None,
) -> ExecutionPlan:
    """Serial or chunks for a run of ``segments`` segments on ``cores`` cores.

    ``keyframes_s``: the source's keyframe times from its index (None: no
    index; the overlap is then taken as one segment per chunk). ``covered``:
    segment ranges stored already (checkpoint records), never planned again.
    ``workers`` forces the number of worker processes; ``memory_bytes``
    bounds it (``WORKER_MEMORY_BYTES`` each).
    """
    share = top_rung_share(ladder)
    critical = share * cores
    if mode == "serial":
        return ExecutionPlan(mode="serial", reason="asked for")
    todo = _uncovered(segments, covered)
    if sum(c.segments for c in todo) < 3:
        return ExecutionPlan(mode="serial", reason="too little left to encode to split")
    if mode == "auto" and critical <= X264_SCALING_THREADS:
        return ExecutionPlan(
            mode="serial",
            reason=(
                f"the largest rung ({share:.0%} of the work) needs {critical:.1f} of {cores} core(s), within x264's "
                f"{X264_SCALING_THREADS} useful frame threads: one ladder keeps the budget busy for less CPU"
            ),
        )
    worker_cores = max(1, min(cores, math.floor(X264_SCALING_THREADS / share)))
    count = workers if workers is not None else max(1, cores // worker_cores)
    if memory_bytes is not None:
        count = max(1, min(count, memory_bytes // WORKER_MEMORY_BYTES))
    # The workers' chunks come in whole rounds (as many for each worker), and
    # one more is the main process's: it runs beside them from the start.
    chunks = _split(todo, count * (CHUNKS_PER_WORKER if count > 1 else 1) + 1)
    overlap = _overlap(chunks, segment_s, segments, keyframes_s)
    while overlap > MAX_OVERLAP and len(chunks) > 2:
        chunks = _split(todo, max(2, len(chunks) // 2))
        overlap = _overlap(chunks, segment_s, segments, keyframes_s)
    if overlap > MAX_OVERLAP and mode == "auto":
        return ExecutionPlan(
            mode="serial",
            reason=f"keyframes too far apart: every chunk would decode {overlap:.0%} of the video again",
        )
    tail = chunks[-1]
    why = (
        "asked for"
        if mode == "chunks"
        else (
            f"the largest rung ({share:.0%} of the work) would need {critical:.1f} frame threads, more than x264's "
            f"{X264_SCALING_THREADS} useful ones"
        )
    )
    return ExecutionPlan(
        mode="chunks",
        reason=why,
        workers=min(count, max(1, len(chunks) - 1)),
        worker_cores=worker_cores if workers is None else max(1, cores // max(1, count)),
        chunks=tuple(chunks[:-1]),
        tail_first=tail.first,
        overlap=overlap,
    )


def _uncovered(segments: int, covered: Sequence[Chunk]) -> list[Chunk]:
    """The runs of segments no record covers, in order."""
    done = [False] * segments
    for chunk in covered:
        for index in range(max(0, chunk.first), min(segments, chunk.end)):
            done[index] = True
    runs: list[Chunk] = []
    start: int | None = None
    for index, stored in enumerate([*done, True]):
        if not stored and start is None:
            start = index
        elif stored and start is not None:
            runs.append(Chunk(start, index))
            start = None
    return runs


def _split(runs: Sequence[Chunk], count: int) -> list[Chunk]:
    """Cut the runs into ``count`` chunks of about equal length (whole segments; fewer when runs are short)."""
    total = sum(run.segments for run in runs)
    chunks: list[Chunk] = []
    for run in runs:
        pieces = max(1, min(run.segments, round(max(1, count) * run.segments / max(1, total))))
        bounds = [run.first + round(i * run.segments / pieces) for i in range(pieces + 1)]
        chunks.extend(Chunk(a, b) for a, b in itertools.pairwise(bounds) if b > a)
    return chunks


def _overlap(chunks: Sequence[Chunk], segment_s: float, segments: int, keyframes_s: Sequence[float] | None) -> float:
    """Share of the video decoded twice: from each chunk's keyframe to its start."""
    total = segments * segment_s
    if total <= 0:
        return 0.0
    lost = 0.0
    for chunk in chunks:
        if chunk.first == 0:
            continue
        start = chunk.first * segment_s
        if keyframes_s:
            at = bisect.bisect_right(keyframes_s, start + 1e-6) - 1
            lost += start - (keyframes_s[at] if at >= 0 else 0.0)
        else:
            lost += segment_s
    return lost / total


def keyframe_times(source: Source, info: SourceInfo) -> list[float] | None:
    """The video's keyframe times (seconds from its first index entry), or None without an index."""
    with open_input(source) as container:
        stream = container.streams[info.video.index]
        base = stream.time_base
        entries = [entry for entry in stream.index_entries if not entry.is_discard]
        if not entries or base is None:
            return None
        first, unit = entries[0].timestamp, Fraction(base)
        return sorted(float((entry.timestamp - first) * unit) for entry in entries if entry.is_keyframe)


__all__ = [
    "CHUNKS_PER_WORKER",
    "MAX_OVERLAP",
    "X264_SCALING_THREADS",
    "Chunk",
    "ExecutionMode",
    "ExecutionPlan",
    "keyframe_times",
    "plan_execution",
    "top_rung_share",
]
