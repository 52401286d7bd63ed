"""``transcode-bench``: this engine against the ffmpeg CLI on the same source and ladder.

Variants, run as child processes in alternation (a b c a b c ...):

* (a) this engine: ``python -m transcoder SRC -o OUT --json -q`` with the
  bench's preset/crf/segment/GOP settings;
* (b) the ffmpeg CLI, one process: ``split`` + ``scale`` per rung + one libx264
  per rung + AAC once, ``-f hls -var_stream_map``;
* (c) the ffmpeg CLI, one process per rung (each decodes the source) plus one
  for audio, all started at once.

Per run: wall (``time.monotonic`` around the children), CPU (the children's
``ru_utime + ru_stime`` from ``os.wait4``), peak RSS (each child's own
``VmHWM``, read every 50 ms while it runs; for (c) the sum of the live
children's RSS sampled as often, because its processes run side by side).
Not ``ru_maxrss``: Linux starts a child's ``ru_maxrss`` at its parent's RSS
high-water mark (the mm the child was forked or vforked from), so a bench
process grown by its PSNR work would inflate every variant alike.
Reported: median wall and CPU over the runs, the largest peak RSS, realtime
factor, ratio to (b), efficiency = T_limit / wall (see :mod:`bench.stages`),
and per rung the bytes and Y-PSNR against the source
(see :mod:`bench.quality`) of the last run. The GOAL lines are the targets
of a 2-core machine.

    python -m bench.report                     # default 60 s 1080p30 source, 3 runs each
    python -m bench.report --source my.mp4 --runs 5
    python -m bench.report --smoke             # CI: 3 s 854x480, one run each, exit 0 unless a variant fails
    python -m bench.report --length-mode       # peak RSS of a 10 s and a 10 min source

Exit codes: 0 success (goals all pass, or ``--smoke``), 1 a goal failed, 2
usage error, 3 a variant failed to run or a measurement failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import importlib
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import av
import psutil

from transcoder import TranscodeConfig
from transcoder.config import X264_PRESETS

from .ffmpeg_cli import (
    LadderSettings,
    ffmpeg_version,
    find_ffmpeg,
    ladder_settings,
    one_process_command,
    per_rung_commands,
)
from .procfs import thread_cpu_s, vm_hwm_bytes
from .quality import DEFAULT_EVERY, RungQuality, measure_quality, playlist_bytes, x264_settings
from .sources import KINDS, SampleSpec, make_sample
from .stages import StageCosts, available_cores, measure_stages

__all__ = ["ProcessRun", "main", "run_measured"]

EXIT_OK, EXIT_GOALS, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
VARIANT_LABELS = {
    "a": "engine",
    "b": "ffmpeg, 1 process",
    "c": "ffmpeg, 1 process per rung",
}
# The goals of the issue, for a 2-core machine.
GOAL_WALL_RATIO = 0.95
GOAL_EFFICIENCY = 0.93
GOAL_RSS_RATIO = 0.6
GOAL_PSNR_DROP_DB = 0.1
GOAL_BYTES_RATIO = 1.02
GOAL_LENGTH_RSS_SPREAD = 1.10
GOAL_CORES = 2
_RSS_SAMPLE_S = 0.05
_THREAD_SAMPLE_EVERY = 10  # read every thread's CPU each 0.5 s: ~40 files a read, kept cheap
_BUSY_SHARE = 0.10  # other processes' CPU share above which wall numbers are flagged
_X264_THREAD_KEYS = ("threads", "lookahead_threads", "sliced_threads")
MiB = 2**20


# --- running and measuring child processes ---------------------------------


@dataclass(slots=True, kw_only=True)
class ProcessRun:
    """What one run of one variant cost (all its child processes together)."""

    wall_s: float
    cpu_s: float
    peak_rss_bytes: int  # one process: its VmHWM; several: the sampled peak of their sum
    sum_of_peaks_bytes: int  # the sum of every child's VmHWM (upper bound when they overlap)
    exit_codes: list[int]
    timed_out: bool = False
    # CPU seconds by thread name over all children (see thread_groups); what
    # exited between two samples is in cpu_s only.
    thread_cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(code == 0 for code in self.exit_codes)


def run_measured(
    commands: Sequence[Sequence[str]],
    *,
    log_stem: Path,
    timeout_s: float | None = None,
    stdout_first: Path | None = None,
) -> ProcessRun:
    """Start ``commands`` side by side and measure them until the last one exits.

    Each child's stderr goes to ``<log_stem>.<i>.log`` (and its stdout too,
    except the first child's when ``stdout_first`` names a file for it).
    After ``timeout_s`` the children still running are killed.
    """
    log_stem.parent.mkdir(parents=True, exist_ok=True)
    ends: dict[int, tuple[float, int, float, int]] = {}  # pid -> (end, status, cpu, maxrss bytes)
    hwm: dict[int, int] = {}  # pid -> the child's VmHWM as last read (it only grows)
    threads: dict[tuple[int, int], tuple[str, float]] = {}  # (pid, tid) -> (name, CPU s) as last read
    lock = threading.Lock()

    def reap(pid: int) -> None:
        _, status, usage = os.wait4(pid, 0)
        end = time.monotonic()
        with lock:
            ends[pid] = (end, status, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)

    def kill_running() -> None:
        # os.kill, not Popen.kill: Popen would poll (reap) the child under our reaper thread.
        for p in procs:
            with lock:
                if p.pid in ends:
                    continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)  # our own child, by its pid

    handles = []
    procs: list[subprocess.Popen[bytes]] = []
    waiters: list[threading.Thread] = []
    start = time.monotonic()
    peak_sum = 0
    timed_out = False
    finished = False
    try:
        for i, cmd in enumerate(commands):
            log = open(f"{log_stem}.{i}.log", "wb")  # noqa: SIM115 - closed below
            handles.append(log)
            out = log
            if i == 0 and stdout_first is not None:
                out = open(stdout_first, "wb")  # noqa: SIM115 - closed below
                handles.append(out)
            proc = subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=log)
            procs.append(proc)
            waiter = threading.Thread(target=reap, args=(proc.pid,), name=f"reap-{proc.pid}", daemon=True)
            waiter.start()
            waiters.append(waiter)
        deadline = None if timeout_s is None else start + timeout_s
        samples = 0
        while any(w.is_alive() for w in waiters):
            for p in procs:
                if (mark := vm_hwm_bytes(p.pid)) is not None:
                    hwm[p.pid] = max(hwm.get(p.pid, 0), mark)
                if samples % _THREAD_SAMPLE_EVERY == 0:
                    threads.update(((p.pid, tid), seen) for tid, seen in thread_cpu_s(p.pid).items())
            samples += 1
            if len(procs) > 1:
                peak_sum = max(peak_sum, _live_rss(procs, ends, lock))
            if deadline is not None and time.monotonic() > deadline:
                timed_out = True
                kill_running()
                deadline = None
            time.sleep(_RSS_SAMPLE_S)
        finished = True
    finally:
        if not finished:  # a failed start or an interrupt: leave no child behind
            kill_running()
        for w in waiters:
            w.join()
        for h in handles:
            h.close()
    codes = []
    for p in procs:
        _, status, _, _ = ends[p.pid]
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped by os.wait4: tell Popen
        codes.append(p.returncode)
    cpu = sum(e[2] for e in ends.values())
    # A child too short-lived to be sampled keeps its ru_maxrss (an upper bound, see the module docstring).
    peaks = [hwm.get(pid, e[3]) for pid, e in ends.items()]
    end = max(e[0] for e in ends.values())
    return ProcessRun(
        wall_s=end - start,
        cpu_s=cpu,
        peak_rss_bytes=max(peaks) if len(procs) == 1 else max(peak_sum, max(peaks)),
        sum_of_peaks_bytes=sum(peaks),
        exit_codes=codes,
        timed_out=timed_out,
        thread_cpu_s=thread_groups(threads.values()),
    )


NOT_SAMPLED = "(not sampled)"  # thread_cpu_s key: CPU of threads that exited between two reads
THREAD_NOTE = (
    "CPU seconds (median of the runs) by OS thread name, read from /proc every 0.5 s. A thread takes its "
    "creator's name, so x264's and swscale's threads count under the thread that opened them: the engine's "
    "`rung-<name>` (scale + x264 + segmenting of one rung), the CLI's `fc0` (its filter graph thread, which "
    "opens the encoders: every rung's scale + x264 together). `av:h264:df*` are libavcodec's frame-decoding "
    "threads. `other` includes threads that exited between two reads."
)
# libavcodec names its worker threads av:<codec>:<kind><n> (df: frame threads).
_WORKER_INDEX = re.compile(r"^(av:[^:]*:[a-z]+)\d+$")


def thread_groups(threads: Iterable[tuple[str, float]]) -> dict[str, float]:
    """CPU seconds summed by thread name, numbered libavcodec workers counted together.

    Linux gives a new thread its creator's name, so threads that an FFmpeg
    context starts (x264's frame threads, swscale's) count under the thread
    that opened it: the engine's ``rung-720p``, the CLI's ``fc0`` (its
    filter-graph thread opens the encoders).
    """
    groups: dict[str, float] = {}
    for name, cpu_s in threads:
        key = _WORKER_INDEX.sub(r"\1*", name)
        groups[key] = groups.get(key, 0.0) + cpu_s
    return dict(sorted(groups.items(), key=lambda item: -item[1]))


def _live_rss(procs: list[subprocess.Popen[bytes]], ends: dict[int, Any], lock: threading.Lock) -> int:
    total = 0
    for p in procs:
        with lock:
            if p.pid in ends:
                continue
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            total += psutil.Process(p.pid).memory_info().rss
    return total


# --- sources ----------------------------------------------------------------


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def generated_source(cache: Path, spec: SampleSpec) -> Path:
    """The bench's own sample for ``spec``, made once and cached under ``cache``."""
    # The generator's own hash is in the name: a changed generator makes a new file.
    generator = hashlib.sha256(Path(make_sample.__code__.co_filename).read_bytes()).hexdigest()[:8]
    name = (
        f"sample-{spec.width}x{spec.height}-{spec.fps}fps-{spec.seconds:g}s-grain{spec.grain:g}"
        f"-seed{spec.seed}-crf{spec.crf}{'' if spec.kind == 'scene' else '-' + spec.kind}-{generator}.mp4"
    )
    path = cache / name
    if not path.exists():
        _log(f"making the source {path} ({spec.seconds:g} s {spec.width}x{spec.height} {spec.fps} fps) ...")
        started = time.monotonic()
        make_sample(path, spec)
        _log(f"  made in {time.monotonic() - started:.0f} s")
    return path


