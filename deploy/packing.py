"""Packing transcode jobs onto Batch instances: how many jobs of a given size fit a host.

A deployment question, not an encoding one: the engine plans threads for the
budget it is given; how many such budgets an instance should run is decided
here, from the host's vCPUs and memory. ``python -m deploy.packing`` prints the
hint for the machine it runs on.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Throughput mode packs jobs of this many vCPUs onto an instance: at 2 vCPUs
# the ladder keeps both cores ~97% busy (FACTS: one-process ladder on 2 vCPUs),
# while bigger jobs lose time to serial stages and pipeline fill/drain
# (20-50% of wall time on 16 cores). On Graviton a vCPU is a core (no SMT).
THROUGHPUT_JOB_VCPUS = 2
# Memory a 2-vCPU 1080p job is given when packing: the ffmpeg CLI ladder peaks
# at ~540 MiB RSS (FACTS); the rest is an assumed margin for 4K sources and
# upload buffers, not a measurement.
THROUGHPUT_JOB_MEMORY_MIB = 2048


def jobs_per_instance(host_vcpus: int, *, host_memory_mib: int | None = None) -> tuple[int, str]:
    """How many throughput-mode jobs (``THROUGHPUT_JOB_VCPUS`` each) fit on a host, and why."""
    by_cpu = max(1, host_vcpus // THROUGHPUT_JOB_VCPUS)
    reason = f"{host_vcpus} vCPU / {THROUGHPUT_JOB_VCPUS} vCPU per job = {by_cpu}"
    if host_memory_mib is not None:
        by_memory = max(1, host_memory_mib // THROUGHPUT_JOB_MEMORY_MIB)
        reason += f"; {host_memory_mib} MiB / {THROUGHPUT_JOB_MEMORY_MIB} MiB per job = {by_memory}"
        by_cpu = min(by_cpu, by_memory)
    return by_cpu, reason


def read_memory_mib(meminfo_path: Path = Path("/proc/meminfo")) -> int | None:
    """MemTotal in MiB (the host's, as a container sees it), or None."""
    for line in _read(meminfo_path).splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) // 1024
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def main() -> int:
    vcpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    jobs, why = jobs_per_instance(vcpus, host_memory_mib=read_memory_mib())
    print(f"~{jobs} job(s) of {THROUGHPUT_JOB_VCPUS} vCPU per instance: {why}")
    return 0


__all__ = ["THROUGHPUT_JOB_MEMORY_MIB", "THROUGHPUT_JOB_VCPUS", "jobs_per_instance", "read_memory_mib"]

if __name__ == "__main__":
    sys.exit(main())
