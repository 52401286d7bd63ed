"""Checkpoint and resume (transcoder.checkpoint): a run killed part way is resumed, not started over.

The kill is real (``kill -9`` of the ``transcode`` process once about 60% of
the spans have records); the rerun must encode at most 45% of the frames
again, keep the earlier segments byte for byte (the same bytes an
uninterrupted run writes), and publish a ladder that plays through the seam.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import m3u8
import pytest

from tests.support.media import make_clip
from tests.support.played import played_frames
from tests.transcoder.test_cli import cli_env
from transcoder import EncoderSettings, TranscodeConfig, transcode
from transcoder.checkpoint import RECORD_DIR, SpanRecord
from transcoder.errors import CancelledError
from transcoder.models import Progress

SECONDS = 12
FPS = 30
# One-second segments and spans: twelve records for twelve segments, so a kill
# lands between records at a known share of the timeline.
CLI_ARGS = (
    *("--segment-seconds", "1", "--gop-seconds", "1", "--checkpoint-seconds", "1", "--threads", "1"),
    *("--no-thumbnails", "--no-chapters", "--no-poster", "--preset", "medium", "-q", "--json"),
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 s of 640x360 (one 360p rung) with audio: at preset medium on one thread, a few seconds' work."""
    return make_clip(tmp_path_factory.mktemp("resume") / "lecture.mp4", width=640, height=360, seconds=SECONDS)


def transcode_cli(clip: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "transcoder", str(clip), "-o", str(out), *CLI_ARGS, *extra],
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def records(out: Path) -> list[Path]:
    folder = out / RECORD_DIR
    return sorted(folder.glob("span-*.json")) if folder.is_dir() else []


def kill_at(process: subprocess.Popen[str], out: Path, spans: int) -> int:
    """SIGKILL ``process`` once ``spans`` records exist; the record count it died with."""
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if len(records(out)) >= spans:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill: make it longer"
    return len(records(out))


def finished(process: subprocess.Popen[str]) -> dict[str, Any]:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    result: dict[str, Any] = json.loads(stdout)
    return result


def files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def decoded_times(out: Path, rendition: str) -> list[Fraction]:
    """Presentation times of every frame of ``rendition``, its media playlist's segments played in order."""
    return [time for time, _key in played_frames(out, rendition)]


@pytest.fixture(scope="module", params=["ts", "fmp4"])
def uninterrupted(request: pytest.FixtureRequest, clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(f"whole-{request.param}") / "out"
    finished(transcode_cli(clip, out, "--format", request.param))
    return out


def test_a_killed_run_resumes_and_keeps_its_segments(uninterrupted: Path, clip: Path, tmp_path: Path) -> None:
    fmt = "fmp4" if (uninterrupted / "360p" / "init.mp4").exists() else "ts"
    out = tmp_path / "out"
    recorded = kill_at(transcode_cli(clip, out, "--format", fmt), out, spans=7)
    assert 7 <= recorded < SECONDS
    assert not (out / "master.m3u8").exists()
    before = {path: os.stat(out / path).st_mtime_ns for path in files(out)}

    result = finished(transcode_cli(clip, out, "--format", fmt))

    # At most 45% of the frames encoded again: the rerun kept every recorded segment.
    kept = result["resumed_segments"]
    assert kept >= recorded
    video = next(r for r in result["renditions"] if r["kind"] == "video")
    assert len(video["segments"]) == SECONDS
    assert (SECONDS - kept) / SECONDS <= 0.45
    untouched = sorted(p for p, mtime in before.items() if (out / p).exists() and os.stat(out / p).st_mtime_ns == mtime)
    extension = "m4s" if fmt == "fmp4" else "ts"
    kept_segments = [f"360p/seg_{i:05d}.{extension}" for i in range(kept)]
    assert set(kept_segments) <= set(untouched)  # not rewritten, not even with the same bytes
    # ... and byte-identical to what an uninterrupted run writes; the init segment too.
    whole, resumed = files(uninterrupted), files(out)
    for path in kept_segments + (["360p/init.mp4"] if fmt == "fmp4" else []):
        assert resumed[path] == whole[path], path
    # The same objects, and no checkpoint left in a published output.
    assert sorted(resumed) == sorted(whole)
    assert not any(path.startswith(RECORD_DIR) for path in resumed)

    # The playlists read as the uninterrupted run's: same names and durations, no discontinuity.
    for name in ("360p", "audio"):
        a, b = m3u8.load(str(uninterrupted / name / "index.m3u8")), m3u8.load(str(out / name / "index.m3u8"))
        assert [(s.uri, s.duration) for s in b.segments] == [(s.uri, s.duration) for s in a.segments]
        assert not any(s.discontinuity for s in b.segments)
    # The video plays through the seam: every frame, evenly spaced, at the uninterrupted run's times.
    times = decoded_times(out, "360p")
    assert len(times) == SECONDS * FPS
    assert {b - a for a, b in itertools.pairwise(times)} == {Fraction(1, FPS)}
    assert times == decoded_times(uninterrupted, "360p")

    # The manifest lists the kept segments with the hashes of their bytes, and no record.
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {entry["key"]: entry for entry in manifest["objects"]}
    for path in kept_segments:
        assert listed[path]["sha256"] == hashlib.sha256(resumed[path]).hexdigest()
    assert not any(key.startswith(RECORD_DIR) for key in listed)


def run_cancelled_after(clip: Path, out: Path, spans: int, **config: Any) -> None:
    """A library run cancelled (as SIGTERM does) once ``spans`` records are stored."""
    cancel = threading.Event()

    def progress(_: Progress) -> None:
        if len(records(out)) >= spans:
            cancel.set()

    with pytest.raises(CancelledError):
        transcode(clip, out, config=small_config(**config), progress=progress, cancel=cancel)


def small_config(**overrides: Any) -> TranscodeConfig:
    settings: dict[str, Any] = {
        "segment_s": 1.0,
        "gop_s": 1.0,
        "checkpoint_span_s": 2.0,
        "threads": 1,
        "thumbnails": False,
        "chapters": False,
        "poster": False,
    }
    settings.update(overrides)
    return TranscodeConfig(**settings)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("short") / "short.mp4", width=320, height=180, seconds=8)


