"""The many-core projection of bench/projection.py: the engine's own plan, scheduled by hand here."""

from __future__ import annotations

from fractions import Fraction

import pytest

from bench.projection import project, report
from transcoder.models import Ladder, Rung

# The default ladder of a 1080p30 source: the top rung is 57% of the pixel rate, so a chunk worker
# gets 7 cores (x264's 4 useful frame threads / 0.57) and 16 cores make 2 workers and 6 chunks.
DEFAULT = Ladder(
    rungs=tuple(
        Rung(name=f"{h}p", width=w, height=h, fps=Fraction(30), bitrate_kbps=1, maxrate_kbps=1, bufsize_kbps=1)
        for w, h in ((1920, 1080), (1280, 720), (854, 480), (640, 360))
    ),
    audio=(),
    gop_s=2.0,
    segment_s=4.0,
)


def test_four_cores_run_one_ladder_and_keep_every_core_busy() -> None:
    p = project(DEFAULT, per_segment_cpu_s=7.0, fixed_cpu_s=14.0, segments=30, cores=4)
    assert p.execution.startswith("execution: serial")
    assert p.wall_s == pytest.approx(224.0 / 4) and p.efficiency == pytest.approx(1.0)
    assert p.limited_by == "the cores"


def test_sixteen_cores_keep_every_core_busy_with_whole_rounds_of_chunks() -> None:
    # 30 segments: 6 worker chunks (4, 5, 4, 4, 4, 5 segments: 1 s of 7 cores each) on 2 workers end at
    # 12 and 14 s; the main process's 4 segments and 14 s fixed part take (28 + 14) / 7 = 6 s; all 224 s
    # of CPU on 16 cores take 14 s.
    p = project(DEFAULT, per_segment_cpu_s=7.0, fixed_cpu_s=14.0, segments=30, cores=16)
    assert p.execution.startswith("execution: 6 chunk(s) on 2 worker process(es) of 7 core(s)")
    assert p.wall_s == pytest.approx(14.0) and p.limited_by == "the cores" and p.efficiency == pytest.approx(1.0)


def test_too_few_segments_leave_cores_idle() -> None:
    # 9 segments: 6 worker chunks of 1, 2, 1, 1, 1, 2 segments end at 3 and 5 s on 2 workers; 63 s on 16
    # cores would take 3.94 s.
    p = project(DEFAULT, per_segment_cpu_s=7.0, fixed_cpu_s=0.0, segments=9, cores=16)
    assert p.limited_by == "the chunks' granularity" and p.wall_s == pytest.approx(5.0)
    assert p.efficiency == pytest.approx(63.0 / (16 * 5.0))


def test_a_large_fixed_part_makes_the_main_process_the_limit() -> None:
    p = project(DEFAULT, per_segment_cpu_s=7.0, fixed_cpu_s=200.0, segments=30, cores=16)
    assert p.limited_by == "the main process" and p.wall_s == pytest.approx((28.0 + 200.0) / 7)


def test_the_report_reads_the_engines_json() -> None:
    video = {"kind": "video", "name": "360p", "width": 640, "height": 360, "fps": 30.0, "segments": [{}] * 4}
    result = {
        "execution": "3 chunk(s) on 1 worker process(es)",
        "cpu_s": 30.0,
        "source": {"duration_s": 16.0},
        "ladder": {
            "segment_s": 4.0,
            "gop_s": 2.0,
            "rungs": [{**video, "bitrate_kbps": 800, "maxrate_kbps": 880, "bufsize_kbps": 1600}],
        },
        "renditions": [video, {"kind": "audio", "name": "audio", "segments": [{}] * 4}],
        "chunks": [
            {"first": 0, "end": 1, "cpu_s": 6.0, "wall_s": 6.5, "peak_rss_bytes": 300 * 2**20},
            {"first": 1, "end": 2, "cpu_s": 7.0, "wall_s": 7.5, "peak_rss_bytes": 310 * 2**20},
            {"first": 2, "end": 3, "cpu_s": 7.0, "wall_s": 7.5, "peak_rss_bytes": 305 * 2**20},
        ],
    }
    lines = report(result, cores=(4,))
    # 20 s of CPU for 3 segments in chunks: 6.67 s a segment; the main process's 10 s less its own
    # segment's 6.67 s is its fixed part.
    assert any(line.startswith("chunks: 3 (3 of 4 segments), CPU 20.0 s") and "310 MiB" in line for line in lines)
    assert any("fixed part" in line and " 3.3 s" in line for line in lines)
    assert "  a 1 h lecture, 900 segments:" in lines
    assert lines[-1].strip().startswith("4 vCPU")
