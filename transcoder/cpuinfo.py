"""What CPU this process runs on, as far as encoding cares (``/proc/cpuinfo``).

Graviton generations are told apart by the Arm "CPU part" (0xd0c Neoverse N1,
0xd40 V1, 0xd4f V2); x86 by vendor and model name. The path is an argument
(tests feed sample files); nothing here reads the environment.
"""

from __future__ import annotations

import platform as _platform
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

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


__all__ = ["PLATFORMS", "CpuInfo", "detect_cpu", "parse_cpuinfo"]
