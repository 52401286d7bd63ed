"""CPU identification, CPU budget, platform profile and thread plan (``transcoder.cpuinfo``, ``.budget``,
``.platform_profile``, ``.threadplan``).

Sample ``/proc/cpuinfo`` files and cgroup trees live under ``tests/transcoder/data/`` (their
READMEs say which machine each one stands for).
"""

from __future__ import annotations

import json
import math
import os
from fractions import Fraction
from pathlib import Path

import pytest

from transcoder.budget import CpuBudget, detect_budget
from transcoder.cli import jsonable
from transcoder.cpuinfo import PLATFORMS, CpuInfo, detect_cpu, parse_cpuinfo
from transcoder.models import Ladder, Rung
from transcoder.platform_profile import build_profile
from transcoder.threadplan import BACKGROUND_NICE, MIN_X264_THREADS, plan_threads, x264_thread_cap

DATA = Path(__file__).parent / "data"
CPUINFO = DATA / "cpuinfo"
CGROUP = DATA / "cgroup"


def cpu(name: str, machine: str = "") -> CpuInfo:
    return parse_cpuinfo((CPUINFO / name).read_text(), machine)


def rung(name: str, width: int, height: int, fps: int = 30) -> Rung:
    return Rung(
        name=name,
        width=width,
        height=height,
        fps=Fraction(fps),
        bitrate_kbps=1000,
        maxrate_kbps=1100,
        bufsize_kbps=2000,
    )


LADDER = Ladder(
    rungs=(
        rung("1080p", 1920, 1080),
        rung("720p", 1280, 720),
        rung("480p", 854, 480),
        rung("360p", 640, 360),
    ),
    audio=(),
    gop_s=2.0,
    segment_s=4.0,
)


# --- CPU identification -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "machine", "platform", "vendor", "model", "part", "features", "processors"),
    [
        ("graviton2.txt", "aarch64", "graviton2", "Arm", "Neoverse N1", "0xd0c", ("asimd", "asimddp"), 4),
        ("graviton3-64.txt", "aarch64", "graviton3", "Arm", "Neoverse V1", "0xd40", ("asimd", "sve", "i8mm"), 64),
        ("graviton4.txt", "aarch64", "graviton4", "Arm", "Neoverse V2", "0xd4f", ("sve", "sve2", "i8mm"), 8),
        ("arm-cortex-a72.txt", "aarch64", "arm", "Arm", "Cortex-A72", "0xd08", ("asimd",), 4),
        ("arm-big-little.txt", "aarch64", "arm", "Arm", "Cortex-A53", "0xd03", ("asimd",), 6),
        (
            "x86-intel.txt",
            "x86_64",
            "x86",
            "GenuineIntel",
            "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
            "",
            ("avx2", "avx512f", "avx512bw"),
            4,
        ),
        ("x86-amd.txt", "x86_64", "x86", "AuthenticAMD", "AMD EPYC 7R13 Processor", "", ("avx2", "fma"), 2),
    ],
)
def test_parse_cpuinfo_samples(
    sample: str,
    machine: str,
    platform: str,
    vendor: str,
    model: str,
    part: str,
    features: tuple[str, ...],
    processors: int,
) -> None:
    info = cpu(sample, machine)
    assert info.platform == platform
    assert info.platform in PLATFORMS
    assert info.vendor == vendor
    assert info.model == model
    assert info.cpu_part == part
    assert set(features) <= set(info.features)
    assert info.processors == processors
    assert info.arch == machine
    assert info.is_graviton == platform.startswith("graviton")


def test_generations_are_told_apart_by_simd() -> None:
    assert "sve" not in cpu("graviton2.txt").features
    assert "sve" in cpu("graviton3-64.txt").features and "sve2" not in cpu("graviton3-64.txt").features
    assert "sve2" in cpu("graviton4.txt").features
    assert "avx512f" not in cpu("x86-amd.txt").features


def test_arch_comes_from_cpuinfo_when_machine_is_unknown() -> None:
    assert cpu("graviton3-64.txt", machine="").arch == "aarch64"
    assert cpu("x86-intel.txt", machine="").arch == "x86_64"
    assert cpu("graviton4.txt", machine="arm64").arch == "aarch64"  # macOS/Docker spelling


