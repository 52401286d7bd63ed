"""The platform profile of a run: CPU, CPU budget, and the thread plan derived from them.

x264's and FFmpeg's "auto" thread counts look at the host's CPUs, not the job's
share of them: on a 2-vCPU container on a 64-core host that oversubscribes
badly. The budget therefore comes from the cgroup quota, an explicit override
(never above the quota), then the affinity mask; never from the host's CPU
count. On AWS Batch *on EC2* a job's vCPUs become CPU *shares* (a relative
weight, not a limit: see ``deploy/jobdef.py``), so there is no quota to find
there and the caller must pass the job's vCPUs as the override.

Everything here that reads a file takes its path as an argument (tests feed
sample ``/proc/cpuinfo`` and cgroup trees); nothing reads the environment.

Where the profile could differ per platform but no measurement says it should
(x264 preset, extra x264 parameters) it does not, and says so in its reasons.
"""

from __future__ import annotations

import math
import os
import platform as _platform
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from .models import Ladder

# --- CPU identification -------------------------------------------------------------------------------------------

# Arm's MIDR implementer and part numbers, as /proc/cpuinfo prints them ("CPU implementer", "CPU part").
_ARM_IMPLEMENTERS = {
    0x41: "Arm",
    0x42: "Broadcom",
    0x48: "HiSilicon",
    0x4E: "NVIDIA",
    0x51: "Qualcomm",
    0x61: "Apple",
    0xC0: "Ampere",
}
# AWS builds Graviton from Arm Ltd's cores: the part number names the generation.
# (Other vendors' chips use the same cores, e.g. Ampere Altra is a Neoverse N1:
# "graviton2" here means "the core Graviton2 has", which is what matters for x264.)
_GRAVITON_PARTS = {
    0xD0C: ("graviton2", "Neoverse N1"),
    0xD40: ("graviton3", "Neoverse V1"),
    0xD4F: ("graviton4", "Neoverse V2"),
}
_ARM_PARTS = {
    0xD03: "Cortex-A53",
    0xD07: "Cortex-A57",
    0xD08: "Cortex-A72",  # Graviton (first generation, A1 instances)
    0xD0B: "Cortex-A76",
    0xD49: "Neoverse N2",
    **{part: core for part, (_, core) in _GRAVITON_PARTS.items()},
}
# SIMD features x264 has code paths for (it picks them at run time; listed for the reader of --plan).
_ARM_SIMD = ("asimd", "sve", "sve2", "asimddp", "i8mm")
_X86_SIMD = ("sse4_2", "avx", "avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512vl")

PLATFORMS = ("graviton2", "graviton3", "graviton4", "arm", "x86", "unknown")


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuInfo:
    """What the CPU is, as far as encoding cares.

    ``processors`` counts the host's CPUs listed in ``/proc/cpuinfo`` (a
    container sees the host's list): a hint for packing jobs onto an
    instance, never a thread budget.
    """

    arch: str  # "aarch64", "x86_64", ... (platform.machine() spelling, arm64/amd64 normalised)
    vendor: str  # "Arm", "Ampere", "GenuineIntel", "AuthenticAMD", or "" if unknown
    model: str  # "Neoverse V1", "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", ...
    platform: str  # one of PLATFORMS
    cpu_part: str = ""  # Arm "CPU part", e.g. "0xd40"
    features: tuple[str, ...] = ()  # the SIMD features of interest to x264 that the CPU reports
    processors: int = 0

    @property
    def is_graviton(self) -> bool:
        return self.platform.startswith("graviton")

    def describe(self) -> str:
        parts = [self.platform]
        if self.is_graviton:
            parts.append(f"({self.model}, CPU part {self.cpu_part})")
        elif self.model:
            parts.append(f"({self.vendor + ' ' if self.vendor and self.vendor not in self.model else ''}{self.model})")
        text = " ".join(parts) + f", {self.arch or 'unknown arch'}"
        if self.features:
            text += f", SIMD: {' '.join(self.features)}"
        if self.processors:
            text += f", host lists {self.processors} CPU(s)"
        return text


