"""Reading a process's own figures from ``/proc`` (Linux)."""

from __future__ import annotations

import os
from pathlib import Path


def vm_hwm_bytes(pid: int | str = "self") -> int | None:
    """Peak RSS (``VmHWM``) of ``pid``, counted from its own exec only; None if unreadable.

    Not ``ru_maxrss``: Linux starts a child's ``ru_maxrss`` at the RSS
    high-water mark of the memory it was forked (or vforked) from, so a
    child of a large parent would report at least the parent's size. A
    process that has exited (a zombie) has no ``VmHWM`` line: None.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text(errors="replace").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def thread_cpu_s(pid: int | str = "self") -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of each live thread of ``pid``: tid -> (name, seconds).

    Threads that already exited are not listed (their time is in the
    process's total only); an unreadable process gives an empty dict.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    threads: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return threads
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text(errors="replace")
        except OSError:
            continue  # exited meanwhile
        # The name is in parentheses and may itself contain spaces or ')'.
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        try:
            threads[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / ticks)
        except (IndexError, ValueError):
            continue
    return threads
