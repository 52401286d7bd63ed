"""bench.report and bench.variants: the same ladder on both sides, the link rate rule, and smoke runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bench.report import GOALS, MIN_TRANSFER_SHARE, Bench, choose_rate, goals
from bench.sources import SampleSpec, make_sample
from bench.variants import plan_of, steps_for

REPO = Path(__file__).resolve().parents[2]
MB = 1_000_000


@pytest.mark.parametrize(("wall", "source", "ladder"), [(100.0, 170 * MB, 40 * MB), (30.0, 54 * MB, 13 * MB)])
def test_the_link_rate_keeps_each_transfer_between_a_fifth_and_all_of_the_transcode(
    wall: float, source: int, ladder: int
) -> None:
    rate, why = choose_rate(wall, source, ladder)
    seconds = [size * 8 / (rate * MB) for size in (source, ladder)]
    assert min(seconds) >= MIN_TRANSFER_SHARE * wall and max(seconds) <= wall
    assert "geometric middle" in why


def test_the_link_rate_says_when_no_rate_can_pass() -> None:
    rate, why = choose_rate(100.0, 200 * MB, 20 * MB)  # the source is 10x the ladder
    assert 20 * MB * 8 / (rate * MB) >= MIN_TRANSFER_SHARE * 100.0
    assert "cannot pass" in why


@pytest.mark.parametrize(("chunks_cpu", "passed"), [(104.0, True), (106.0, False)])
def test_forced_chunks_are_held_to_five_percent_more_cpu_than_serial(chunks_cpu: float, passed: bool) -> None:
    bench = cast(Bench, SimpleNamespace(args=SimpleNamespace(long=False, variants=[]), plans=[]))
    rows: dict[str, Any] = {
        "0/engine": {"runs_ok": 3, "cpu_s": 100.0, "wall_s": 50.0},
        "0/engine-chunks": {"runs_ok": 3, "cpu_s": chunks_cpu, "wall_s": 49.0},
    }
    [(name, ok, detail)] = goals(bench, rows, {}, None)
    assert (name, ok) == ("chunks CPU engine", passed) and GOALS["chunks_cpu"] == 1.05
    assert detail.startswith(f"engine-chunks/engine CPU {chunks_cpu / 100:.3f}") and "wall 0.980" in detail


def test_the_cli_gets_the_engine_s_plan_and_x264_options(tmp_path: Path) -> None:
    source = make_sample(tmp_path / "src.mp4", SampleSpec(width=854, height=480, fps=25, seconds=0.5))
    plan = plan_of(source, preset="faster", crf=21)
    assert [(r.name, r.width, r.height, r.fps) for r in plan.rungs] == [
        ("480p", 854, 480, Fraction(25)),
        ("360p", 640, 360, Fraction(25)),
    ]
    assert all(r.gop_frames == 50 and r.segment_s == pytest.approx(4.0) for r in plan.rungs)
    [[cmd]] = steps_for("cli", plan, tmp_path / "run", ffmpeg="ffmpeg")
    assert cmd[cmd.index("-filter_complex") + 1] == (
        "[0:v:0]split=2[s0][s1];[s0]format=yuv420p[v0];[s1]scale=640:360:flags=bicubic,format=yuv420p[v1]"
    )
    for i, rung in enumerate(plan.rungs):
        assert cmd[cmd.index(f"-crf:v:{i}") + 1] == "21" and cmd[cmd.index(f"-preset:v:{i}") + 1] == "faster"
        assert cmd[cmd.index(f"-x264-params:v:{i}") + 1] == rung.x264["x264-params"]
        assert cmd[cmd.index(f"-b:v:{i}") + 1] == f"{rung.bitrate_kbps}k"
    assert "-threads:v:0" not in cmd  # the CLI keeps its own thread defaults
    per_rung = steps_for("cli-rung", plan, tmp_path / "run", ffmpeg="ffmpeg")
    assert len(per_rung) == 1 and len(per_rung[0]) == 3  # one step: two rungs and the audio side by side
    assert [len(step) for step in steps_for("seq", plan, tmp_path / "run", ffmpeg="ffmpeg", s3="s3://b/src0/q1/")] == [
        1,
        1,
        1,
    ]


def test_the_bare_engine_leaves_out_thumbnails_chapters_and_loudness(tmp_path: Path) -> None:
    # The engine row minus the bare row is what these outputs cost: the bare run must make none of them.
    source = make_sample(tmp_path / "src.mp4", SampleSpec(width=426, height=240, fps=25, seconds=1.0))
    plan = plan_of(source, preset="ultrafast", crf=28)
    made = {}
    for key in ("engine", "engine-bare"):
        [[cmd]] = steps_for(key, plan, tmp_path / key, ffmpeg="ffmpeg")
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        names = {p.name for p in (tmp_path / key / "ladder").iterdir()}
        loudness = [r.get("loudness") for r in result["renditions"] if r["kind"] == "audio"]
        made[key] = ({"thumbnails.vtt", "chapters.json"} & names, loudness != [None])
    assert made["engine"] == ({"thumbnails.vtt", "chapters.json"}, True)
    assert made["engine-bare"] == (set(), False)


def test_the_chunks_variant_runs_time_chunks(tmp_path: Path) -> None:
    source = make_sample(tmp_path / "src.mp4", SampleSpec(width=426, height=240, fps=25, seconds=13.0))
    plan = plan_of(source, preset="ultrafast", crf=28)
    [[cmd]] = steps_for("engine-chunks", plan, tmp_path / "chunks", ffmpeg="ffmpeg")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "chunk(s) on" in json.loads(done.stdout)["execution"]


def _report(tmp_path: Path, *args: str) -> dict[str, object]:
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "bench.report", "--smoke", "--out", str(out), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    report: dict[str, object] = json.loads((out / "report.json").read_text())
    assert (out / "report.md").read_text().startswith("# bench report")
    return report


@pytest.mark.slow
def test_smoke_engine_against_both_clis(tmp_path: Path) -> None:
    report = _report(tmp_path)
    rows, rungs = report["variants"], report["rungs"]
    assert isinstance(rows, dict) and isinstance(rungs, dict)
    for key in ("engine", "cli", "cli-rung"):
        row = rows[f"0/{key}"]
        assert row["runs_ok"] == 1 and row["wall_s"] > 0 and row["cpu_s"] > 0 and row["peak_rss_bytes"] > 0
        assert row["bytes"]["audio"] > 0
        for rung in ("480p", "360p"):
            facts = rungs[f"{key}/{rung}"]
            assert facts["bytes"] > 0 and facts["frames"] == 90 and facts["missing"] == 0
            assert 25 < facts["psnr_y_db"] < 60 and "threads=" in facts["x264_threads"]
            # At the source's size a rung also loses the detail its scaling dropped: never above the figure
            # measured at its own size (equal for a rung at the source's size).
            assert 20 < facts["psnr_y_src_db"] <= facts["psnr_y_db"] + 0.01
            assert 0.5 < facts["ssim_y_src"] < 1.0
    assert any(name.startswith("rung-") for name in rows["0/engine"]["thread_cpu_s"])
    assert report["x264_mismatches"] == []  # only thread counts may differ from the engine's x264 settings
    stages = report["stages"]
    assert isinstance(stages, dict) and stages["t_limit_s"] > 0 and all(v > 0 for v in stages["encode_cpu_s"].values())
    assert {g["name"] for g in report["goals"]} >= {"wall", "efficiency", "peak RSS", "quality 480p"}  # type: ignore[attr-defined]


@pytest.mark.slow
def test_smoke_through_object_storage(tmp_path: Path) -> None:
    report = _report(tmp_path, "--variants", "engine,s3,seq,get,put", "--no-psnr", "--no-stages")
    rows = report["variants"]
    assert isinstance(rows, dict)
    s3, seq, put = rows["0/s3"], rows["0/seq"], rows["0/put"]
    source_bytes = (tmp_path / "report" / "sources").glob("*.mp4").__next__().stat().st_size
    assert s3["inner"]["reader"]["bytes_fetched"] >= source_bytes  # streamed through ranged GETs
    assert s3["stored"]["master"] and s3["stored"]["objects"] == s3["inner"]["sink"]["objects"] > 1
    assert s3["peak_scratch_bytes"] == 0  # nothing on local disk
    assert seq["peak_scratch_bytes"] >= source_bytes and seq["stored"]["master"]
    assert put["stored"]["objects"] == put["inner"]["files"] > 1
    assert rows["0/get"]["inner"]["source_bytes"] == source_bytes
    goals = {g["name"]: g for g in report["goals"]}  # type: ignore[attr-defined]
    assert set(goals) == {"transfer share", "overlap"}
    assert math.isfinite(rows["0/engine"]["inner_wall_s"])
