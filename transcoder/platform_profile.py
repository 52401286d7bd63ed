"""The platform profile: what the CPU and the budget mean for the encoder, each choice with its reason.

Where the profile could differ per platform but no measurement says it should
(the x264 preset, extra x264 parameters) it does not, and says so in its
reasons: x264 picks its NEON/SVE or SSE/AVX code at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

from .budget import CpuBudget
from .cpuinfo import CpuInfo, detect_cpu

# The engine's default x264 preset (EncoderSettings.preset). Every platform
# gets the same: a different preset per CPU would need a speed/quality
# measurement on that CPU, and there is none here.
DEFAULT_PRESET = "veryfast"


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformProfile:
    """What the platform means for the encoder, each choice with its reason."""

    cpu: CpuInfo
    budget: CpuBudget
    preset: str
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


def build_profile(
    budget: CpuBudget,
    *,
    cpu: CpuInfo | None = None,
    preset: str | None = None,
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
    return PlatformProfile(
        cpu=cpu,
        budget=budget,
        preset=chosen,
        reasons=tuple(reasons),
    )


__all__ = ["DEFAULT_PRESET", "PlatformProfile", "build_profile"]
