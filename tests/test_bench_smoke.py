"""The benchmark report must keep working: a short smoke of ``python -m bench.report``.

Runs all three variants (engine, one-process ffmpeg CLI, one ffmpeg per rung)
once on a 3 s 854x480 source made by the bench, plus the one-thread stage
measurement and the PSNR pass. Goals are not checked here (a smoke run on a
tiny source says nothing about them); that every variant ran and every number
is there is. Needs the ``bench`` extra (imageio-ffmpeg) or ffmpeg on PATH.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def test_report_smoke(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "bench.report", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    assert "GOAL wall:" in done.stdout

    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().startswith("# transcode-bench report")
    rungs = [r["name"] for r in report["ladder"]]
    assert len(rungs) >= 2  # a scaled rung as well as the source-size one
    assert set(report["variants"]) == {"a", "b", "c"}
    for key, variant in report["variants"].items():
        assert variant["runs_ok"] == 1 and variant["runs_failed"] == 0, key
        assert variant["wall_s"] > 0 and variant["cpu_s"] > 0 and variant["peak_rss_bytes"] > 0, key
        assert variant["realtime_x"] > 0 and variant["audio_bytes"] > 0, key
        assert set(variant["rungs"]) == set(rungs), key
        for name, rung in variant["rungs"].items():
            assert rung["bytes"] > 0, (key, name)
            assert rung["sampled"] > 0 and rung["missing"] == 0, (key, name)
            # Every output frame is there, and the quality is that of a real encode, aligned with the source.
            assert rung["frames"] == 90, (key, name)
            assert math.isfinite(rung["psnr_y_db"]) and 25 < rung["psnr_y_db"] < 60, (key, name, rung)
            assert "threads=" in rung["x264_threads"], (key, name)
    # Where each variant's CPU went, by thread name: the engine's rung threads carry the rung's name.
    engine_threads = report["variants"]["a"]["thread_cpu_s"]
    assert any(name.startswith("rung-") for name in engine_threads), engine_threads
    assert sum(report["variants"]["b"]["thread_cpu_s"].values()) > 0
    stages = report["stages"]
    assert stages["t_limit_s"] > 0 and stages["decode_cpu_s"] > 0
    assert all(v > 0 for v in stages["encode_cpu_s"].values())
    assert {g["name"] for g in report["goals"]} >= {"wall", "efficiency", "peak RSS"}
    assert all(g["status"] in {"PASS", "FAIL"} for g in report["goals"])
    # The CLI was given the engine's exact x264 settings: only thread counts may differ.
    assert report["x264_mismatches"] == []
