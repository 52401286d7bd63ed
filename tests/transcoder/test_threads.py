"""transcoder.threads: OS names and priorities of the engine's threads, read back from /proc."""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from transcoder.threads import lower_thread_priority, name_os_thread, started_pool

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads thread names and priorities from /proc")


def _me() -> tuple[str, int]:
    """The calling thread's OS name and niceness."""
    name = Path("/proc/thread-self/comm").read_text().strip()
    return name, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _in_thread(target: object) -> None:
    thread = threading.Thread(target=target)  # type: ignore[arg-type]
    thread.start()
    thread.join()


def test_a_named_thread_is_named_in_the_os_and_its_children_inherit_the_name() -> None:
    seen: list[tuple[str, int]] = []

    def stage() -> None:
        name_os_thread("rung-a-very-long-name")
        seen.append(_me())
        _in_thread(lambda: seen.append(_me()))  # a thread it starts, as x264 does

    _in_thread(stage)
    assert seen == [("rung-a-very-lon", 0), ("rung-a-very-lon", 0)]  # 15 bytes: the kernel's limit


def test_a_lowered_priority_is_the_threads_own_and_passes_to_the_threads_it_starts() -> None:
    seen: list[tuple[str, int]] = []

    def background() -> None:
        lower_thread_priority(19)
        seen.append(_me())
        _in_thread(lambda: seen.append(_me()))

    _in_thread(background)
    assert [nice for _, nice in seen] == [19, 19]
    assert _me()[1] == 0  # the rest of the process keeps its priority


def test_a_started_pool_runs_at_its_creators_priority_whoever_submits() -> None:
    started = started_pool(3, "s3-upload")
    lazy = ThreadPoolExecutor(3, thread_name_prefix="lazy")
    seen: dict[str, list[tuple[str, int]]] = {}

    def background_rung() -> None:
        lower_thread_priority(19)
        for key, pool in (("started", started), ("lazy", lazy)):
            seen[key] = [f.result() for f in [pool.submit(_me) for _ in range(6)]]

    try:
        _in_thread(background_rung)
    finally:
        started.shutdown()
        lazy.shutdown()
    # Every worker of the started pool began before the submitter lowered its priority ...
    assert {nice for _, nice in seen["started"]} == {0}
    assert {name for name, _ in seen["started"]} <= {"s3-upload_0", "s3-upload_1", "s3-upload_2"}
    # ... where a plain pool starts its workers in the submitting thread, with its priority.
    assert {nice for _, nice in seen["lazy"]} == {19}