def test_a_cancelled_run_keeps_only_what_its_records_vouch_for(short_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_cancelled_after(short_clip, out, spans=1)
    left = files(out)
    kept_records = [SpanRecord.from_json(left[path]) for path in sorted(left) if path.startswith(RECORD_DIR)]
    assert kept_records, left.keys()
    vouched = {
        f"{part.name}/{segment.uri}"
        for record in kept_records
        for part in record.renditions
        for segment in part.segments
    }
    media = {path for path in left if not path.startswith(RECORD_DIR)}
    assert media == vouched  # the rest (audio, unrecorded segments, playlists) was removed
    for record in kept_records:
        for part in record.renditions:
            for segment in part.segments:
                data = left[f"{part.name}/{segment.uri}"]
                assert (len(data), hashlib.sha256(data).hexdigest()) == (segment.size_bytes, segment.sha256)

    result = transcode(short_clip, out, config=small_config())
    assert result.resumed_segments == 2 * len(kept_records)
    assert (out / "master.m3u8").exists()
    assert not (out / RECORD_DIR).exists() or not list((out / RECORD_DIR).iterdir())


def test_other_settings_or_a_changed_source_start_over(short_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_cancelled_after(short_clip, out, spans=2)
    assert len(records(out)) >= 2
    # Another CRF: another fingerprint. The run starts over and removes the stale records when it is done.
    changed = transcode(short_clip, out, config=small_config(encoder=EncoderSettings(crf=30)))
    assert changed.resumed_segments == 0
    assert "another source or other settings" in (changed.checkpoint or "")
    assert records(out) == []

    run_cancelled_after(short_clip, out, spans=2)
    os.utime(short_clip)  # the source "changed": its modification time moved
    assert transcode(short_clip, out, config=small_config()).resumed_segments == 0


def test_a_damaged_segment_ends_the_resume_before_its_span(short_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_cancelled_after(short_clip, out, spans=3)
    kept = [SpanRecord.from_json(path.read_bytes()) for path in records(out)]
    assert len(kept) >= 3
    second = kept[1].renditions[0]
    damaged = out / second.name / second.segments[0].uri
    damaged.write_bytes(damaged.read_bytes()[:-188])  # truncated, as a write cut short by a crash
    result = transcode(short_clip, out, config=small_config())
    assert result.resumed_segments == 2  # the first span only
    video = next(r for r in result.renditions if r.kind == "video")
    assert len(video.segments) == 8
    assert len(decoded_times(out, video.name)) == 8 * FPS


def test_no_checkpoint_writes_no_records_and_ignores_them(short_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_cancelled_after(short_clip, out, spans=2)
    assert records(out)
    result = transcode(short_clip, out, config=small_config(checkpoint=False))
    assert result.resumed_segments == 0 and result.checkpoint == "off"
    assert records(out) == []  # this run rewrote what they vouched for: they were removed first
