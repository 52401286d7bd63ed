"""The one measuring runner: child processes, their CPU, peak memory, CPU per thread and scratch disk.

:func:`run_steps` runs steps one after another; the commands of a step run side by side.
What it measures, and why that way:

* CPU: each child's ``ru_utime + ru_stime`` from ``os.wait4`` (a reaper thread per child).
* Peak RSS: the child's own ``VmHWM`` from ``/proc/PID/status``, read every 50 ms (it only
  grows). Not ``ru_maxrss``: Linux starts a child's ``ru_maxrss`` at the high-water mark of
  the memory it was forked from, so a bench grown by its PSNR work would lift every figure.
  Children side by side: the largest sampled sum of their RSS.
* CPU by thread name: ``/proc/PID/task/*/stat`` every 0.5 s, summed by name (a thread keeps
  its last reading after it exits; what exited between reads is only in the total).
* Scratch disk: the bytes under ``scratch`` directories, sampled every 100 ms.
* Wall: ``time.monotonic`` from the first start to the last exit.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = ["Measured", "run_steps", "thread_cpu_s", "thread_groups", "vm_hwm_bytes"]

_SAMPLE_S = 0.05
_THREADS_EVERY = 10  # samples between two reads of every thread's CPU (0.5 s: ~40 files a read)
_SCRATCH_EVERY = 2
# libavcodec names its worker threads av:<codec>:<kind><n> (df: frame threads).
_WORKER_INDEX = re.compile(r"^(av:[^:]*:[a-z]+)\d+$")


def vm_hwm_bytes(pid: int | str = "self") -> int | None:
    """Peak RSS (``VmHWM``) of ``pid``, counted from its own exec; None once it has exited."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text(errors="replace").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def thread_cpu_s(pid: int | str = "self") -> dict[int, tuple[str, float]]:
    """CPU seconds of each live thread of ``pid``: tid -> (OS name, user + system seconds)."""
    ticks = os.sysconf("SC_CLK_TCK")
    threads: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return threads
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text(errors="replace")
            # The name is in parentheses and may itself hold spaces or ')'.
            fields = stat[stat.rindex(")") + 2 :].split()
            threads[int(tid)] = (
                stat[stat.index("(") + 1 : stat.rindex(")")],
                (int(fields[11]) + int(fields[12])) / ticks,
            )
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return threads


def thread_groups(threads: Iterable[tuple[str, float]]) -> dict[str, float]:
    """CPU seconds by thread name, largest first; numbered libavcodec workers count together.

    Linux gives a new thread its creator's name, so the threads an FFmpeg context starts
    (x264's frame threads) count under the thread that opened it: the engine's ``rung-720p``,
    the CLI's ``fc0`` (its filter-graph thread opens the encoders).
    """
    groups: dict[str, float] = {}
    for name, cpu_s in threads:
        key = _WORKER_INDEX.sub(r"\1*", name)
        groups[key] = groups.get(key, 0.0) + cpu_s
    return dict(sorted(groups.items(), key=lambda item: -item[1]))


def _du(root: Path) -> int:
    total = 0
    for path, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(path, name)).st_size
    return total


@dataclass(slots=True, kw_only=True)
class Measured:
    """What a run cost: all its steps and child processes together."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0  # one child: its VmHWM; children side by side: their largest sampled sum
    peak_scratch_bytes: int = 0
    step_wall_s: list[float] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)
    timed_out: bool = False
    thread_cpu_s: dict[str, float] = field(default_factory=dict)  # by thread name, see thread_groups

    @property
    def ok(self) -> bool:
        return not self.timed_out and all(code == 0 for code in self.exit_codes)


def run_steps(
    steps: Sequence[Sequence[Sequence[str]]],
    *,
    log_stem: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    scratch: Sequence[Path] = (),
) -> Measured:
    """Run ``steps`` in order (a failed step ends the run) and measure them.

    A child's stdout goes to ``<log_stem>.<step>.<i>.out``, its stderr to ``.log``.
    Past ``timeout_s`` (for the whole run) the children still running are killed.
    """
    log_stem.parent.mkdir(parents=True, exist_ok=True)
    total = Measured()
    deadline = time.monotonic() + timeout_s
    threads: dict[tuple[int, int], tuple[str, float]] = {}
    for n, commands in enumerate(steps):
        stem = Path(f"{log_stem}.{n}")
        _run_step(commands, stem, deadline, env, cwd, scratch, threads, total)
        if not total.ok:
            break
    total.thread_cpu_s = thread_groups(threads.values())
    return total


def _run_step(
    commands: Sequence[Sequence[str]],
    stem: Path,
    deadline: float,
    env: Mapping[str, str] | None,
    cwd: Path | None,
    scratch: Sequence[Path],
    threads: dict[tuple[int, int], tuple[str, float]],
    total: Measured,
) -> None:
    ends: dict[int, tuple[float, int, float]] = {}  # pid -> (end, wait status, CPU s)
    hwm: dict[int, int] = {}
    lock = threading.Lock()
    procs: list[subprocess.Popen[bytes]] = []

    def reap(pid: int) -> None:
        _, status, usage = os.wait4(pid, 0)
        with lock:
            ends[pid] = (time.monotonic(), status, usage.ru_utime + usage.ru_stime)

    def live() -> list[subprocess.Popen[bytes]]:
        with lock:
            return [p for p in procs if p.pid not in ends]

    def kill_live() -> None:
        # os.kill, not Popen.kill: Popen would reap the child under the reaper thread.
        for p in live():
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)

    reapers: list[threading.Thread] = []
    start = time.monotonic()
    peak_sum = peak_scratch = samples = 0
    finished = False
    try:
        for i, cmd in enumerate(commands):
            with open(f"{stem}.{i}.out", "wb") as out, open(f"{stem}.{i}.log", "wb") as log:
                procs.append(
                    subprocess.Popen(list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=log, env=env, cwd=cwd)
                )
            reapers.append(threading.Thread(target=reap, args=(procs[-1].pid,), daemon=True))
            reapers[-1].start()
        while any(r.is_alive() for r in reapers):
            running = live()
            for p in running:
                if (mark := vm_hwm_bytes(p.pid)) is not None:
                    hwm[p.pid] = max(hwm.get(p.pid, 0), mark)
                if samples % _THREADS_EVERY == 0:
                    threads.update(((p.pid, tid), seen) for tid, seen in thread_cpu_s(p.pid).items())
            if len(procs) > 1:
                rss = 0
                for p in running:
                    with contextlib.suppress(psutil.Error):
                        rss += psutil.Process(p.pid).memory_info().rss
                peak_sum = max(peak_sum, rss)
            if scratch and samples % _SCRATCH_EVERY == 0:
                peak_scratch = max(peak_scratch, sum(_du(d) for d in scratch))
            samples += 1
            if time.monotonic() > deadline and not total.timed_out:
                total.timed_out = True
                kill_live()
            time.sleep(_SAMPLE_S)
        finished = True
    finally:
        if not finished:  # a failed start or an interrupt: leave no child behind
            kill_live()
        for r in reapers:
            r.join()
    for p in procs:
        p.returncode = os.waitstatus_to_exitcode(ends[p.pid][1])  # reaped by os.wait4: tell Popen
        total.exit_codes.append(p.returncode)
    wall = max(e[0] for e in ends.values()) - start
    total.wall_s += wall
    total.step_wall_s.append(wall)
    total.cpu_s += sum(e[2] for e in ends.values())
    total.peak_rss_bytes = max(total.peak_rss_bytes, peak_sum, *hwm.values(), 0)
    total.peak_scratch_bytes = max(total.peak_scratch_bytes, peak_scratch)
