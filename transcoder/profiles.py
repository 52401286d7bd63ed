"""The CPU budget of a run and the thread plan derived from it.

x264's and FFmpeg's "auto" thread counts look at the host's CPUs, not the job's
share of them: on a 2-vCPU container on a 64-core host that oversubscribes
badly. The budget therefore comes from an explicit override, then the cgroup
quota, then the affinity mask, never from ``os.cpu_count()`` alone.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from .models import Ladder


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuBudget:
    """How many cores this run may keep busy, and where that number came from."""

    cores: int
    source: str  # "override", "cgroup v2 cpu.max", "cgroup v1 quota", "affinity"


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadPlan:
    """Thread counts for every FFmpeg context of a run.

    ``encoder_threads`` maps rung name to x264 frame threads. Rungs already
    run in parallel with each other, so a rung gets more than one frame thread
    only where its share of the work exceeds one core.
    """

    budget: CpuBudget
    decoder_threads: int
    encoder_threads: dict[str, int]
    scaler_threads: int = 1  # one swscale thread per rung: rungs scale in parallel

    def describe(self) -> list[str]:
        lines = [f"cpu budget: {self.budget.cores} core(s) from {self.budget.source}"]
        lines.append(f"decoder: {self.decoder_threads} frame thread(s)")
        for name, count in self.encoder_threads.items():
            lines.append(f"x264 {name}: {count} frame thread(s)")
        return lines


def detect_budget(override: int | None = None, *, cgroup_root: Path = Path("/sys/fs/cgroup")) -> CpuBudget:
    """The run's CPU budget: override, cgroup quota, then the affinity mask."""
    if override is not None:
        return CpuBudget(cores=max(1, override), source="override")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores, source = quota
        return CpuBudget(cores=max(1, min(affinity, math.ceil(cores - 1e-9))), source=source)
    return CpuBudget(cores=max(1, affinity), source="affinity")


def _cgroup_quota(root: Path) -> tuple[float, str] | None:
    try:
        text = (root / "cpu.max").read_text().split()
    except OSError:
        text = []
    if len(text) == 2 and text[0] != "max":
        try:
            return int(text[0]) / int(text[1]), "cgroup v2 cpu.max"
        except (ValueError, ZeroDivisionError):
            pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota > 0 and period > 0:
        return quota / period, "cgroup v1 quota"
    return None


def plan_threads(ladder: Ladder, budget: CpuBudget) -> ThreadPlan:
    """Split the budget: x264 threads per rung in proportion to its pixel rate."""
    costs = {r.name: r.width * r.height * float(r.fps) for r in ladder.rungs}
    total = sum(costs.values()) or 1.0
    # Encoding is ~70% of the work; a rung whose share of that exceeds one
    # core gets frame threads to match, everything else runs single-threaded
    # (frame threads cost a little compression and memory each).
    encode_cores = budget.cores * 0.8
    encoder_threads = {name: max(1, round(encode_cores * cost / total)) for name, cost in costs.items()}
    return ThreadPlan(
        budget=budget,
        decoder_threads=max(1, min(budget.cores, 8)),
        encoder_threads=encoder_threads,
    )