def _normalise_arch(machine: str) -> str:
    machine = machine.lower()
    if machine in {"arm64", "aarch64", "armv8", "armv8l"}:
        return "aarch64"
    if machine in {"amd64", "x86_64", "x64"}:
        return "x86_64"
    return machine


def _cpuinfo_blocks(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip().lower()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


def _int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def parse_cpuinfo(text: str, machine: str = "") -> CpuInfo:
    """Identify the CPU from the text of ``/proc/cpuinfo`` (pure: tests feed samples).

    ``machine`` (``platform.machine()``) decides the architecture when the
    text does not (empty or unreadable cpuinfo).
    """
    info = _parse_cpuinfo(text, machine)
    machine_arch = _normalise_arch(machine)
    if machine_arch in {"aarch64", "x86_64"} and info.arch in {"aarch64", "x86_64"} and machine_arch != info.arch:
        # qemu-user (or another emulator) shows the host's /proc/cpuinfo: the
        # code runs as ``machine`` on a CPU nothing here can see.
        return CpuInfo(
            arch=machine_arch,
            vendor="",
            model=f"emulated ({info.arch} host: {info.model or info.vendor or 'unknown'})",
            platform="arm" if machine_arch == "aarch64" else "x86",
            processors=info.processors,
        )
    if machine_arch and machine_arch != info.arch:
        return replace(info, arch=machine_arch)  # e.g. armv7l, i686: 32-bit code on a 64-bit CPU
    return info


def _parse_cpuinfo(text: str, machine: str) -> CpuInfo:
    blocks = _cpuinfo_blocks(text)
    processors = sum(1 for b in blocks if _int(b.get("processor", "")) is not None)
    cpu_blocks = [b for b in blocks if "cpu part" in b or "vendor_id" in b or "model name" in b] or blocks
    first = cpu_blocks[0] if cpu_blocks else {}
    arch = _normalise_arch(machine)
    if "cpu implementer" in first or "cpu part" in first:
        implementer = _int(first.get("cpu implementer", ""))
        vendor = _ARM_IMPLEMENTERS.get(implementer, first.get("cpu implementer", "")) if implementer is not None else ""
        parts = Counter(b.get("cpu part", "").lower() for b in cpu_blocks if "cpu part" in b)
        part_text = parts.most_common(1)[0][0] if parts else ""
        part = _int(part_text)
        flags = set(first.get("features", "").split())
        features = tuple(f for f in _ARM_SIMD if f in flags)
        model = _ARM_PARTS.get(part, f"part {part_text}") if implementer == 0x41 and part is not None else ""
        if not model and part_text:
            model = f"{vendor or 'unknown implementer'} part {part_text}"
        platform = "arm"
        # Graviton only when every core is that part (a big.LITTLE phone is not a Graviton).
        if implementer == 0x41 and part in _GRAVITON_PARTS and len(parts) == 1:
            platform = _GRAVITON_PARTS[part][0]
        return CpuInfo(
            arch="aarch64",
            vendor=vendor,
            model=model,
            platform=platform,
            cpu_part=part_text,
            features=features,
            processors=processors,
        )
    if "vendor_id" in first:
        flags = set(first.get("flags", "").split())
        return CpuInfo(
            arch="x86_64",
            vendor=first.get("vendor_id", ""),
            model=first.get("model name", ""),
            platform="x86",
            features=tuple(f for f in _X86_SIMD if f in flags),
            processors=processors,
        )
    platform = {"aarch64": "arm", "x86_64": "x86"}.get(arch, "unknown")
    return CpuInfo(arch=arch, vendor="", model="", platform=platform, processors=processors)


def detect_cpu(cpuinfo_path: Path = Path("/proc/cpuinfo"), machine: str | None = None) -> CpuInfo:
    """The CPU this process runs on (``/proc/cpuinfo``; ``platform.machine()`` if that is unreadable)."""
    try:
        text = cpuinfo_path.read_text(errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text, _platform.machine() if machine is None else machine)


# --- CPU budget ---------------------------------------------------------------------------------------------------


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


def cgroup_cpu_quota(
    cgroup_root: Path = Path("/sys/fs/cgroup"), *, proc_self_cgroup: Path = Path("/proc/self/cgroup")
) -> tuple[float, str, str] | None:
    """The hard CPU limit of this process's cgroup: (CPUs, source, detail), or None if unlimited.

    cgroup v2 ``cpu.max`` first, then the v1 CFS quota (``cpu/`` or
    ``cpu,cpuacct/``). The tightest limit on the cgroup or its ancestors wins.
    """
    quota = _quota(cgroup_root, _own_cgroups(proc_self_cgroup))
    return None if quota is None else (quota.cpus, quota.source, quota.detail)


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


# --- Platform profile ---------------------------------------------------------------------------------------------

# The engine's default x264 preset (EncoderSettings.preset). Every platform
# gets the same: a different preset per CPU would need a speed/quality
# measurement on that CPU, and there is none here.
DEFAULT_PRESET = "veryfast"
# Throughput mode packs jobs of this many vCPUs onto an instance: at 2 vCPUs
# the ladder keeps both cores ~97% busy (FACTS: one-process ladder on 2 vCPUs),
# while bigger jobs lose time to serial stages and pipeline fill/drain
# (20-50% of wall time on 16 cores). On Graviton a vCPU is a core (no SMT).
THROUGHPUT_JOB_VCPUS = 2
# Memory a 2-vCPU 1080p job is given when packing: the ffmpeg CLI ladder peaks
# at ~540 MiB RSS (FACTS); the rest is an assumed margin for 4K sources and
# upload buffers, not a measurement.
THROUGHPUT_JOB_MEMORY_MIB = 2048


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformProfile:
    """What the platform means for the encoder, each choice with its reason."""

    cpu: CpuInfo
    budget: CpuBudget
    preset: str
    x264_params_extra: dict[str, str] = field(default_factory=dict)
    jobs_per_instance_hint: int = 1
    reasons: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        return [f"profile: {reason}" for reason in self.reasons]


def _simd_reason(cpu: CpuInfo) -> str:
    seen = f" (CPU reports: {' '.join(cpu.features)})" if cpu.features else ""
    if cpu.arch == "aarch64":
        return (
            "x264 extra params: none. x264 picks its NEON code (and SVE/SVE2 where the CPU has them: "
            f"Graviton3 sve, Graviton4 sve2) at run time{seen}; no measurement here says any "
            "parameter should differ from x86"
        )
    if cpu.arch == "x86_64":
        return f"x264 extra params: none. x264 picks its SSE/AVX2/AVX-512 code at run time{seen}"
    return "x264 extra params: none (unknown CPU; x264 detects what it can use at run time)"


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
    for line in (_read(meminfo_path) or "").splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) // 1024
    return None