@pytest.mark.parametrize(
    ("machine", "platform", "arch"),
    [
        ("aarch64", "arm", "aarch64"),
        ("arm64", "arm", "aarch64"),
        ("x86_64", "x86", "x86_64"),
        ("riscv64", "unknown", "riscv64"),
    ],
)
def test_unreadable_cpuinfo_falls_back_to_machine(tmp_path: Path, machine: str, platform: str, arch: str) -> None:
    info = detect_cpu(tmp_path / "missing", machine=machine)
    assert (info.platform, info.arch, info.processors) == (platform, arch, 0)


def test_emulation_is_not_mistaken_for_the_host() -> None:
    # qemu-user shows the x86 host's /proc/cpuinfo to an aarch64 process.
    info = cpu("x86-intel.txt", machine="aarch64")
    assert (info.arch, info.platform, info.features) == ("aarch64", "arm", ())
    assert info.model.startswith("emulated (x86_64 host")
    info = cpu("graviton3-64.txt", machine="x86_64")
    assert (info.arch, info.platform) == ("x86_64", "x86")
    assert cpu("graviton2.txt", machine="armv8l").arch == "aarch64"
    assert cpu("graviton2.txt", machine="armv7l").arch == "armv7l"


def test_other_arm_implementer_is_not_graviton() -> None:
    text = (CPUINFO / "graviton2.txt").read_text().replace("0x41", "0xc0").replace("0xd0c", "0xac3")
    info = parse_cpuinfo(text, "aarch64")
    assert info.platform == "arm"
    assert info.vendor == "Ampere"
    assert "0xac3" in info.model


def test_detect_cpu_reads_this_machine() -> None:
    info = detect_cpu()
    assert info.platform in PLATFORMS
    assert info.describe()


# --- CPU budget ---------------------------------------------------------------------------------------------------


def budget_for(case: str, *, override: int | None = None, affinity: int = 64) -> CpuBudget:
    root = CGROUP / case
    return detect_budget(override, cgroup_root=root, affinity=affinity, proc_self_cgroup=root / "proc-self-cgroup")


@pytest.mark.parametrize(
    ("case", "override", "affinity", "cores", "source", "detail"),
    [
        # A 2-vCPU quota on a 64-core host: 2, never 64.
        ("v2-quota-2cpu", None, 64, 2, "cgroup v2 cpu.max", "200000/100000 = 2.00 CPU"),
        ("v2-quota-1.5cpu", None, 64, 2, "cgroup v2 cpu.max", "rounded up to 2"),
        ("v2-host-nested", None, 64, 4, "cgroup v2 cpu.max", "batch.slice/cpu.max"),
        ("v1-quota-3cpu", None, 64, 3, "cgroup v1 quota", "cpu,cpuacct/cpu.cfs_quota_us 300000"),
        # No quota (Batch on EC2 sets shares only): the affinity mask, and the detail says why.
        ("v2-no-quota", None, 64, 64, "affinity", "cpu.weight 79 is a relative share"),
        ("v1-no-quota", None, 8, 8, "affinity", "cpu.shares 2048 (= 2 vCPU"),
        # An explicit override: taken as is without a quota, never above one.
        ("v1-no-quota", 4, 64, 4, "override", "set explicitly"),
        ("v2-quota-2cpu", 8, 64, 2, "cgroup v2 cpu.max", "override 8 exceeds the hard limit"),
        ("v2-host-nested", 2, 64, 2, "override", "within"),
        ("v1-no-quota", 0, 64, 1, "override", ""),
        # A quota above the affinity mask: the mask.
        ("v2-host-nested", None, 2, 2, "affinity", "fewer than"),
    ],
)
def test_detect_budget_table(
    case: str, override: int | None, affinity: int, cores: int, source: str, detail: str
) -> None:
    budget = budget_for(case, override=override, affinity=affinity)
    assert (budget.cores, budget.source) == (cores, source)
    assert detail in budget.detail


