"""What this process has used: its peak resident memory."""

from __future__ import annotations

import resource

__all__ = ["peak_rss_bytes"]


def peak_rss_bytes() -> int:
    """This process's peak RSS since its exec (``VmHWM`` in ``/proc/self/status``).

    Not ``ru_maxrss`` where ``/proc`` has it: Linux starts that at the
    high-water mark of the process this one was forked from (a chunk worker's
    main process, the Batch worker's transcode child's parent), so a small
    child of a large parent would report the parent's size. Elsewhere
    ``ru_maxrss`` (KiB on Linux, bytes on macOS: read as KiB, an upper bound).
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
