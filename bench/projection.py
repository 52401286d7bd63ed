"""``python -m bench.projection SOURCE``: what time chunks cost, and the wall a bigger machine would see.

Runs the engine once with forced chunks (``--parallel chunks --workers 1``:
one chunk at a time beside the main process, so each chunk's cost is measured
without other chunks competing) and reads each chunk's CPU and wall from the
``--json`` result. The main process's own CPU (the audio, demuxing past the
workers' video, merging their viewer taps, publishing, the last chunk) is the
serial part.

The projection for N vCPUs is a model, not a measurement (this machine has
:func:`os.cpu_count` cores). The main process's CPU is split into its last
chunk, costed at the workers' measured CPU per segment, and the rest, its
fixed part M (the audio decoded and encoded once for the whole timeline, the
workers' video demuxed past, the viewer taps merged, the publishing). All chunks, the main process's included, cost C
(that CPU per segment times every segment). The fixed part keeps at most
``MAIN_PARALLELISM`` cores busy; the chunks share the rest; the wall is
whichever finishes last::

    T(N) = max(M / min(N, MAIN_PARALLELISM), (C + M) / N)
    efficiency(N) = (C + M) / (N * T(N))

Where the first term wins, the main process's fixed part limits the run. The
model ignores how finely a short source can be cut (a 60 s source has 15
segments): it is meant for lectures of tens of minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Cores the main process can keep busy: decoder frame threads, the audio, the last chunk's rungs.
MAIN_PARALLELISM = 4


@dataclass(frozen=True, slots=True)
class Projection:
    cores: int
    wall_s: float
    efficiency: float
    limited_by: str  # "main process" or "chunks"


def project(chunks_cpu_s: float, main_cpu_s: float, cores: int) -> Projection:
    """The model's wall and efficiency on ``cores`` (see the module docstring)."""
    main = main_cpu_s / min(cores, MAIN_PARALLELISM)
    spread = (chunks_cpu_s + main_cpu_s) / cores
    wall = max(main, spread)
    return Projection(
        cores=cores,
        wall_s=wall,
        efficiency=(chunks_cpu_s + main_cpu_s) / (cores * wall) if wall > 0 else 0.0,
        limited_by="main process" if main >= spread else "chunks",
    )


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
    source, ladder, renditions = result["source"], result["ladder"], result["renditions"]
    assert isinstance(source, dict) and isinstance(ladder, dict) and isinstance(renditions, list)
    duration = float(source["duration_s"])
    segment_s = float(ladder["segment_s"])
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
        "projection (a model, see bench/projection.py):",
    ]
    for n in cores:
        p = project(per_segment * total, fixed, n)
        lines.append(
            f"  {n:>3} vCPU: wall {p.wall_s:6.1f} s, speed {duration / p.wall_s:5.2f}x realtime, "
            f"efficiency {p.efficiency:.2f}, limited by the {p.limited_by}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", type=Path)
    parser.add_argument("--preset", default="veryfast")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        result = measure(args.source, preset=args.preset, out=Path(scratch) / "ladder")
    print("\n".join(report(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