def looped_source(ffmpeg: str, short: Path, short_s: float, seconds: float, cache: Path) -> Path:
    """``short`` repeated (stream copy, FFmpeg's concat demuxer) to ``seconds``.

    Each repeat is placed exactly ``short_s`` after the previous one, so the
    video stays at its constant frame rate. Cheap to make; the content repeats,
    which does not matter for what the length mode measures (memory).
    """
    path = cache / f"{short.stem}-looped-{seconds:g}s.mp4"
    if path.exists():
        return path
    repeats = max(1, math.ceil(seconds / short_s))
    listing = cache / f"{path.stem}.txt"
    listing.write_text("".join(f"file '{short.resolve()}'\nduration {short_s:g}\n" for _ in range(repeats)))
    partial = path.with_name(f".{path.name}.partial.mp4")
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0"]
    cmd += ["-i", str(listing), "-c", "copy", "-t", f"{seconds:g}", "-movflags", "+faststart", str(partial)]
    subprocess.run(cmd, check=True, timeout=3600)
    os.replace(partial, path)
    listing.unlink()
    return path


def _warm(path: Path) -> None:
    """Read the source once so no variant pays for the first read from disk."""
    with path.open("rb") as f:
        while f.read(1 << 22):
            pass


# --- variants -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Variant:
    key: str
    label: str
    build: Callable[[Path], list[list[str]]]  # output dir -> command lines
    engine: bool = False