def test_no_cgroup_filesystem_uses_affinity(tmp_path: Path) -> None:
    budget = detect_budget(cgroup_root=tmp_path, affinity=6, proc_self_cgroup=tmp_path / "none")
    assert (budget.cores, budget.source) == (6, "affinity")


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no affinity API")
def test_default_affinity_is_the_process_mask(tmp_path: Path) -> None:
    budget = detect_budget(cgroup_root=tmp_path, proc_self_cgroup=tmp_path / "none")
    assert budget.cores == len(os.sched_getaffinity(0))


def test_cgroup_v2_quota_applies_from_an_ancestor() -> None:
    root = CGROUP / "v2-host-nested"
    found = detect_budget(cgroup_root=root, affinity=64, proc_self_cgroup=root / "proc-self-cgroup")
    assert (found.cores, found.source) == (4, "cgroup v2 cpu.max")
    unlimited = CGROUP / "v2-no-quota"
    found = detect_budget(cgroup_root=unlimited, affinity=64, proc_self_cgroup=unlimited / "proc-self-cgroup")
    assert (found.cores, found.source) == (64, "affinity")


def test_tighter_ancestor_limit_wins(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "cpu.max").write_text("100000 100000\n")
    (tmp_path / "a" / "b" / "cpu.max").write_text("800000 100000\n")
    (tmp_path / "self").write_text("0::/a/b\n")
    budget = detect_budget(cgroup_root=tmp_path, affinity=64, proc_self_cgroup=tmp_path / "self")
    assert budget.cores == 1


