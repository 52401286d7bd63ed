"""The thread plan: thread counts and priorities for every FFmpeg context of a run, each with its reason.

A pure function of the ladder, the CPU budget and the platform profile
(shown by ``transcode --plan``); the measurements behind each rule are in
bench/NOTES.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .budget import CpuBudget
from .cpuinfo import CpuInfo
from .models import Ladder
from .platform_profile import PlatformProfile, build_profile

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
# A still source (slides, screen recordings: transcoder.prediction's gate)
# costs a fraction of a camera source per pixel, and its rungs stay far below
# their VBV caps, so the PSNR reason for MIN_X264_THREADS does not apply (one
# or three threads gave the same bytes on the bench's screen recording).
# Where the rungs fill the budget, every rung then gets one x264 thread and
# the decoder one thread: fewer hand-offs, the same parallelism across the
# ladder. Measured on the bench's 20 s 1080p30 screen recording (bench/NOTES.md):
# decode 0.77 s CPU on one thread against 0.86 s on two (~780 fps, five times
# what its 1080p rung encodes), x264 1080p 2 -> 1 thread and 360p 3 -> 1
# thread -3% and -10% of their CPU.
_STILL_THREADS = 1


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
    still: bool = False,
) -> ThreadPlan:
    """Split ``budget`` over the decoder and the rungs' x264 encoders.

    A rung's cost is its pixel rate (width x height x fps): the 1080p rung of
    the default ladder comes out at ~57%, matching the measured 50-60% share
    of encode work (FACTS). Each rung gets ``ceil(budget x its share)``
    frame threads (at least 1, at most x264's own cap), so no single rung's
    encoder is slower than the rest of the ladder; the total is then about the
    budget, over it by less than one thread per rung (an idle frame thread
    only waits). ``cpu`` is detected from /proc/cpuinfo when None.
    ``still``: the source is still (``LadderPrediction.still``); where the
    rungs fill the budget every rung and the decoder get one thread.
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
        if fill and still:
            count = _STILL_THREADS
            why += (
                ", a still source: the rungs fill the budget and each costs little, so one frame thread "
                "(more would add CPU, not speed; bench/NOTES.md)"
            )
        elif fill and min(rungs[name].width, rungs[name].height) >= _ONE_THREAD_MIN_SHORT_SIDE:
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
    if fill and still:
        decoder_threads = _STILL_THREADS
        decoder_reason = (
            "a still source whose rungs fill the budget: one thread decodes it several times faster "
            "than its largest rung encodes (bench/NOTES.md)"
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


__all__ = ["BACKGROUND_NICE", "MIN_X264_THREADS", "ThreadPlan", "plan_threads", "x264_thread_cap"]