def build_profile(
    budget: CpuBudget,
    *,
    cpu: CpuInfo | None = None,
    preset: str | None = None,
    host_memory_mib: int | None = None,
) -> PlatformProfile:
    """The platform profile for ``budget`` on ``cpu`` (detected when None)."""
    cpu = detect_cpu() if cpu is None else cpu
    reasons = [f"cpu: {cpu.describe()}"]
    budget_line = f"budget: {budget.cores} core(s) from {budget.source}"
    reasons.append(budget_line + (f": {budget.detail}" if budget.detail else ""))
    if preset is None:
        chosen = DEFAULT_PRESET
        reasons.append(
            f"x264 preset: {chosen} (the engine default) on every platform; no per-platform measurement "
            "justifies another; --preset overrides"
        )
    else:
        chosen = preset
        reasons.append(f"x264 preset: {chosen} as configured; the profile does not change it per platform")
    reasons.append(_simd_reason(cpu))
    host_vcpus = cpu.processors or budget.cores
    hint, why = jobs_per_instance(host_vcpus, host_memory_mib=host_memory_mib)
    per_core = "1 vCPU = 1 core, no SMT" if cpu.arch == "aarch64" else "on x86 a vCPU is usually a hyperthread"
    reasons.append(
        f"throughput mode: ~{hint} job(s) of {THROUGHPUT_JOB_VCPUS} vCPU per instance ({why}; {per_core}); "
        "small jobs keep their cores busiest"
    )
    return PlatformProfile(
        cpu=cpu,
        budget=budget,
        preset=chosen,
        x264_params_extra={},
        jobs_per_instance_hint=hint,
        reasons=tuple(reasons),
    )


