"""Waiting for something to happen in another thread or process, with a deadline.

Tests wait on an event where one exists (``Thread.join``, ``Event.wait``,
:meth:`tests.support.faultproxy.FaultProxy.wait_for_hits`, a process's exit).
:func:`wait_until` is for state nothing announces: a counter another thread
bumps, a listing on a server. It polls, and fails with a message instead of
hanging when the deadline passes; it never sleeps longer than it must.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_until"]


def wait_until(
    condition: Callable[[], object], *, timeout_s: float = 10.0, what: str = "the condition", poll_s: float = 0.01
) -> None:
    """Return as soon as ``condition()`` is true; raise AssertionError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(min(poll_s, left))
