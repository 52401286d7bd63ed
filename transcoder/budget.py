"""The CPU budget of a run: how many cores it may keep busy, and where that number came from.

x264's and FFmpeg's "auto" thread counts look at the host's CPUs, not the job's
share of them: on a 2-vCPU container on a 64-core host that oversubscribes
badly. The budget therefore comes from the cgroup quota, an explicit override
(never above the quota), then the affinity mask; never from the host's CPU
count. On AWS Batch *on EC2* a job's vCPUs become CPU *shares* (a relative
weight, not a limit: see ``deploy/jobdef.py``), so there is no quota to find
there and the caller must pass the job's vCPUs as the override.

Every file read takes its path as an argument (tests feed sample cgroup trees);
nothing here reads the environment.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuBudget:
    """How many cores this run may keep busy, and where that number came from."""

    cores: int
    source: str  # "override", "cgroup v2 cpu.max", "cgroup v1 quota", "affinity"
    detail: str = ""  # why: the files and numbers behind ``cores``


@dataclass(frozen=True, slots=True)
class _Quota:
    cpus: float
    source: str
    detail: str


def _affinity() -> tuple[int, str]:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)), "affinity mask"
    # No affinity API (macOS, Windows): a developer machine, never a Batch job.
    return os.cpu_count() or 1, "os.cpu_count() (no affinity API on this OS)"


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _own_cgroups(proc_self_cgroup: Path) -> dict[str, str]:
    """Controller -> this process's cgroup path ("" is the v2 unified hierarchy)."""
    text = _read(proc_self_cgroup) or ""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if not controllers:
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _chain(base: Path, rel: str) -> list[Path]:
    """``base/rel`` and its ancestors up to ``base``: a limit on any of them applies.

    Inside a container with its own cgroup namespace ``rel`` is "/" and
    ``base`` is already the container's cgroup; on a host it is a real path.
    """
    rel = rel.strip("/")
    here = base / rel if rel else base
    if not rel or not here.is_dir():
        return [base]
    chain = [here]
    while here != base:
        here = here.parent
        chain.append(here)
    return chain


def _v2_quota(root: Path, rel: str) -> _Quota | None:
    best: _Quota | None = None
    for directory in _chain(root, rel):
        fields = (_read(directory / "cpu.max") or "").split()
        if len(fields) != 2 or fields[0] == "max":
            continue
        quota, period = _int(fields[0]), _int(fields[1])
        if quota is None or period is None or quota <= 0 or period <= 0:
            continue
        cpus = quota / period
        if best is None or cpus < best.cpus:
            where = directory / "cpu.max"
            best = _Quota(cpus, "cgroup v2 cpu.max", f"{where}: {quota}/{period} = {cpus:.2f} CPU")
    return best


_V1_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def _v1_quota(root: Path, rel: str) -> _Quota | None:
    best: _Quota | None = None
    for mount in _V1_MOUNTS:
        base = root / mount
        if not base.is_dir():
            continue
        for directory in _chain(base, rel):
            quota = _int(_read(directory / "cpu.cfs_quota_us") or "")
            period = _int(_read(directory / "cpu.cfs_period_us") or "")
            if quota is None or period is None or quota <= 0 or period <= 0:
                continue  # -1: no quota
            cpus = quota / period
            if best is None or cpus < best.cpus:
                best = _Quota(
                    cpus, "cgroup v1 quota", f"{directory}/cpu.cfs_quota_us {quota} / period {period} = {cpus:.2f} CPU"
                )
        if best is not None:
            return best
    return None


def _soft_share(root: Path, own: dict[str, str]) -> str:
    """A note on CPU shares/weight: what ECS (and so Batch on EC2) sets instead of a quota."""
    for directory in _chain(root, own.get("", "")):
        weight = _read(directory / "cpu.weight")
        if weight is not None:
            return f"cgroup v2 cpu.weight {weight} is a relative share, not a limit"
    for mount in _V1_MOUNTS:
        for directory in _chain(root / mount, own.get("cpu", "")):
            shares = _int(_read(directory / "cpu.shares") or "")
            if shares is not None:
                return (
                    f"cgroup v1 cpu.shares {shares} (= {shares / 1024:g} vCPU as ECS/Batch count them) "
                    "is a relative share, not a limit"
                )
    return ""


def _quota(cgroup_root: Path, own: dict[str, str]) -> _Quota | None:
    return _v2_quota(cgroup_root, own.get("", "")) or _v1_quota(cgroup_root, own.get("cpu", ""))


def detect_budget(
    override: int | None = None,
    *,
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    affinity: int | None = None,
    proc_self_cgroup: Path = Path("/proc/self/cgroup"),
) -> CpuBudget:
    """The run's CPU budget: the cgroup quota, an override (never above the quota), then the affinity mask.

    A fractional quota rounds up (1.5 CPUs -> 2 threads' worth: the kernel
    throttles, it does not fail). ``affinity`` replaces the process's mask
    (tests simulate a 64-core host with it).
    """
    if affinity is None:
        affinity, affinity_source = _affinity()
    else:
        affinity_source = "affinity mask"
    affinity = max(1, affinity)
    own = _own_cgroups(proc_self_cgroup)
    quota = _quota(cgroup_root, own)
    quota_cores = max(1, math.ceil(quota.cpus - 1e-9)) if quota is not None else None
    if override is not None:
        wanted = max(1, override)
        if quota is not None and quota_cores is not None and quota_cores < wanted:
            return CpuBudget(
                cores=quota_cores,
                source=quota.source,
                detail=f"override {wanted} exceeds the hard limit: {quota.detail}",
            )
        detail = "set explicitly (job vCPUs or --threads)"
        if quota is not None:
            detail += f"; within {quota.detail}"
        return CpuBudget(cores=wanted, source="override", detail=detail)
    if quota is not None and quota_cores is not None:
        if quota_cores <= affinity:
            rounded = f", rounded up to {quota_cores}" if quota_cores != quota.cpus else ""
            return CpuBudget(cores=quota_cores, source=quota.source, detail=quota.detail + rounded)
        return CpuBudget(
            cores=affinity,
            source="affinity",
            detail=f"{affinity_source} has {affinity} CPU(s), fewer than {quota.detail}",
        )
    share = _soft_share(cgroup_root, own)
    detail = f"no cgroup CPU quota; {affinity_source} has {affinity} CPU(s)"
    if share:
        detail += f"; {share} (on Batch/EC2 pass the job's vCPUs as the override)"
    return CpuBudget(cores=affinity, source="affinity", detail=detail)


__all__ = ["CpuBudget", "detect_budget"]
