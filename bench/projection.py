"""``python -m bench.projection SOURCE``: what time chunks cost, and the wall a bigger machine would see.

Runs the engine once with forced chunks (``--parallel chunks --workers 1``:
one chunk at a time beside the main process, so each chunk's cost is measured
without other chunks competing) and reads each chunk's CPU and wall from the
``--json`` result. The main process's own CPU (the audio, demuxing past the
workers' video, merging their viewer taps, publishing, the last chunk) is the
serial part.

The projection for N vCPUs is a model, not a measurement (this machine has
:func:`os.cpu_count` cores). Costs: every segment costs the workers' measured
CPU per segment; the main process's fixed part M (the audio, decoding only
what it must, merging the viewer taps, publishing) is its CPU less its own
chunk at that rate. The plan is the engine's own (:func:`transcoder.chunks.plan_execution`
for N cores and the ladder): serial, or W workers of K cores each and chunks.

* Serial: the largest rung keeps at most x264's 4 useful frame threads busy:
  ``T = max((C + M) / N, share * (C + M) / 4)`` (C: all segments' CPU).
* Chunks: the workers take the chunks in order, each as soon as it is free,
  a chunk taking its CPU / K; the main process runs its own chunk plus M on
  K cores beside them; all of it shares N cores:
  ``T = max(the last worker's finish, (own chunk + M) / K, (C + M) / N)``.

``efficiency(N) = (C + M) / (N * T)``. Whichever term of T wins limits the run:
the chunks' granularity (the last worker's queue), the main process, or the
cores themselves (all busy). Printed for the measured source and for a one-hour
lecture at the same cost per segment; worker start-up and keyframe lead-ins
are left out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from transcoder.chunks import X264_SCALING_THREADS, plan_execution, top_rung_share
from transcoder.models import Ladder, Rung

LECTURE_S = 3600.0  # the second projection: an hour-long lecture at the measured cost per segment


@dataclass(frozen=True, slots=True)
class Projection:
    cores: int
    wall_s: float
    efficiency: float
    limited_by: str  # "the cores", "the chunks' granularity", "the main process" or "one ladder's threads"
    execution: str  # the plan's first line


def project(ladder: Ladder, *, per_segment_cpu_s: float, fixed_cpu_s: float, segments: int, cores: int) -> Projection:
    """The model's wall and efficiency of the engine's own plan on ``cores`` (see the module docstring)."""
    # Keyframes at every segment start (the engine's own GOPs, as in the bench's sources): no lead-in.
    keyframes = [float(i * ladder.segment_s) for i in range(segments)]
    plan = plan_execution(
        ladder, mode="auto", cores=cores, segments=segments, segment_s=ladder.segment_s, keyframes_s=keyframes
    )
    total = per_segment_cpu_s * segments + fixed_cpu_s
    spread = total / cores
    if plan.mode == "serial":
        threads = top_rung_share(ladder) * total / X264_SCALING_THREADS
        wall, limited = max(spread, threads), "the cores" if spread >= threads else "one ladder's threads"
    else:
        free = [0.0] * plan.workers  # when each worker is next free
        for chunk in plan.chunks:
            at = min(range(len(free)), key=free.__getitem__)
            free[at] += per_segment_cpu_s * chunk.segments / plan.worker_cores
        main = (per_segment_cpu_s * (segments - plan.tail_first) + fixed_cpu_s) / plan.worker_cores
        terms = {"the cores": spread, "the chunks' granularity": max(free), "the main process": main}
        limited = max(terms, key=terms.__getitem__)
        wall = terms[limited]
    return Projection(
        cores=cores,
        wall_s=wall,
        efficiency=total / (cores * wall) if wall > 0 else 0.0,
        limited_by=limited,
        execution=plan.describe()[0],
    )


def ladder_of(result: dict[str, object]) -> Ladder:
    """The planned ladder of a ``--json`` result (every rung, pruned ones too: the engine plans with them)."""
    settings = result["ladder"]
    assert isinstance(settings, dict)
    rungs = tuple(
        Rung(
            name=str(r["name"]),
            width=int(r["width"]),
            height=int(r["height"]),
            fps=Fraction(str(r["fps"])),
            bitrate_kbps=int(r["bitrate_kbps"]),
            maxrate_kbps=int(r["maxrate_kbps"]),
            bufsize_kbps=int(r["bufsize_kbps"]),
        )
        for r in settings["rungs"]
    )
    segment_s = float(settings["segment_s"])
    return Ladder(rungs=rungs, audio=(), gop_s=float(settings.get("gop_s", segment_s)), segment_s=segment_s)


def measure(source: Path, *, preset: str, out: Path) -> dict[str, object]:
    command = [sys.executable, "-m", "transcoder", str(source), "-o", str(out), "--preset", preset]
    command += ["--parallel", "chunks", "--workers", "1", "--json", "-q"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def report(result: dict[str, object], *, cores: tuple[int, ...] = (4, 16, 64)) -> list[str]:
    chunks = result["chunks"]
    assert isinstance(chunks, list) and chunks, "the run had no chunks"
    total_cpu = float(result["cpu_s"])  # type: ignore[arg-type]
    chunk_cpu = sum(float(c["cpu_s"]) for c in chunks)
    settings, renditions = result["ladder"], result["renditions"]
    assert isinstance(settings, dict) and isinstance(renditions, list)
    segment_s = float(settings["segment_s"])
    in_chunks = sum(int(c["end"]) - int(c["first"]) for c in chunks)
    total = max(len(r["segments"]) for r in renditions if r["kind"] == "video")
    per_segment = chunk_cpu / in_chunks
    fixed = max(0.0, total_cpu - chunk_cpu - per_segment * (total - in_chunks))
    lines = [
        f"execution: {result['execution']}",
        f"chunks: {len(chunks)} ({in_chunks} of {total} segments), CPU {chunk_cpu:.1f} s; "
        f"median per chunk {statistics.median(float(c['cpu_s']) for c in chunks):.2f} s CPU, "
        f"{statistics.median(float(c['wall_s']) for c in chunks):.2f} s wall; peak RSS per worker "
        f"{max(int(c.get('peak_rss_bytes', 0)) for c in chunks) / 2**20:.0f} MiB at most",
        f"throughput: {len(chunks) / chunk_cpu:.3f} chunks per core-second, "
        f"{in_chunks * segment_s / chunk_cpu:.3f} s of video per core-second in chunks",
        f"main process: CPU {total_cpu - chunk_cpu:.1f} s of {total_cpu:.1f} s; its fixed part (the serial part: "
        f"audio, demuxing past the workers' video, merging, publishing) {fixed:.1f} s, its own chunk the rest",
        "projection (a model of the engine's own plan, see bench/projection.py):",
    ]
    ladder = ladder_of(result)
    lecture = max(total, round(LECTURE_S / segment_s))
    for label, count in ((f"this source, {total} segments", total), (f"a 1 h lecture, {lecture} segments", lecture)):
        lines.append(f"  {label}:")
        for n in cores:
            p = project(ladder, per_segment_cpu_s=per_segment, fixed_cpu_s=fixed, segments=count, cores=n)
            seconds = count * segment_s
            lines.append(
                f"    {n:>3} vCPU: wall {p.wall_s:7.1f} s, speed {seconds / p.wall_s:6.2f}x realtime, "
                f"efficiency {p.efficiency:.2f}, limited by {p.limited_by}; {p.execution}"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", type=Path)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--save", type=Path, help="also write the run's --json result here")
    parser.add_argument("--result", type=Path, help="project from this saved result instead of running")
    args = parser.parse_args()
    if args.result is not None:
        result = json.loads(args.result.read_text())
    else:
        with tempfile.TemporaryDirectory() as scratch:
            result = measure(args.source, preset=args.preset, out=Path(scratch) / "ladder")
    if args.save is not None:
        args.save.write_text(json.dumps(result, indent=1))
    print("\n".join(report(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
