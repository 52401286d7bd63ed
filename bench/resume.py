"""``python -m bench.resume SOURCE``: what a rerun after ``kill -9`` costs against an uninterrupted run.

Runs ``transcode`` with a record every ``--checkpoint-seconds``, kills it
(SIGKILL) once ``--kill-at`` of the records it will write exist, reruns it
into the same output and prints the rerun's kept segments, CPU and wall next
to an uninterrupted run's. CPU is each process's own (``RUSAGE_CHILDREN``).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list[str]) -> tuple[dict[str, Any], float, float]:
    cpu, wall = _cpu(), time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result, _cpu() - cpu, time.monotonic() - wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", type=Path)
    parser.add_argument("--checkpoint-seconds", type=float, default=8.0)
    parser.add_argument("--kill-at", type=float, default=0.6, help="share of the records to wait for")
    parser.add_argument("--segment-seconds", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        whole, out = Path(scratch) / "whole", Path(scratch) / "resumed"
        base = [sys.executable, "-m", "transcoder", str(args.source), "--json", "-q"]
        base += ["--checkpoint-seconds", str(args.checkpoint_seconds), "--segment-seconds", str(args.segment_seconds)]
        reference, ref_cpu, ref_wall = _run([*base, "-o", str(whole)])
        video = next(r for r in reference["renditions"] if r["kind"] == "video")
        spans = len(video["segments"]) * args.segment_seconds / args.checkpoint_seconds
        wanted = max(1, math.ceil(spans * args.kill_at))
        process = subprocess.Popen([*base, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None:
            if len(list((out / ".checkpoint").glob("span-*.json"))) >= wanted:
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        process.wait()
        if process.returncode != -signal.SIGKILL:
            print("the run ended before the kill")
            return 1
        resumed, cpu, wall = _run([*base, "-o", str(out)])
    kept, total = int(resumed["resumed_segments"]), len(video["segments"])
    print(f"uninterrupted: CPU {ref_cpu:.1f} s, wall {ref_wall:.1f} s")
    print(
        f"killed with {wanted} record(s); rerun kept {kept} of {total} segments per rendition "
        f"({(total - kept) / total:.0%} encoded again): CPU {cpu:.1f} s ({cpu / ref_cpu:.2f}x), "
        f"wall {wall:.1f} s ({wall / ref_wall:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
