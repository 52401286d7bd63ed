"""The ``transcode`` command, run as a real subprocess (``python -m transcoder``).

Exit codes: 0 ok, 2 usage, 3 bad input, 4 media, 5 output, 6 cancelled,
70 internal. Errors are one line on stderr starting ``transcode: error:``,
never a traceback; progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.media import make_clip, make_random_bytes

ROOT = Path(__file__).resolve().parents[2]
PROGRESS = re.compile(r"^(transcoding|publishing|done)\s+\d+\.\d%\s")
ERROR_PREFIX = "transcode: error:"


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("COLUMNS", None)
    return env


def run_cli(*args: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transcoder", *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_one_error_line(stderr: str) -> str:
    """Exactly one ``transcode: error:`` line, no traceback; returns that line."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, stderr
    return errors[0]


def listing(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def small_clip(cli_dir: Path) -> Path:
    """2 s 320x180 30 fps H.264 + AAC stereo."""
    return make_clip(cli_dir / "clip.mp4", seconds=2.0)


@pytest.fixture(scope="module")
def bad_input(cli_dir: Path) -> Path:
    return make_random_bytes(cli_dir / "garbage.mp4")


@pytest.fixture(scope="module")
def plan_json(small_clip: Path, cli_dir: Path) -> dict[str, Any]:
    done = run_cli(small_clip, "--plan", "--json", cwd=cli_dir)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert isinstance(payload, dict)
    return payload


# ----------------------------------------------------------------------------- --plan


def x264_lines(stdout: str) -> dict[str, dict[str, str]]:
    """``x264 <rung>: k=v k=v ...`` lines as {rung: {k: v}}."""
    found: dict[str, dict[str, str]] = {}
    for line in stdout.splitlines():
        if m := re.match(r"^x264 (\S+): (\S+=.*)$", line):
            found[m.group(1)] = dict(item.split("=", 1) for item in m.group(2).split())
    return found


def test_plan_prints_ladder_and_x264_settings(small_clip: Path, tmp_path: Path, plan_json: dict[str, Any]) -> None:
    before = listing(small_clip.parent)
    done = run_cli(small_clip, "--plan", "-o", tmp_path / "never", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert "320x180" in out and "30.000" in out
    rungs = plan_json["ladder"]["rungs"]
    assert [r["name"] for r in rungs] == ["180p"]
    rung = rungs[0]
    # the ladder table: one row per rung with its size, rate caps and level
    row = next(line.split() for line in out.splitlines() if line.startswith(rung["name"] + " "))
    assert row[:6] == [
        rung["name"],
        f"{rung['width']}x{rung['height']}",
        "30.000",
        str(rung["bitrate_kbps"]),
        str(rung["maxrate_kbps"]),
        str(rung["bufsize_kbps"]),
    ]
    assert row[6:8] == ["high", rung["level"]]
    # the exact x264 settings
    x264 = x264_lines(out)
    assert list(x264) == ["180p"]
    options = x264["180p"]
    assert options["profile"] == "high"
    assert options["level"] == rung["level"]
    assert options["preset"] == "veryfast"
    assert options["crf"] == "23"
    assert options["maxrate"] == str(rung["maxrate_kbps"] * 1000)
    assert options["bufsize"] == str(rung["bufsize_kbps"] * 1000)
    params = dict(item.split("=") for item in options["x264-params"].split(":"))
    assert params == {"keyint": "60", "min-keyint": "60", "scenecut": "0", "open-gop": "0"}  # 2 s at 30 fps
    assert int(rung["maxrate_kbps"]) > int(rung["bitrate_kbps"])
    # nothing written anywhere
    assert listing(tmp_path) == []
    assert listing(small_clip.parent) == before


def test_plan_keyint_follows_gop_seconds(small_clip: Path, tmp_path: Path) -> None:
    done = run_cli(small_clip, "--plan", "--gop-seconds", "1", "--segment-seconds", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    params = x264_lines(done.stdout)["180p"]["x264-params"]
    assert params.startswith("keyint=30:min-keyint=30:scenecut=0")
    assert "keyframe every 1 s" in done.stdout


def test_plan_json(plan_json: dict[str, Any]) -> None:
    rungs = plan_json["ladder"]["rungs"]
    assert rungs and all(
        {"name", "width", "height", "bitrate_kbps", "maxrate_kbps", "bufsize_kbps"} <= set(r) for r in rungs
    )
    assert (rungs[0]["width"], rungs[0]["height"]) == (320, 180)
    assert set(plan_json["x264"]) == {r["name"] for r in rungs}
    assert plan_json["x264"]["180p"]["profile"] == "high"
    assert plan_json["segment_format"] == "ts"
    assert plan_json["source"]["video"]["display_width"] == 320
    assert plan_json["source"]["audio"]["channels"] == 2


# ----------------------------------------------------------------------------- a real run


def test_run_prints_summary_and_progress(small_clip: Path, tmp_path: Path) -> None:
    done = run_cli(small_clip, "-o", "out", "--preset", "ultrafast", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    master = tmp_path / "out" / "master.m3u8"
    assert master.is_file()
    assert master.read_text(encoding="utf-8").startswith("#EXTM3U")
    out = done.stdout
    header = out.splitlines()[0].split()
    assert header[:2] == ["rendition", "size"]
    assert re.search(r"^180p\s+320x180\s+30\.000\s+avc1\.", out, re.MULTILINE)
    assert re.search(r"^audio\s+audio\s+-\s+mp4a\.40\.2", out, re.MULTILINE)
    assert f"master playlist: {Path('out') / 'master.m3u8'}" in out
    # not a terminal: plain progress lines on stderr, none on stdout, no carriage returns
    lines = done.stderr.splitlines()
    assert lines and all(PROGRESS.match(line) for line in lines), done.stderr
    assert lines[-1].startswith("done") and "100.0%" in lines[-1]
    assert "\r" not in done.stderr
    assert not any(PROGRESS.match(line) for line in out.splitlines())


def test_run_json(small_clip: Path, tmp_path: Path) -> None:
    done = run_cli(small_clip, "-o", "out", "--preset", "ultrafast", "--json", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # --quiet: no progress
    payload = json.loads(done.stdout)
    master = tmp_path / payload["master_path"]
    assert master.is_file() and master.name == "master.m3u8"
    renditions = {r["name"]: r for r in payload["renditions"]}
    assert set(renditions) == {"180p", "audio"}
    assert renditions["180p"]["kind"] == "video"
    assert (renditions["180p"]["width"], renditions["180p"]["height"]) == (320, 180)
    assert renditions["180p"]["segment_count"] >= 1
    for name in payload["files"]:
        assert (tmp_path / "out" / name).is_file(), name


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("mode", [("-o", "out"), ("--plan",)], ids=["run", "plan"])
def test_bad_input_exits_3_with_one_line(bad_input: Path, tmp_path: Path, mode: tuple[str, ...]) -> None:
    done = run_cli(bad_input, *mode, cwd=tmp_path)
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    line = assert_one_error_line(done.stderr)
    assert str(bad_input) in line
    assert listing(tmp_path) == []


def test_missing_file_exits_3_with_one_line(tmp_path: Path) -> None:
    done = run_cli(tmp_path / "nope.mp4", "-o", "out", cwd=tmp_path)
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1
    assert "not found" in assert_one_error_line(done.stderr)
    assert listing(tmp_path) == []


def assert_usage_error(done: subprocess.CompletedProcess[str], fragment: str) -> None:
    """click's usage error: exit 2, an ``Error:`` line naming the problem, no traceback."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    assert fragment in errors[0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--bogus",), "No such option"),
        (("-o", "out", "--format", "mkv"), "'--format'"),
        (("-o", "out", "--segment-seconds", "3", "--gop-seconds", "2"), "whole number of GOPs"),
        (("-o", "out", "--preset", "warp-speed"), "'--preset'"),
        (("-o", "out", "--crf", "99"), "'--crf'"),
        ((), "'-o'"),  # no output directory and no --plan
    ],
    ids=["unknown-option", "format-mkv", "segment-not-whole-gops", "bad-preset", "crf-range", "no-output"],
)
def test_usage_errors_exit_2(small_clip: Path, tmp_path: Path, args: tuple[str, ...], fragment: str) -> None:
    done = run_cli(small_clip, *args, cwd=tmp_path)
    assert_usage_error(done, fragment)
    assert listing(tmp_path) == []


def test_directory_as_source_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--plan", cwd=tmp_path)
    assert_usage_error(done, "is a directory")


def test_output_that_is_a_file_is_a_usage_error(small_clip: Path, tmp_path: Path) -> None:
    existing = tmp_path / "taken"
    existing.write_text("x", encoding="utf-8")
    done = run_cli(small_clip, "-o", existing, cwd=tmp_path)
    assert_usage_error(done, "is a file")


def test_output_that_cannot_be_created_exits_5(small_clip: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("x", encoding="utf-8")
    done = run_cli(small_clip, "-o", blocker / "out", "--preset", "ultrafast", cwd=tmp_path)
    line = assert_one_error_line(done.stderr)
    assert "internal error" not in line
    assert done.returncode == 5


# ----------------------------------------------------------------------------- cancellation


@pytest.fixture(scope="module")
def longer_clip(cli_dir: Path) -> Path:
    """5 s of 640x360 with audio: at preset medium a run takes a few seconds."""
    return make_clip(cli_dir / "longer.mp4", width=640, height=360, seconds=5.0)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_cancels_the_run(longer_clip: Path, tmp_path: Path, signum: signal.Signals) -> None:
    outdir = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "transcoder", str(longer_clip), "-o", str(outdir), "--preset", "medium"],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()  # the first progress line: the run is under way
        assert first.startswith("transcoding"), first
        process.send_signal(signum)
        stdout, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 6, rest
    assert stdout == ""
    line = assert_one_error_line(rest)
    assert "cancel" in line
    assert all(PROGRESS.match(other) for other in rest.splitlines() if other != line), rest
    assert not (outdir / "master.m3u8").exists()
    assert [p for p in outdir.rglob("*") if p.is_file()] == []  # what it wrote was removed
