"""The many-core projection of bench/projection.py: the model's arithmetic."""

from __future__ import annotations

import pytest

from bench.projection import MAIN_PARALLELISM, project, report


def test_chunks_dominate_on_few_cores_and_the_main_process_on_many() -> None:
    few = project(chunks_cpu_s=900.0, main_cpu_s=100.0, cores=4)
    assert few.limited_by == "chunks"
    assert few.wall_s == pytest.approx(1000.0 / 4)
    assert few.efficiency == pytest.approx(1.0)
    many = project(chunks_cpu_s=900.0, main_cpu_s=100.0, cores=64)
    assert many.limited_by == "main process"
    assert many.wall_s == pytest.approx(100.0 / MAIN_PARALLELISM)
    assert many.efficiency == pytest.approx(1000.0 / (64 * 25.0))


def test_the_report_reads_the_engines_json() -> None:
    result = {
        "execution": "3 chunk(s) on 1 worker process(es)",
        "cpu_s": 30.0,
        "source": {"duration_s": 16.0},
        "ladder": {"segment_s": 4.0},
        "renditions": [{"kind": "video", "segments": [{}, {}, {}, {}]}, {"kind": "audio", "segments": [{}] * 4}],
        "chunks": [
            {"first": 0, "end": 1, "cpu_s": 6.0, "wall_s": 6.5},
            {"first": 1, "end": 2, "cpu_s": 7.0, "wall_s": 7.5},
            {"first": 2, "end": 3, "cpu_s": 7.0, "wall_s": 7.5},
        ],
    }
    lines = report(result, cores=(4,))
    # 20 s of CPU for 3 segments in chunks: 6.67 s a segment; the main process's 10 s less its own
    # segment's 6.67 s is its fixed part.
    assert any(line.startswith("chunks: 3 (3 of 4 segments), CPU 20.0 s") for line in lines)
    assert any("fixed part" in line and " 3.3 s" in line for line in lines)
    assert lines[-1].strip().startswith("4 vCPU")