def engine_command(settings: LadderSettings, out: Path, config: TranscodeConfig) -> list[str]:
    return [
        sys.executable,
        "-m",
        "transcoder",
        str(settings.source),
        "-o",
        str(out),
        "--preset",
        settings.preset,
        "--crf",
        str(settings.crf),
        "--segment-seconds",
        f"{config.segment_s:g}",
        "--gop-seconds",
        f"{config.gop_s:g}",
        "--json",
        "-q",
    ]


def make_variants(keys: Sequence[str], settings: LadderSettings, ffmpeg: str, config: TranscodeConfig) -> list[Variant]:
    builders: dict[str, Callable[[Path], list[list[str]]]] = {
        "a": lambda out: [engine_command(settings, out, config)],
        "b": lambda out: [one_process_command(ffmpeg, settings, out, segment_format=config.segment_format)],
        "c": lambda out: per_rung_commands(ffmpeg, settings, out, segment_format=config.segment_format),
    }
    return [Variant(k, VARIANT_LABELS[k], builders[k], engine=k == "a") for k in keys]


@dataclass(slots=True, kw_only=True)
class RunRecord:
    variant: str
    index: int
    run: ProcessRun
    load_1m: float
    others_cpu_s: float = 0.0  # CPU the rest of the machine used during the run
    rung_bytes: dict[str, int] = field(default_factory=dict)
    audio_bytes: int = 0
    engine_self: dict[str, Any] | None = None


def _output_bytes(settings: LadderSettings, out: Path) -> tuple[dict[str, int], int]:
    rungs = {}
    for rung in settings.rungs:
        playlist = out / rung.name / "index.m3u8"
        rungs[rung.name] = playlist_bytes(playlist) if playlist.exists() else 0
    audio = 0
    if settings.audio is not None:
        playlist = out / settings.audio.name / "index.m3u8"
        audio = playlist_bytes(playlist) if playlist.exists() else 0
    return rungs, audio


