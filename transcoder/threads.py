"""OS-level identity of the engine's threads: names, priorities, pools started up front.

Linux gives a new thread its creator's name and niceness. The engine relies on
that (x264's frame threads follow their rung's thread, see
``ThreadPlan.encoder_nice``) and guards against it (a pool started lazily from
a low-priority rung thread would run its workers at that priority).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

_PR_SET_NAME = 15
_NAME_BYTES = 15  # the kernel keeps 15 bytes and a NUL


def name_os_thread(name: str | None = None) -> None:
    """Give the calling thread ``name`` (default: its Python name) in the OS too (Linux; best effort).

    Python before 3.14 names only its own Thread objects. With the OS name set,
    ``top -H``, ``perf`` and /proc show which stage a thread is, and the threads
    that FFmpeg starts from it inherit the name, so a rung's whole CPU can be
    read off per thread name (bench.report does).
    """
    if sys.platform != "linux":
        return
    label = threading.current_thread().name if name is None else name
    with contextlib.suppress(OSError, AttributeError):
        _libc().prctl(_PR_SET_NAME, label.encode("ascii", "replace")[:_NAME_BYTES], 0, 0, 0)


def lower_thread_priority(nice: int) -> None:
    """Run the calling thread, and the threads it starts later, at niceness ``nice`` (Linux; best effort).

    On Linux, setpriority(PRIO_PROCESS, tid) applies to that one thread, and a
    new thread inherits its creator's niceness. Raising niceness needs no
    privilege; lowering it back does, so a thread that lowered its priority
    must not start threads that others rely on. Elsewhere the call would
    renice the whole process, so it is skipped.
    """
    if sys.platform != "linux" or nice <= 0:
        return
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)


def started_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """A thread pool whose ``workers`` threads all start now, in the calling thread, named in the OS.

    ThreadPoolExecutor starts its threads on demand, in whichever thread
    submits: an upload pool first used by a background rung's thread would
    run every upload at that rung's low priority. Each start-up task holds
    its worker at a barrier, so the pool has to start a new thread for every
    one of them.
    """
    pool = ThreadPoolExecutor(workers, thread_name_prefix=name, initializer=name_os_thread)
    barrier = threading.Barrier(workers + 1)
    try:
        for _ in range(workers):
            pool.submit(barrier.wait)
        barrier.wait()
    except BaseException:
        barrier.abort()  # frees the workers already waiting (their task fails, unseen)
        pool.shutdown(wait=False)
        raise
    return pool


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


__all__ = ["lower_thread_priority", "name_os_thread", "started_pool"]
