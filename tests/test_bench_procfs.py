"""bench.procfs and the report's per-thread CPU grouping, on this very process."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from bench.procfs import thread_cpu_s, vm_hwm_bytes
from bench.report import thread_groups

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def test_thread_cpu_counts_each_thread_apart() -> None:
    seen: dict[str, int] = {}

    def spin() -> None:
        seen["tid"] = threading.get_native_id()
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        seen["cpu"] = 1
        stop.wait()

    stop = threading.Event()
    worker = threading.Thread(target=spin)
    worker.start()
    try:
        while "cpu" not in seen:
            time.sleep(0.01)
        threads = thread_cpu_s(os.getpid())
        assert threading.get_native_id() in threads  # the caller itself
        name, cpu = threads[seen["tid"]]
        assert name  # the OS name (here the interpreter's: Python names no thread before 3.14)
        assert 0.25 <= cpu <= 5.0  # it spun 0.3 s of its own CPU time
    finally:
        stop.set()
        worker.join()


def test_thread_cpu_of_a_missing_process_is_empty() -> None:
    assert thread_cpu_s(2**22 + 1) == {}  # above Linux's pid_max ceiling: never a live process
    assert vm_hwm_bytes(2**22 + 1) is None


def test_thread_groups_sum_by_name_and_count_libavcodec_workers_together() -> None:
    groups = thread_groups(
        [
            ("rung-720p", 2.0),
            ("rung-720p", 1.5),  # an x264 frame thread started by the rung's thread
            ("av:h264:df0", 1.0),
            ("av:h264:df1", 0.5),
            ("enc0:0:libx264", 0.25),  # not a numbered worker: kept as it is
            ("python", 0.1),
        ]
    )
    assert groups == {"rung-720p": 3.5, "av:h264:df*": 1.5, "enc0:0:libx264": 0.25, "python": 0.1}
    assert list(groups) == ["rung-720p", "av:h264:df*", "enc0:0:libx264", "python"]  # largest first
