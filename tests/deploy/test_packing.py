"""The Batch packing hint (``deploy.packing``): jobs per instance from the host's vCPUs and memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.packing import jobs_per_instance, read_memory_mib


@pytest.mark.parametrize(
    ("host_vcpus", "memory", "jobs"),
    [(64, None, 32), (4, None, 2), (1, None, 1), (64, 16384, 8), (8, 65536, 4)],
)
def test_jobs_per_instance(host_vcpus: int, memory: int | None, jobs: int) -> None:
    hint, reason = jobs_per_instance(host_vcpus, host_memory_mib=memory)
    assert hint == jobs
    assert f"{host_vcpus} vCPU" in reason


def test_read_memory_mib(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal:       16252928 kB\nMemFree:         1000 kB\n")
    assert read_memory_mib(tmp_path / "meminfo") == 15872
    assert read_memory_mib(tmp_path / "missing") is None