def test_garbage_cgroup_files_are_ignored(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("lots 0\n")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("0\n")
    budget = detect_budget(cgroup_root=tmp_path, affinity=3, proc_self_cgroup=tmp_path / "none")
    assert (budget.cores, budget.source) == (3, "affinity")


BACKGROUND_BELOW_1080P = {"1080p": 0, "720p": BACKGROUND_NICE, "480p": BACKGROUND_NICE, "360p": BACKGROUND_NICE}


# --- Thread plan --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 6, 8, 16, 32, 64])
def test_thread_plan_gives_each_rung_its_share_and_favours_the_top_rung(cores: int) -> None:
    plan = plan_threads(LADDER, CpuBudget(cores=cores, source="override"), cpu=cpu("graviton3-64.txt"))
    counts = list(plan.encoder_threads.values())
    assert list(plan.encoder_threads) == [r.name for r in LADDER.rungs]
    costs = [r.width * r.height * float(r.fps) for r in LADDER.rungs]
    fill = 1 < cores <= len(LADDER.rungs)  # at most one core per rung
    floor = 1 if cores == 1 else MIN_X264_THREADS
    for rung_, count, cost in zip(LADDER.rungs, counts, costs, strict=True):
        ideal = cores * cost / sum(costs)
        if fill and min(rung_.width, rung_.height) >= 720:
            # HD rungs get what their share of the run needs, decode (~15%) aside: no floor.
            assert count == max(1, math.ceil(ideal * 0.85 - 1e-9)), rung_.name
        else:
            assert count == min(x264_thread_cap(rung_.height), max(floor, math.ceil(ideal - 1e-9))), rung_.name
    if not fill:
        assert counts == sorted(counts, reverse=True)  # proportional to cost: bigger rung, more threads
        assert set(plan.encoder_nice.values()) == {0}
    else:
        # The largest rung is the critical path: normal priority; the others fill the idle time.
        assert plan.encoder_nice == BACKGROUND_BELOW_1080P
    if cores >= 8:
        assert counts[0] >= sum(counts) / 3  # the 1080p rung is ~57% of the pixel rate
    assert 1 <= plan.decoder_threads <= min(cores, 8)


def test_two_vcpu_job_on_a_64_core_graviton() -> None:
    root = CGROUP / "v2-quota-2cpu"
    budget = detect_budget(cgroup_root=root, affinity=64, proc_self_cgroup=root / "proc-self-cgroup")
    plan = plan_threads(LADDER, budget, cpu=cpu("graviton3-64.txt", "aarch64"))
    assert plan.decoder_threads == 2
    floor = MIN_X264_THREADS
    assert plan.encoder_threads == {"1080p": 1, "720p": 1, "480p": floor, "360p": floor}
    assert plan.profile is not None
    lines = plan.describe()
    assert lines[0].startswith("cpu budget: 2 core(s) from cgroup v2 cpu.max")
    assert any(line.startswith("profile: cpu: graviton3 (Neoverse V1, CPU part 0xd40)") for line in lines)
    assert any(line.startswith("decoder: 2 frame thread(s): min(budget 2, 8)") for line in lines)
    assert any(
        line.startswith("x264 1080p: 1 frame thread(s): 57% of the ladder's pixel rate x 2.0 encode cores = 1.14, 0.97")
        for line in lines
    )
    assert any(line.startswith("priority: 720p, 480p, 360p at nice +19: 1080p is the critical path") for line in lines)
    assert not plan.x264_lookahead_thread
    assert any(line.startswith("lookahead: sync-lookahead=0: 0.50 core(s) per rung") for line in lines)


def test_every_number_in_describe_has_a_reason() -> None:
    plan = plan_threads(LADDER, CpuBudget(cores=16, source="override"), cpu=cpu("graviton4.txt", "aarch64"))
    lines = plan.describe()
    for line in lines:
        if line.startswith(("decoder:", "x264 ")) and not line.startswith("x264 total"):
            assert ": " in line.split("thread(s)", 1)[1], line
    assert plan.encoder_threads == {"1080p": 10, "720p": 5, "480p": max(MIN_X264_THREADS, 2), "360p": MIN_X264_THREADS}
    assert "rounded up" in plan.encoder_reasons["1080p"]
    assert f"at least {MIN_X264_THREADS}" in plan.encoder_reasons["360p"]


def test_x264_thread_cap_follows_x264() -> None:
    assert x264_thread_cap(1080) == 34  # (1080 + 15) // 16 // 2
    assert x264_thread_cap(234) == 7
    assert x264_thread_cap(16) == 1
    tiny = Ladder(rungs=(rung("234p", 416, 234),), audio=(), gop_s=2.0, segment_s=4.0)
    plan = plan_threads(tiny, CpuBudget(cores=64, source="override"), cpu=cpu("graviton3-64.txt"))
    assert plan.encoder_threads == {"234p": 7}
    assert "capped at x264's limit of 7" in plan.encoder_reasons["234p"]


def test_plan_is_json_ready() -> None:
    plan = plan_threads(LADDER, CpuBudget(cores=4, source="override"), cpu=cpu("x86-intel.txt", "x86_64"))
    payload = json.loads(json.dumps(jsonable(plan)))
    assert payload["encoder_threads"]["1080p"] == 2  # 4 x 57% = 2.28 cores, 1.94 after decode's share
    assert payload["encoder_nice"] == BACKGROUND_BELOW_1080P
    assert payload["profile"]["cpu"]["platform"] == "x86"


# --- Platform profile ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "machine", "simd_words"),
    [
        ("graviton2.txt", "aarch64", "NEON"),
        ("graviton3-64.txt", "aarch64", "sve"),
        ("graviton4.txt", "aarch64", "sve2"),
        ("arm-cortex-a72.txt", "aarch64", "NEON"),
        ("x86-intel.txt", "x86_64", "AVX-512"),
    ],
)
def test_profile_keeps_the_preset_and_adds_no_unmeasured_params(sample: str, machine: str, simd_words: str) -> None:
    profile = build_profile(CpuBudget(cores=2, source="override"), cpu=cpu(sample, machine))
    assert profile.preset == "veryfast"
    reasons = " ".join(profile.reasons)
    assert simd_words in reasons
    assert "no per-platform measurement" in reasons


def test_profile_reports_a_configured_preset() -> None:
    plan = plan_threads(LADDER, CpuBudget(cores=2, source="override"), cpu=cpu("graviton2.txt"), preset="medium")
    assert plan.profile is not None and plan.profile.preset == "medium"
    assert any("x264 preset: medium as configured" in line for line in plan.describe())


@pytest.mark.parametrize("module", ["cpuinfo", "budget", "platform_profile", "threadplan"])
def test_the_platform_modules_read_no_environment(module: str) -> None:
    source = (Path(__file__).parents[2] / "transcoder" / f"{module}.py").read_text()
    assert "os.environ" not in source and "getenv" not in source
