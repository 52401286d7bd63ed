"""bench.runner: what it measures of real child processes and threads."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

from bench.runner import run_steps, thread_cpu_s, thread_groups, vm_hwm_bytes

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
MiB = 2**20


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_thread_cpu_counts_each_thread_apart() -> None:
    seen: dict[str, int] = {}
    spun, stop = threading.Event(), threading.Event()

    def spin() -> None:
        seen["tid"] = threading.get_native_id()
        end = time.thread_time() + 0.3
        while time.thread_time() < end:
            pass
        spun.set()
        stop.wait()

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        assert spun.wait(30)
        threads = thread_cpu_s(os.getpid())
        assert threading.get_native_id() in threads
        name, cpu = threads[seen["tid"]]
        assert name and 0.25 <= cpu <= 5.0
    finally:
        stop.set()
        worker.join()
    assert thread_cpu_s(2**22 + 1) == {} and vm_hwm_bytes(2**22 + 1) is None  # above pid_max: never a process


def test_thread_groups_sum_by_name_and_count_libavcodec_workers_together() -> None:
    groups = thread_groups(
        [("rung-720p", 2.0), ("rung-720p", 1.5), ("av:h264:df0", 1.0), ("av:h264:df1", 0.5), ("enc0:0:libx264", 0.25)]
    )
    assert groups == {"rung-720p": 3.5, "av:h264:df*": 1.5, "enc0:0:libx264": 0.25}
    assert list(groups) == ["rung-720p", "av:h264:df*", "enc0:0:libx264"]


def test_a_child_s_cpu_peak_memory_threads_and_scratch_are_its_own(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # 200 MiB touched, 0.4 s of CPU on a named thread, 3 MiB written to the scratch directory and kept a while.
    code = (
        "import threading, time, ctypes\n"
        "def spin():\n"
        "    end = time.thread_time() + 0.4\n"
        "    while time.thread_time() < end: pass\n"
        "t = threading.Thread(target=spin); t.start(); t.join()\n"
        "block = bytearray(200 * 2**20)\n"
        f"open({str(scratch / 'f')!r}, 'wb').write(b'x' * 3 * 2**20)\n"
        "time.sleep(0.6)\n"
    )
    m = run_steps([[_python(code)]], log_stem=tmp_path / "log", timeout_s=60, scratch=[scratch])
    assert m.ok and m.exit_codes == [0]
    assert 0.35 <= m.cpu_s <= 5
    assert 200 * MiB <= m.peak_rss_bytes <= 400 * MiB  # VmHWM: the child's, not the test process's
    assert m.peak_scratch_bytes == 3 * MiB
    assert sum(m.thread_cpu_s.values()) > 0


def _meet(mine: Path, other: Path) -> list[str]:
    """A child that marks ``mine`` and exits 0 once ``other`` is marked too (1 if it never is): side by side."""
    wait = f"while not os.path.exists({str(other)!r}) and time.monotonic() < end: time.sleep(0.01)"
    return _python(
        f"import os, sys, time\nopen({str(mine)!r}, 'w').close()\nend = time.monotonic() + 60\n{wait}\n"
        f"sys.exit(0 if os.path.exists({str(other)!r}) else 1)"
    )


def test_steps_run_in_order_side_by_side_within_a_step_and_stop_at_a_failure(tmp_path: Path) -> None:
    a, b, marks = tmp_path / "a", tmp_path / "b", tmp_path / "marks"
    steps = [
        [_meet(a, b), _meet(b, a)],  # each waits for the other: both exit 0 only if they ran at once
        [_python(f"import os; open({str(marks)!r}, 'w').write(str(os.path.exists({str(a)!r}))); raise SystemExit(3)")],
        [_python(f"open({str(marks)!r}, 'w').write('never')")],
    ]
    m = run_steps(steps, log_stem=tmp_path / "log", timeout_s=120)
    assert m.exit_codes == [0, 0, 3] and not m.ok
    assert marks.read_text() == "True"  # the second step ran after the first, the third not at all
    assert len(m.step_wall_s) == 2


def test_a_run_past_its_timeout_is_killed(tmp_path: Path) -> None:
    m = run_steps([[_python("import time; time.sleep(60)")]], log_stem=tmp_path / "log", timeout_s=0.5)
    assert m.timed_out and not m.ok and m.exit_codes == [-9]  # SIGKILL, long before the sleep's end
