"""Reading a process's own figures from ``/proc`` (Linux)."""

from __future__ import annotations

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