# --- Thread plan --------------------------------------------------------------------------------------------------

# Where rungs have more than a core each, a rung gets frame threads for its
# full share of the budget (not only the ~70% of the work that is encoding), so
# that a stall elsewhere leaves it threads to fill the cores. (Where they fill
# the budget, see _ONE_THREAD_MIN_SHORT_SIDE and BACKGROUND_NICE below.)
_RUNG_SHARE = 1.0
# Decode is ~15% of the work: 8 frame threads keep up with budgets up to ~50
# cores; each more thread adds a frame of delay and a decoder context of memory.
_DECODER_THREAD_CAP = 8
_X264_THREAD_MAX = 128  # X264_THREAD_MAX in x264.h
# Every rung gets at least this many x264 frame threads (on budgets > 1),
# chosen by measurement, not by cost: on the 2-core bench (bench/NOTES.md) the
# 480p and 360p rungs, capped by their maxrate on grainy content, came out
# 0.12 dB PSNR-Y below the ffmpeg CLI's (x264's auto: 3 threads) at equal
# bytes with 1 thread, and 0.03/0.11 dB below with 2. An idle frame thread
# only waits; each costs a few frames of memory.
MIN_X264_THREADS = 3
# x264's threaded lookahead (sync-lookahead, by default bframes + 1 frames
# ahead in a thread of its own per encoder) overlaps the slice-type analysis
# with encoding inside one rung. Rungs already run side by side, so while the
# budget is no more than one core per rung that thread adds no parallelism:
# it holds bframes + 1 more frames per rung. Measured on 2 cores
# (bench/NOTES.md): peak RSS of the default 1080p ladder 578 -> 528 MiB, CPU
# within the noise, bytes the same. The lookahead thread's decisions also
# depend on timing; without it a lone 1080p encode repeated bit for bit.
_LOOKAHEAD_THREAD_MIN_CORES_PER_RUNG = 1.0
# When the rungs fill the budget (the condition above), frame threads add no
# parallelism across the ladder, only CPU: on the 2-core bench x264 spent
# ~7-11% more CPU with 3 frame threads per rung than with 1. So HD rungs (short
# side >= 720; no PSNR cost measured at 1 thread there) get only the threads
# their share of the run needs (decode takes ~15%, the rest is the rungs').
# The rungs below keep MIN_X264_THREADS for their PSNR (see above); they are
# ~17% of the default ladder's pixels, so their extra threads cost little.
_ONE_THREAD_MIN_SHORT_SIDE = 720
_DECODE_SHARE = 0.15
# ... and the largest rung becomes the critical path: one thread that needs
# about one core for the whole run. Under Linux's fair scheduler it would get
# only its per-thread share while a dozen other threads are runnable, fall
# behind, fill its queue and stall the decoder (1.74 of 2 cores busy, measured).
# The other rungs' threads therefore run at the lowest priority: they take
# the CPU the largest rung and the decoder leave (1.92 of 2 cores busy;
# wall 1.11x -> 1.01x the ffmpeg CLI's over 6 paired rounds, bench/NOTES.md).
# Niceness only orders threads within what the process gets: inside a Batch
# job's cgroup it does not change the job's share of the host.
BACKGROUND_NICE = 19