def run_variants(
    variants: list[Variant],
    settings: LadderSettings,
    *,
    runs: int,
    work: Path,
    timeout_s: float,
    keep: bool,
) -> tuple[list[RunRecord], dict[str, Path]]:
    """Run every variant ``runs`` times in alternation; returns the records and each last output dir."""
    records: list[RunRecord] = []
    last: dict[str, Path] = {}
    for index in range(1, runs + 1):
        for v in variants:
            out = work / f"{v.key}{index}"
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            if not v.engine:  # per-rung ffmpeg processes need their directories to exist
                for name in [r.name for r in settings.rungs] + ([settings.audio.name] if settings.audio else []):
                    (out / name).mkdir(exist_ok=True)
            load = os.getloadavg()[0]
            stdout = work / f"{v.key}{index}.stdout.json" if v.engine else None
            _log(f"run {index}/{runs} {v.key} ({v.label}) ...")
            busy_before = _busy_cpu_s()
            run = run_measured(
                v.build(out), log_stem=work / f"{v.key}{index}", timeout_s=timeout_s, stdout_first=stdout
            )
            others = max(0.0, _busy_cpu_s() - busy_before - run.cpu_s)
            record = RunRecord(variant=v.key, index=index, run=run, load_1m=load, others_cpu_s=others)
            if run.ok:
                record.rung_bytes, record.audio_bytes = _output_bytes(settings, out)
                if stdout is not None:
                    record.engine_self = _engine_self(stdout)
            _log(
                f"  wall {run.wall_s:.2f} s, CPU {run.cpu_s:.2f} s, peak RSS {run.peak_rss_bytes / MiB:.0f} MiB, "
                f"other processes' CPU {others:.1f} s"
                + ("" if run.ok else f"  FAILED: exit codes {run.exit_codes}, logs {work}/{v.key}{index}.*.log")
            )
            records.append(record)
            previous = last.get(v.key)
            last[v.key] = out
            if previous is not None and not keep:
                shutil.rmtree(previous, ignore_errors=True)
    return records, last


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (every process, every core)."""
    t = psutil.cpu_times()
    return float(sum(getattr(t, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal")))


def _engine_self(stdout: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(stdout.read_text())
    except (OSError, ValueError):
        return None
    return {k: data.get(k) for k in ("wall_s", "cpu_s", "peak_rss_bytes", "output_bytes")}


# --- summary ----------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) and not math.isnan(a) else math.nan


def _median_threads(runs: list[ProcessRun]) -> dict[str, float]:
    """Per thread name, the median of its CPU seconds over ``runs``; the rest (threads
    that exited between samples) as ``(not sampled)``."""
    names = {name for run in runs for name in run.thread_cpu_s}
    groups = {name: _median([run.thread_cpu_s.get(name, 0.0) for run in runs]) for name in names}
    rest = _median([run.cpu_s - sum(run.thread_cpu_s.values()) for run in runs])
    ordered = dict(sorted(groups.items(), key=lambda item: -item[1]))
    if runs:
        ordered[NOT_SAMPLED] = max(0.0, rest)
    return ordered


def summarize(
    variants: list[Variant],
    records: list[RunRecord],
    settings: LadderSettings,
    stages: StageCosts | None,
    quality: dict[str, dict[str, RungQuality]],
    x264: dict[str, dict[str, str | None]],
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    duration = settings.duration_s
    for v in variants:
        mine = [r for r in records if r.variant == v.key]
        good = [r for r in mine if r.run.ok]
        wall = _median([r.run.wall_s for r in good])
        cpu = _median([r.run.cpu_s for r in good])
        rss = max((r.run.peak_rss_bytes for r in good), default=0)
        last = good[-1] if good else None
        rungs: dict[str, dict[str, Any]] = {}
        for rung in settings.rungs:
            entry: dict[str, Any] = {"bytes": last.rung_bytes.get(rung.name, 0) if last else 0}
            q = quality.get(v.key, {}).get(rung.name)
            if q is not None:
                entry.update(q.as_dict())
            threads = _x264_threads(x264.get(v.key, {}).get(rung.name))
            if threads:
                entry["x264_threads"] = threads
            rungs[rung.name] = entry
        out[v.key] = {
            "label": v.label,
            "runs_ok": len(good),
            "runs_failed": len(mine) - len(good),
            "wall_s": wall,
            "cpu_s": cpu,
            "peak_rss_bytes": rss,
            "realtime_x": _ratio(duration, wall),
            "cpu_share": _ratio(cpu, wall),
            "efficiency": _ratio(stages.t_limit_s, wall) if stages else math.nan,
            "cpu_over_stage_sum": _ratio(cpu, stages.total_cpu_s) if stages else math.nan,
            "audio_bytes": last.audio_bytes if last else 0,
            "thread_cpu_s": _median_threads([r.run for r in good]),
            "rungs": rungs,
            "runs": [
                {
                    "index": r.index,
                    "wall_s": r.run.wall_s,
                    "cpu_s": r.run.cpu_s,
                    "peak_rss_bytes": r.run.peak_rss_bytes,
                    "sum_of_peaks_bytes": r.run.sum_of_peaks_bytes,
                    "exit_codes": r.run.exit_codes,
                    "timed_out": r.run.timed_out,
                    "load_1m_before": r.load_1m,
                    "others_cpu_s": r.others_cpu_s,
                    "others_cpu_share": _ratio(r.others_cpu_s, r.run.wall_s * available_cores()),
                    "rung_bytes": r.rung_bytes,
                    "audio_bytes": r.audio_bytes,
                    "thread_cpu_s": r.run.thread_cpu_s,
                    "engine_self_report": r.engine_self,
                }
                for r in mine
            ],
        }
    base = out.get("b")
    for entry in out.values():
        entry["ratio_to_b"] = {
            key: _ratio(entry[key], base[key]) if base else math.nan for key in ("wall_s", "cpu_s", "peak_rss_bytes")
        }
        for name, rung in entry["rungs"].items():
            ref = base["rungs"].get(name) if base else None
            rung["bytes_ratio_to_b"] = _ratio(rung["bytes"], ref["bytes"]) if ref else math.nan
            has_psnr = ref is not None and "psnr_y_db" in ref and "psnr_y_db" in rung
            rung["psnr_delta_to_b_db"] = rung["psnr_y_db"] - ref["psnr_y_db"] if has_psnr and ref else math.nan
    return out


def _x264_threads(sei: str | None) -> str:
    if not sei:
        return ""
    options = dict(part.split("=", 1) for part in sei.split("options:", 1)[-1].split() if "=" in part)
    return " ".join(f"{k}={options[k]}" for k in _X264_THREAD_KEYS if k in options)


def x264_mismatches(x264: dict[str, dict[str, str | None]]) -> list[str]:
    """x264 settings (threads aside) that differ between (a) and the other variants, per rung."""
    lines = []
    engine = x264.get("a", {})
    for variant, rungs in x264.items():
        if variant == "a":
            continue
        for rung, sei in rungs.items():
            mine = engine.get(rung)
            if not sei or not mine:
                continue
            a = _options(mine)
            b = _options(sei)
            diff = sorted(k for k in set(a) | set(b) if k not in _X264_THREAD_KEYS and a.get(k) != b.get(k))
            if diff:
                detail = ", ".join(f"{k}: a={a.get(k)} {variant}={b.get(k)}" for k in diff)
                lines.append(f"{rung}: {detail}")
    return lines


def _options(sei: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in sei.split("options:", 1)[-1].split() if "=" in part)


@dataclass(frozen=True, slots=True)
class Goal:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str


def evaluate_goals(
    summary: dict[str, dict[str, Any]], settings: LadderSettings, stages: StageCosts | None
) -> list[Goal]:
    a, b = summary.get("a"), summary.get("b")
    if a is None or b is None or not a["runs_ok"] or not b["runs_ok"]:
        return [Goal("all", "SKIP", "needs successful runs of both (a) and (b)")]
    goals = []
    ratio = a["wall_s"] / b["wall_s"]
    goals.append(
        Goal(
            "wall",
            _status(ratio <= GOAL_WALL_RATIO),
            f"a {a['wall_s']:.2f} s / b {b['wall_s']:.2f} s = {ratio:.3f} (target <= {GOAL_WALL_RATIO})",
        )
    )
    if stages is not None:
        eff = a["efficiency"]
        goals.append(
            Goal(
                "efficiency",
                _status(eff >= GOAL_EFFICIENCY),
                f"T_limit {stages.t_limit_s:.2f} s / a wall {a['wall_s']:.2f} s = {eff:.3f} "
                f"(target >= {GOAL_EFFICIENCY}; b: {b['efficiency']:.3f})",
            )
        )
    else:
        goals.append(Goal("efficiency", "SKIP", "stages not measured (--no-stages)"))
    rss = a["peak_rss_bytes"] / b["peak_rss_bytes"] if b["peak_rss_bytes"] else math.nan
    goals.append(
        Goal(
            "peak RSS",
            _status(rss <= GOAL_RSS_RATIO),
            f"a {a['peak_rss_bytes'] / MiB:.0f} MiB / b {b['peak_rss_bytes'] / MiB:.0f} MiB = {rss:.3f} "
            f"(target <= {GOAL_RSS_RATIO})",
        )
    )
    for rung in settings.rungs:
        ra, rb = a["rungs"][rung.name], b["rungs"][rung.name]
        delta = ra.get("psnr_delta_to_b_db", math.nan)
        bytes_ratio = ra.get("bytes_ratio_to_b", math.nan)
        if math.isnan(delta):
            goals.append(Goal(f"quality {rung.name}", "SKIP", "PSNR not measured (--no-psnr)"))
            continue
        ok = delta >= -GOAL_PSNR_DROP_DB and bytes_ratio <= GOAL_BYTES_RATIO
        goals.append(
            Goal(
                f"quality {rung.name}",
                _status(ok),
                f"PSNR-Y a {ra['psnr_y_db']:.3f} dB vs b {rb['psnr_y_db']:.3f} dB: {delta:+.3f} dB "
                f"(target >= -{GOAL_PSNR_DROP_DB}); bytes a/b {bytes_ratio:.4f} (target <= {GOAL_BYTES_RATIO})",
            )
        )
    return goals


def _status(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --- rendering ----------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".2f", *, na: str = "-", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return na
    return format(value, spec) + suffix


def _table(rows: list[list[str]], *, align_left: int = 1) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(widths[i]) if i < align_left else c.rjust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown(rows: list[list[str]], *, align_left: int = 1) -> str:
    head = "| " + " | ".join(rows[0]) + " |"
    sep = "| " + " | ".join(":--" if i < align_left else "--:" for i in range(len(rows[0]))) + " |"
    body = ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join([head, sep, *body])


def variant_rows(summary: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = [["variant", "wall s", "CPU s", "peak RSS MiB", "realtime", "wall/b", "CPU/b", "RSS/b", "efficiency"]]
    for key, s in summary.items():
        r = s["ratio_to_b"]
        rows.append(
            [
                f"{key} {s['label']}",
                _fmt(s["wall_s"]),
                _fmt(s["cpu_s"]),
                _fmt(s["peak_rss_bytes"] / MiB, ".0f"),
                _fmt(s["realtime_x"], ".2f", suffix="x"),
                _fmt(r["wall_s"], ".3f"),
                _fmt(r["cpu_s"], ".3f"),
                _fmt(r["peak_rss_bytes"], ".3f"),
                _fmt(s["efficiency"], ".3f"),
            ]
        )
    return rows


def rung_rows(summary: dict[str, dict[str, Any]], settings: LadderSettings) -> list[list[str]]:
    rows = [["rung", "variant", "MB", "bytes/b", "PSNR-Y dB", "dB vs b", "frames", "x264 threads"]]
    for rung in settings.rungs:
        for key, s in summary.items():
            r = s["rungs"][rung.name]
            rows.append(
                [
                    f"{rung.name} {rung.width}x{rung.height}",
                    key,
                    _fmt(r["bytes"] / 1e6, ".3f"),
                    _fmt(r.get("bytes_ratio_to_b", math.nan), ".4f"),
                    _fmt(r.get("psnr_y_db", math.nan), ".3f"),
                    _fmt(r.get("psnr_delta_to_b_db", math.nan), "+.3f"),
                    str(r.get("frames", "-")),
                    r.get("x264_threads", "-"),
                ]
            )
    if settings.audio is not None:
        for key, s in summary.items():
            rows.append([f"{settings.audio.name} (AAC)", key, _fmt(s["audio_bytes"] / 1e6, ".3f"), "", "", "", "", ""])
    return rows


def thread_lines(summary: dict[str, dict[str, Any]], *, top: int = 8) -> list[str]:
    """Per variant, where its CPU went by thread name (medians over its runs)."""
    lines = []
    for key, s in summary.items():
        groups: dict[str, float] = s.get("thread_cpu_s") or {}
        total = sum(groups.values())
        if not total:
            continue
        named = [(name, cpu) for name, cpu in groups.items() if name != NOT_SAMPLED]
        shown = named[:top]
        rest = sum(cpu for _, cpu in named[top:]) + groups.get(NOT_SAMPLED, 0.0)
        parts = [f"{name} {cpu:.1f} ({100 * cpu / total:.0f}%)" for name, cpu in shown]
        parts.append(f"other {rest:.1f} ({100 * rest / total:.0f}%)")
        lines.append(f"({key}) " + ", ".join(parts))
    return lines


def stage_rows(stages: StageCosts, summary: dict[str, dict[str, Any]]) -> list[list[str]]:
    x = stages.extrapolation
    total = stages.total_cpu_s
    rows = [["stage (1 thread)", "CPU s", "ms/src frame", "share"]]

    def add(name: str, cpu: float) -> None:
        rows.append([name, _fmt(cpu * x), _fmt(stages.per_frame_ms(cpu)), _fmt(100 * cpu * x / total, ".1f") + "%"])

    add("decode", stages.decode_cpu_s)
    for name, cpu in stages.scale_cpu_s.items():
        if cpu > 0:
            add(f"scale {name} (reformatter)", cpu)
    for name, cpu in stages.encode_cpu_s.items():
        add(f"encode {name}", cpu)
    add("audio (decode+AAC)", stages.audio_cpu_s)
    rows.append(["total", _fmt(total), _fmt(stages.per_frame_ms(stages.measured_cpu_s)), "100%"])
    rows.append([f"T_limit = total / {stages.cores} cores", _fmt(stages.t_limit_s), "", ""])
    for key, s in summary.items():
        rows.append([f"({key}) CPU / stage total", _fmt(s["cpu_over_stage_sum"], ".3f"), "", ""])
    return rows


def render_text(report: dict[str, Any], settings: LadderSettings, stages: StageCosts | None, goals: list[Goal]) -> str:
    summary = report["variants"]
    src = report["source"]
    parts = [
        f"source: {src['path']} ({src['description']})",
        f"ladder: {', '.join(f'{r.name} {r.width}x{r.height}@{float(r.fps):g}' for r in settings.rungs)}; "
        f"preset {settings.preset}, crf {settings.crf}, segments {settings.segment_s:g} s",
        f"machine: {report['machine']['cpu']}, {report['machine']['cores']} cores; runs per variant: "
        f"{report['settings']['runs']} (alternating); PSNR every {report['settings']['psnr_every']}th frame",
        "",
        _table(variant_rows(summary)),
        "",
        _table(rung_rows(summary, settings), align_left=2),
    ]
    if stages is not None:
        parts += ["", _table(stage_rows(stages, summary))]
    if threads := thread_lines(summary):
        parts += ["", "CPU s by thread name (median; x264 threads count under the thread that opened x264):", *threads]
    if report["x264_mismatches"]:
        parts += ["", "WARNING x264 settings differ (threads aside):", *report["x264_mismatches"]]
    parts += ["", "load (1 min) before each run (other processes' share of the CPU during it): " + _loads(summary)]
    if busy := _busy(report):
        parts.append(busy)
    parts.append("")
    if report["machine"]["cores"] != GOAL_CORES:
        parts.append(f"note: the goals are set for {GOAL_CORES} cores; this run had {report['machine']['cores']}")
    parts += [f"GOAL {g.name}: {g.status}  {g.detail}" for g in goals]
    return "\n".join(parts)


def render_markdown(
    report: dict[str, Any], settings: LadderSettings, stages: StageCosts | None, goals: list[Goal]
) -> str:
    summary = report["variants"]
    src = report["source"]
    md = [
        f"# transcode-bench report {report['started']}",
        "",
        f"- source: `{src['path']}` ({src['description']})",
        f"- ladder: {', '.join(f'{r.name} {r.width}x{r.height}@{float(r.fps):g}' for r in settings.rungs)}; "
        f"preset {settings.preset}, crf {settings.crf}, segments {settings.segment_s:g} s",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, "
        f"load (1 min) before the runs {report['machine']['load_before']}",
        f"- runs per variant: {report['settings']['runs']}, alternating; wall and CPU are medians, "
        "peak RSS the largest",
        f"- ffmpeg: {report['ffmpeg']['version']} (`{report['ffmpeg']['path']}`); PyAV {report['machine']['pyav']}",
        "",
        "## Variants",
        "",
        _markdown(variant_rows(summary)),
        "",
        "## Rungs",
        "",
        f"Y-PSNR against the source scaled to the rung (bicubic), every {report['settings']['psnr_every']}th frame, "
        "global MSE; bytes = the rung's segments (video only).",
        "",
        _markdown(rung_rows(summary, settings), align_left=2),
    ]
    if stages is not None:
        md += ["", "## Stages (T_limit)", "", _markdown(stage_rows(stages, summary))]
    if threads := thread_lines(summary, top=20):
        md += ["", "## CPU by thread name", "", THREAD_NOTE, "", *(f"- {line}" for line in threads)]
    md += ["", f"Load (1 min) before each run (other processes' share of the CPU during it): {_loads(summary)}."]
    if busy := _busy(report):
        md += ["", f"**{busy}**"]
    md += ["", "## Goals", ""]
    if report["machine"]["cores"] != GOAL_CORES:
        md.append(f"The goals are set for {GOAL_CORES} cores; this run had {report['machine']['cores']}.\n")
    md += [f"- **{g.status}** {g.name}: {g.detail}" for g in goals]
    if report["x264_mismatches"]:
        md += ["", "## x264 settings that differ (threads aside)", ""]
        md += [f"- {line}" for line in report["x264_mismatches"]]
    md += ["", "## Commands", ""]
    for key, cmds in report["commands"].items():
        md.append(f"({key}) {VARIANT_LABELS[key]}:")
        md.append("")
        md += ["```", *(" ".join(_quote(c) for c in cmd) for cmd in cmds), "```", ""]
    md += ["## x264 settings strings (first segment of each rung)", ""]
    for key, rungs in report["x264"].items():
        for rung, sei in rungs.items():
            md.append(f"- ({key}) {rung}: `{sei}`")
    return "\n".join(md) + "\n"


def _loads(summary: dict[str, dict[str, Any]]) -> str:
    return "; ".join(
        f"{key}: " + ", ".join(f"{r['load_1m_before']:.1f} ({100 * r['others_cpu_share']:.0f}%)" for r in s["runs"])
        for key, s in summary.items()
    )


def _busy(report: dict[str, Any]) -> str:
    """A warning when other work shared the machine: wall-clock numbers then say little."""
    shares = [r["others_cpu_share"] for s in report["variants"].values() for r in s["runs"]]
    worst = max((x for x in shares if not math.isnan(x)), default=0.0)
    if worst <= _BUSY_SHARE:
        return ""
    return (
        f"WARNING: other processes used up to {100 * worst:.0f}% of the machine's CPU during a run: "
        "wall, realtime and efficiency are unreliable; CPU, RSS, bytes and PSNR much less affected"
    )


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./:=,+%" for c in arg) else "'" + arg.replace("'", "'\\''") + "'"


def write_chart(summary: dict[str, dict[str, Any]], path: Path) -> bool:
    """A bar chart of wall, CPU and peak RSS per variant, if matplotlib is installed."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return False
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    keys = list(summary)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    for ax, (metric, title, scale) in zip(
        axes,
        (("wall_s", "wall s (median)", 1.0), ("cpu_s", "CPU s (median)", 1.0), ("peak_rss_bytes", "peak RSS MiB", MiB)),
        strict=True,
    ):
        ax.bar([f"{k} {summary[k]['label']}" for k in keys], [summary[k][metric] / scale for k in keys])
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 6)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# --- the run ------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": available_cores(),
        "python": platform.python_version(),
        "pyav": av.__version__,
        "platform": platform.platform(),
        "load_before": round(os.getloadavg()[0], 2),
    }