def x264_thread_cap(height: int) -> int:
    """x264's own cap for automatic frame threads: 2 macroblock rows per thread.

    (encoder.c: "Avoid too many threads as they don't improve performance and
    complicate VBV.")
    """
    return max(1, min(_X264_THREAD_MAX, (height + 15) // 16 // 2))


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadPlan:
    """Thread counts for every FFmpeg context of a run, each with its reason.

    ``encoder_threads`` maps rung name to x264 frame threads. Rungs already
    run in parallel with each other, so a rung gets more than one frame thread
    only where its share of the work exceeds one core.
    """

    budget: CpuBudget
    decoder_threads: int
    encoder_threads: dict[str, int]
    scaler_threads: int = 1  # one swscale thread per rung: rungs scale in parallel
    decoder_reason: str = ""
    encoder_reasons: dict[str, str] = field(default_factory=dict)
    x264_lookahead_thread: bool = True  # False: sync-lookahead=0, the lookahead runs in the encoding thread
    lookahead_reason: str = ""
    # Niceness of each rung's thread (and the x264 threads it starts); 0: normal priority.
    encoder_nice: dict[str, int] = field(default_factory=dict)
    priority_reason: str = ""
    profile: PlatformProfile | None = None

    def describe(self) -> list[str]:
        """Lines for ``transcode --plan``: every number and why it was chosen."""
        budget = f"cpu budget: {self.budget.cores} core(s) from {self.budget.source}"
        lines = [budget + (f" ({self.budget.detail})" if self.budget.detail else "")]
        if self.profile is not None:
            # The budget line above already says where the budget came from.
            lines.extend(line for line in self.profile.describe() if not line.startswith("profile: budget:"))
        decoder = f"decoder: {self.decoder_threads} frame thread(s)"
        lines.append(decoder + (f": {self.decoder_reason}" if self.decoder_reason else ""))
        for name, count in self.encoder_threads.items():
            reason = self.encoder_reasons.get(name)
            lines.append(f"x264 {name}: {count} frame thread(s)" + (f": {reason}" if reason else ""))
        lookahead = "a thread per rung (x264's default)" if self.x264_lookahead_thread else "sync-lookahead=0"
        lookahead = f"lookahead: {lookahead}"
        lines.append(lookahead + (f": {self.lookahead_reason}" if self.lookahead_reason else ""))
        background = [name for name, nice in self.encoder_nice.items() if nice]
        priority = "priority: every thread at normal priority"
        if background:
            priority = f"priority: {', '.join(background)} at nice +{max(self.encoder_nice.values())}"
        lines.append(priority + (f": {self.priority_reason}" if self.priority_reason else ""))
        total = sum(self.encoder_threads.values())
        lines.append(
            f"x264 total: {total} frame thread(s) for a budget of {self.budget.cores}; "
            f"scaler: {self.scaler_threads} thread per rung (each rung scales in its own thread)"
        )
        return lines


def plan_threads(
    ladder: Ladder,
    budget: CpuBudget,
    *,
    cpu: CpuInfo | None = None,
    preset: str | None = None,
) -> ThreadPlan:
    """Split ``budget`` over the decoder and the rungs' x264 encoders.

    A rung's cost is its pixel rate (width x height x fps): the 1080p rung of
    the default ladder comes out at ~57%, matching the measured 50-60% share
    of encode work (FACTS). Each rung gets ``ceil(budget x its share)``
    frame threads (at least 1, at most x264's own cap), so no single rung's
    encoder is slower than the rest of the ladder; the total is then about the
    budget, over it by less than one thread per rung (an idle frame thread
    only waits). ``cpu`` is detected from /proc/cpuinfo when None.
    """
    costs = {r.name: r.width * r.height * float(r.fps) for r in ladder.rungs}
    rungs = {r.name: r for r in ladder.rungs}
    total = sum(costs.values()) or 1.0
    rung_cores = budget.cores * _RUNG_SHARE
    per_rung = budget.cores / max(1, len(costs))
    # The rungs fill the budget: each has at most one core of its own.
    fill = budget.cores > 1 and per_rung <= _LOOKAHEAD_THREAD_MIN_CORES_PER_RUNG
    encoder_threads: dict[str, int] = {}
    encoder_reasons: dict[str, str] = {}
    for name, cost in costs.items():
        share = cost / total
        ideal = rung_cores * share
        cap = x264_thread_cap(rungs[name].height)
        why = f"{share:.0%} of the ladder's pixel rate x {rung_cores:.1f} encode cores = {ideal:.2f}"
        if fill and min(rungs[name].width, rungs[name].height) >= _ONE_THREAD_MIN_SHORT_SIDE:
            need = ideal * (1 - _DECODE_SHARE)
            count = min(cap, max(1, math.ceil(need - 1e-9)))
            why += (
                f", {need:.2f} after decode's ~{_DECODE_SHARE:.0%}: the rungs fill the budget, so more frame "
                "threads would add CPU, not speed (bench/NOTES.md)"
            )
        else:
            floor = MIN_X264_THREADS if budget.cores > 1 else 1
            count = min(cap, max(floor, math.ceil(ideal - 1e-9)))
            if count == cap and math.ceil(ideal - 1e-9) > cap:
                why += f", capped at x264's limit of {cap} for {rungs[name].height} rows"
            elif ideal < floor:
                why += f", at least {floor} (x264 at fewer frame threads lost PSNR at capped rates, bench/NOTES.md)"
            else:
                why += ", rounded up so this rung keeps pace"
        encoder_threads[name] = count
        encoder_reasons[name] = why
    lookahead_thread = per_rung > _LOOKAHEAD_THREAD_MIN_CORES_PER_RUNG
    if lookahead_thread:
        lookahead_reason = f"{per_rung:.2f} cores per rung: the lookahead thread lets a rung use more than one"
    else:
        lookahead_reason = (
            f"{per_rung:.2f} core(s) per rung: the rungs already fill the budget, so a lookahead thread per rung "
            "would add hand-offs and bframes + 1 frames of memory, not speed (bench/NOTES.md)"
        )
    encoder_nice = dict.fromkeys(costs, 0)
    if fill:
        largest = max(costs, key=lambda name: costs[name])
        encoder_nice.update((name, BACKGROUND_NICE) for name in costs if name != largest)
        priority_reason = (
            f"{largest} is the critical path ({costs[largest] / total:.0%} of the pixel rate); "
            "the decoder and it run first, the other rungs fill the cores' idle time (bench/NOTES.md)"
        )
    elif budget.cores <= 1:
        priority_reason = "one core: the work is serial whatever the order"
    else:
        priority_reason = f"{per_rung:.2f} cores per rung: no rung waits for a core"
    decoder_threads = max(1, min(budget.cores, _DECODER_THREAD_CAP))
    decoder_reason = (
        f"min(budget {budget.cores}, {_DECODER_THREAD_CAP}); frame-threaded (PyAV's default SLICE runs ordinary "
        f"uploads on one thread); decode is ~15% of the work, so {_DECODER_THREAD_CAP} threads keep up "
        "with budgets up to ~50 cores"
    )
    return ThreadPlan(
        budget=budget,
        decoder_threads=decoder_threads,
        encoder_threads=encoder_threads,
        decoder_reason=decoder_reason,
        encoder_reasons=encoder_reasons,
        x264_lookahead_thread=lookahead_thread,
        lookahead_reason=lookahead_reason,
        encoder_nice=encoder_nice,
        priority_reason=priority_reason,
        profile=build_profile(budget, cpu=cpu, preset=preset),
    )


__all__ = [
    "BACKGROUND_NICE",
    "DEFAULT_PRESET",
    "MIN_X264_THREADS",
    "PLATFORMS",
    "THROUGHPUT_JOB_VCPUS",
    "CpuBudget",
    "CpuInfo",
    "PlatformProfile",
    "ThreadPlan",
    "build_profile",
    "cgroup_cpu_quota",
    "detect_budget",
    "detect_cpu",
    "jobs_per_instance",
    "parse_cpuinfo",
    "plan_threads",
    "read_memory_mib",
    "x264_thread_cap",
]