def _describe(settings: LadderSettings) -> str:
    v = settings.info.video
    size = settings.source.stat().st_size
    rate = size * 8 / settings.duration_s / 1e6 if settings.duration_s else 0.0
    audio = "with audio" if settings.info.audio else "no audio"
    return (
        f"{settings.duration_s:.1f} s {v.display_width}x{v.display_height} {float(v.fps):.3f} fps {v.codec}, "
        f"{rate:.1f} Mb/s, {audio}"
    )


def _default_out() -> Path:
    return Path("bench/results") / datetime.now().strftime("%Y%m%d-%H%M%S")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="transcode-bench",
        description="Compare this engine with the ffmpeg CLI on the same source and ladder.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", type=Path, help="a video file (default: the bench's own 1080p30 sample)")
    src.add_argument("--seconds", type=float, default=None, help="length of the generated sample (default 60)")
    p.add_argument("--width", type=int, default=1920, help="generated sample width")
    p.add_argument("--height", type=int, default=1080, help="generated sample height")
    p.add_argument("--fps", type=int, default=30, help="generated sample frame rate")
    p.add_argument(
        "--kind", default="scene", choices=KINDS, help="generated content: scene, screen recording, slides+inset"
    )
    p.add_argument("--runs", type=int, default=None, help="runs per variant (default 3; 1 with --smoke/--length-mode)")
    p.add_argument("--variants", default=None, help="which of a,b,c to run (default a,b,c; a with --length-mode)")
    p.add_argument("--preset", choices=X264_PRESETS, default="veryfast")
    p.add_argument("--crf", type=int, default=23)
    p.add_argument("--out", type=Path, default=None, help="output directory (default bench/results/<timestamp>)")
    p.add_argument("--cache", type=Path, default=Path("bench/results/sources"), help="where generated sources live")
    p.add_argument("--ffmpeg", default=None, help="ffmpeg binary (default: imageio-ffmpeg's, else PATH)")
    p.add_argument("--cores", type=int, default=None, help="cores for T_limit (default: the affinity mask)")
    p.add_argument("--psnr-every", type=int, default=DEFAULT_EVERY, help="compare every Nth output frame")
    p.add_argument("--no-psnr", action="store_true", help="skip the PSNR measurement")
    p.add_argument("--no-stages", action="store_true", help="skip the one-thread stage measurement (T_limit)")
    p.add_argument("--stages-seconds", type=float, default=None, help="measure stages on the first N s only")
    p.add_argument("--timeout", type=float, default=None, help="seconds before a run is killed")
    p.add_argument("--keep-outputs", action="store_true", help="keep every run's output, not only the last")
    p.add_argument("--smoke", action="store_true", help="3 s 854x480 source, one run each; exit 0 unless a run fails")
    p.add_argument("--length-mode", action="store_true", help="peak RSS on a short and a long source")
    p.add_argument("--short-seconds", type=float, default=10.0, help="--length-mode: the short source")
    p.add_argument("--long-seconds", type=float, default=600.0, help="--length-mode: the long source")
    args = p.parse_args(argv)
    default_variants = "a" if args.length_mode else "a,b,c"
    args.variant_keys = [v.strip() for v in (args.variants or default_variants).split(",") if v.strip()]
    if not args.variant_keys or any(v not in VARIANT_LABELS for v in args.variant_keys):
        p.error(f"--variants takes a comma-separated subset of {','.join(VARIANT_LABELS)}")
    if len(set(args.variant_keys)) != len(args.variant_keys):
        p.error("--variants lists a variant twice")
    if args.runs is None:
        args.runs = 1 if (args.smoke or args.length_mode) else 3
    if args.runs < 1 or args.psnr_every < 1:
        p.error("--runs and --psnr-every must be >= 1")
    if args.smoke and args.length_mode:
        p.error("--smoke and --length-mode do not go together")
    if args.source is not None and not args.source.is_file():
        p.error(f"--source {args.source}: no such file")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point (``transcode-bench``)."""
    args = parse_args(argv)
    # SIGTERM stops the run like Ctrl-C: the running children are killed, not orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    out: Path = (args.out or _default_out()).resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        ffmpeg = find_ffmpeg(args.ffmpeg)
        if args.length_mode:
            return length_mode(args, out, ffmpeg)
        return compare(args, out, ffmpeg)
    except KeyboardInterrupt:
        _log("interrupted")
        return EXIT_FAILED
    except (OSError, subprocess.SubprocessError, ValueError, av.FFmpegError) as exc:
        _log(f"transcode-bench: {type(exc).__name__}: {exc}")
        return EXIT_FAILED


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _source_for(args: argparse.Namespace, out: Path) -> tuple[Path, dict[str, Any]]:
    if args.source is not None:
        return args.source.resolve(), {"generated": False}
    if args.smoke:
        spec = SampleSpec(width=854, height=480, fps=30, seconds=args.seconds or 3.0)
        return generated_source(out / "source", spec), {"generated": True, "spec": dataclasses.asdict(spec)}
    spec = SampleSpec(width=args.width, height=args.height, fps=args.fps, seconds=args.seconds or 60.0, kind=args.kind)
    return generated_source(args.cache.resolve(), spec), {"generated": True, "spec": dataclasses.asdict(spec)}


def compare(args: argparse.Namespace, out: Path, ffmpeg: str) -> int:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    machine = _machine()
    version = ffmpeg_version(ffmpeg)  # fails early on a bad binary
    source, origin = _source_for(args, out)
    config = TranscodeConfig()
    settings = ladder_settings(source, preset=args.preset, crf=args.crf, config=config)
    variants = make_variants(args.variant_keys, settings, ffmpeg, config)
    timeout = args.timeout or max(300.0, 30.0 * settings.duration_s)
    _log(f"source {source}: {_describe(settings)}")
    _warm(source)
    work = out / "runs"
    records, last = run_variants(
        variants, settings, runs=args.runs, work=work, timeout_s=timeout, keep=args.keep_outputs
    )
    failed = [r for r in records if not r.run.ok]
    ok_outputs = {k: p for k, p in last.items() if any(r.variant == k and r.run.ok for r in records)}

    stages: StageCosts | None = None
    if not args.no_stages:
        _log("measuring the stages on one thread (T_limit) ...")
        stages = measure_stages(
            settings,
            cores=args.cores,
            max_seconds=args.stages_seconds,
            progress=lambda f: _log(f"  stages {100 * f:.0f}%"),
        )
    quality: dict[str, dict[str, RungQuality]] = {}
    if not args.no_psnr and ok_outputs:
        _log(f"measuring PSNR (every {args.psnr_every}th frame) ...")
        quality = measure_quality(settings, ok_outputs, every=args.psnr_every)
    x264 = {k: {r.name: _safe_x264(p / r.name / "index.m3u8") for r in settings.rungs} for k, p in ok_outputs.items()}
    summary = summarize(variants, records, settings, stages, quality, x264)
    goals = evaluate_goals(summary, settings, stages)
    report: dict[str, Any] = {
        "started": started,
        "mode": "smoke" if args.smoke else "compare",
        "machine": machine,
        "source": {"path": str(source), "description": _describe(settings), **origin},
        "settings": {
            "preset": settings.preset,
            "crf": settings.crf,
            "runs": args.runs,
            "variants": args.variant_keys,
            "psnr_every": args.psnr_every,
            "psnr_method": "Y, global MSE over the sampled frames, reference = source bicubic-scaled to the rung",
            "segment_s": settings.segment_s,
            "gop_s": config.gop_s,
        },
        "ladder": [{**dataclasses.asdict(r), "fps": str(r.fps)} for r in settings.rungs],
        "ffmpeg": {"path": ffmpeg, "version": version},
        "commands": {v.key: v.build(work / f"{v.key}N") for v in variants},
        "variants": summary,
        "stages": stages.as_dict() if stages else None,
        "x264": x264,
        "x264_mismatches": x264_mismatches(x264),
        "goals": [dataclasses.asdict(g) for g in goals],
        "failed_runs": [f"{r.variant}{r.index}: exit codes {r.run.exit_codes}" for r in failed],
    }
    text = render_text(report, settings, stages, goals)
    print(text)
    (out / "report.json").write_text(json.dumps(_json_safe(report), indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(report, settings, stages, goals))
    charted = write_chart(summary, out / "chart.png")
    _log(f"wrote {out / 'report.json'}, {out / 'report.md'}" + (f", {out / 'chart.png'}" if charted else ""))
    if failed:
        _log(f"{len(failed)} run(s) failed: " + "; ".join(report["failed_runs"]))
        return EXIT_FAILED
    if args.smoke:
        return EXIT_OK
    return EXIT_GOALS if any(g.status == "FAIL" for g in goals) else EXIT_OK


def _safe_x264(playlist: Path) -> str | None:
    try:
        return x264_settings(playlist) if playlist.exists() else None
    except av.FFmpegError:
        return None


def length_mode(args: argparse.Namespace, out: Path, ffmpeg: str) -> int:
    """Peak RSS of the same variants on a short and a long source (the long one a loop of the short)."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    machine = _machine()
    cache = args.cache.resolve()
    if args.source is not None:
        short = args.source.resolve()
        short_s = ladder_settings(short, preset=args.preset, crf=args.crf).duration_s
    else:
        spec = SampleSpec(width=args.width, height=args.height, fps=args.fps, seconds=args.short_seconds)
        short = generated_source(cache, spec)
        short_s = spec.frame_count / spec.fps
    long = looped_source(ffmpeg, short, short_s, args.long_seconds, cache)
    config = TranscodeConfig()
    rows: list[dict[str, Any]] = []
    failed = False
    for label, path in (("short", short), ("long", long)):
        settings = ladder_settings(path, preset=args.preset, crf=args.crf, config=config)
        _log(f"{label} source {path}: {_describe(settings)}")
        _warm(path)
        variants = make_variants(args.variant_keys, settings, ffmpeg, config)
        timeout = args.timeout or max(300.0, 30.0 * settings.duration_s)
        records, _ = run_variants(
            variants, settings, runs=args.runs, work=out / "runs" / label, timeout_s=timeout, keep=False
        )
        for v in variants:
            good = [r.run for r in records if r.variant == v.key and r.run.ok]
            failed = failed or len(good) < args.runs
            wall = _median([r.wall_s for r in good])
            rows.append(
                {
                    "source": label,
                    "path": str(path),
                    "duration_s": settings.duration_s,
                    "variant": v.key,
                    "label": v.label,
                    "wall_s": wall,
                    "cpu_s": _median([r.cpu_s for r in good]),
                    "peak_rss_bytes": max((r.peak_rss_bytes for r in good), default=0),
                    "realtime_x": _ratio(settings.duration_s, wall),
                }
            )
    goals = []
    for key in args.variant_keys:
        pair = [r["peak_rss_bytes"] for r in rows if r["variant"] == key]
        if len(pair) == 2 and min(pair) > 0:
            spread = max(pair) / min(pair)
            goals.append(
                Goal(
                    f"length RSS ({key} {VARIANT_LABELS[key]})",
                    _status(spread <= GOAL_LENGTH_RSS_SPREAD),
                    f"short {pair[0] / MiB:.0f} MiB, long {pair[1] / MiB:.0f} MiB: larger/smaller = {spread:.3f} "
                    f"(target <= {GOAL_LENGTH_RSS_SPREAD})",
                )
            )
    table = [["source", "variant", "length s", "wall s", "CPU s", "peak RSS MiB", "realtime"]]
    for r in rows:
        table.append(
            [
                r["source"],
                f"{r['variant']} {r['label']}",
                _fmt(r["duration_s"], ".1f"),
                _fmt(r["wall_s"]),
                _fmt(r["cpu_s"]),
                _fmt(r["peak_rss_bytes"] / MiB, ".0f"),
                _fmt(r["realtime_x"], suffix="x"),
            ]
        )
    lines = [f"GOAL {g.name}: {g.status}  {g.detail}" for g in goals]
    print(_table(table, align_left=2))
    print("\n".join(lines))
    report = {
        "started": started,
        "mode": "length",
        "machine": machine,
        "settings": {"preset": args.preset, "crf": args.crf, "runs": args.runs, "variants": args.variant_keys},
        "rows": rows,
        "goals": [dataclasses.asdict(g) for g in goals],
    }
    (out / "report.json").write_text(json.dumps(_json_safe(report), indent=2) + "\n")
    md = [
        f"# transcode-bench length mode {started}",
        "",
        f"- machine: {machine['cpu']}, {machine['cores']} cores",
        f"- long source: the short one repeated (stream copy) to {args.long_seconds:g} s",
        "",
        _markdown(table, align_left=2),
        "",
        *[f"- **{g.status}** {g.name}: {g.detail}" for g in goals],
    ]
    (out / "report.md").write_text("\n".join(md) + "\n")
    _log(f"wrote {out / 'report.json'}, {out / 'report.md'}")
    if failed:
        return EXIT_FAILED
    return EXIT_GOALS if any(g.status == "FAIL" for g in goals) else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
