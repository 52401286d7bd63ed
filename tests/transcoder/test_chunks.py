"""Segment-parallel encoding (transcoder.chunks, transcoder.chunk_pool): the plan, and chunked output.

A chunked run must publish what a serial run publishes: the same segment
names and durations, continuous timestamps across chunk boundaries with no
discontinuity, a keyframe at every segment start, one init segment per rung
(fMP4), rates measured from the final segments, and no checkpoint left.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import m3u8
import pytest

from tests.support.media import make_clip
from tests.support.played import played_frames
from tests.support.s3server import ACCESS_KEY, SECRET_KEY, SeaweedServer, Space, fast_config
from transcoder import TranscodeConfig, transcode
from transcoder.checkpoint import RECORD_DIR
from transcoder.chunks import CHUNKS_PER_WORKER, MAX_OVERLAP, Chunk, plan_execution
from transcoder.errors import CancelledError
from transcoder.models import Ladder, Progress, Rung

FPS = 30
SECONDS = 10


def ladder(*heights: int) -> Ladder:
    rungs = tuple(
        Rung(
            name=f"{h}p", width=h * 16 // 9, height=h, fps=Fraction(30), bitrate_kbps=h, maxrate_kbps=h, bufsize_kbps=h
        )
        for h in heights
    )
    return Ladder(rungs=rungs, audio=(), gop_s=2.0, segment_s=4.0)


DEFAULT = ladder(1080, 720, 480, 360)  # the top rung is 57% of the pixel rate


# --------------------------------------------------------------------------- the plan (pure)


def test_two_cores_run_serial_and_many_cores_run_chunks() -> None:
    common: dict[str, Any] = {"mode": "auto", "segments": 900, "segment_s": 4.0, "keyframes_s": None}
    two = plan_execution(DEFAULT, cores=2, **common)
    assert two.mode == "serial" and "within x264's 4 useful frame threads" in two.reason
    four = plan_execution(DEFAULT, cores=4, **common)
    assert four.mode == "serial"
    sixteen = plan_execution(DEFAULT, cores=16, **common)
    assert sixteen.mode == "chunks"
    assert sixteen.workers * sixteen.worker_cores <= 16
    assert len(sixteen.chunks) + 1 > sixteen.workers  # more chunks than workers: the last ones balance the load
    # Whole rounds: as many chunks for each worker, and one more, the main process's, of the same size.
    lecture = plan_execution(DEFAULT, cores=16, **{**common, "segments": 901})
    sizes = [c.segments for c in lecture.chunks]
    assert len(sizes) == lecture.workers * CHUNKS_PER_WORKER and max(sizes) - min(sizes) <= 1
    assert abs((901 - lecture.tail_first) - sizes[0]) <= 1
    alone = plan_execution(DEFAULT, mode="chunks", cores=2, segments=40, segment_s=4.0, keyframes_s=None, workers=1)
    assert [c.segments for c in alone.chunks] == [20] and alone.tail_first == 20  # one worker: one chunk each
    assert sixteen.describe()[0].startswith(f"execution: {len(sixteen.chunks)} chunk(s) on {sixteen.workers} worker")
    assert "VBV buffer 65% full" in sixteen.describe()[2] and len(two.describe()) == 1


def test_chunks_cover_every_segment_once_and_the_main_process_ends_the_timeline() -> None:
    plan = plan_execution(DEFAULT, mode="chunks", cores=2, segments=37, segment_s=4.0, keyframes_s=None, workers=2)
    assert plan.mode == "chunks"
    ranges = [*plan.chunks, Chunk(plan.tail_first, 37)]
    assert [c.first for c in ranges] == [0, *[c.end for c in ranges[:-1]]]
    assert all(c.segments >= 1 for c in ranges)


def test_stored_segments_are_not_planned_again() -> None:
    covered = [Chunk(0, 10), Chunk(14, 20)]
    plan = plan_execution(
        DEFAULT, mode="chunks", cores=2, segments=30, segment_s=4.0, keyframes_s=None, covered=covered, workers=2
    )
    planned = {i for c in plan.chunks for i in range(c.first, c.end)} | set(range(plan.tail_first, 30))
    assert planned == set(range(10, 14)) | set(range(20, 30))


def test_a_long_gop_source_stays_serial() -> None:
    # A screen recording with one keyframe: every chunk would decode from the start.
    plan = plan_execution(DEFAULT, mode="auto", cores=64, segments=150, segment_s=4.0, keyframes_s=[0.0])
    assert plan.mode == "serial" and "keyframes too far apart" in plan.reason
    # Keyframes every 2 s: the overlap is nothing.
    keyframes = [2.0 * i for i in range(300)]
    plan = plan_execution(DEFAULT, mode="auto", cores=64, segments=150, segment_s=4.0, keyframes_s=keyframes)
    assert plan.mode == "chunks" and plan.overlap < MAX_OVERLAP


def test_too_short_to_split() -> None:
    plan = plan_execution(DEFAULT, mode="chunks", cores=8, segments=2, segment_s=4.0, keyframes_s=None)
    assert plan.mode == "serial"


# --------------------------------------------------------------------------- chunked runs


CONFIG: dict[str, Any] = {
    "segment_s": 1.0,
    "gop_s": 1.0,
    "checkpoint_span_s": 2.0,
    "threads": 2,
    "workers": 2,
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s of 640x360 with audio (one 360p rung)."""
    return make_clip(tmp_path_factory.mktemp("chunks") / "lecture.mp4", width=640, height=360, seconds=SECONDS)


def run(clip: Path, out: Path, **overrides: Any) -> Any:
    return transcode(clip, out, config=TranscodeConfig(**{**CONFIG, **overrides}))


@pytest.mark.parametrize("fmt", ["ts", "fmp4"])
def test_a_chunked_run_publishes_what_a_serial_run_does(clip: Path, tmp_path: Path, fmt: str) -> None:
    serial = run(clip, tmp_path / "serial", parallel="serial", segment_format=fmt)
    chunked = run(clip, tmp_path / "chunked", parallel="chunks", segment_format=fmt)
    assert chunked.execution is not None and chunked.execution.startswith(("2 chunk", "4 chunk", "6 chunk"))
    assert " on 2 worker process(es)" in chunked.execution
    a, b = tmp_path / "serial", tmp_path / "chunked"
    for name in ("360p", "audio"):
        sa, sb = m3u8.load(str(a / name / "index.m3u8")), m3u8.load(str(b / name / "index.m3u8"))
        assert [(s.uri, s.duration) for s in sb.segments] == [(s.uri, s.duration) for s in sa.segments]
        assert not any(s.discontinuity for s in sb.segments)
    # Every frame, evenly spaced across the chunk boundaries, at the serial run's times; a keyframe at each segment.
    got, want = played_frames(b, "360p"), played_frames(a, "360p")
    assert [t for t, _ in got] == [t for t, _ in want]
    assert len(got) == SECONDS * FPS
    assert {y - x for (x, _), (y, _) in itertools.pairwise(got)} == {Fraction(1, FPS)}
    starts = {Fraction(i) + got[0][0] for i in range(SECONDS)}
    assert all(key for t, key in got if t in starts)
    # One init segment per rung (fMP4), audio encoded once: the same bytes as the serial run's.
    files = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert not (b / RECORD_DIR).exists()
    for segment in m3u8.load(str(a / "audio" / "index.m3u8")).segments:
        assert (b / "audio" / segment.uri).read_bytes() == (a / "audio" / segment.uri).read_bytes()
    # The master's rates are measured from the final segments; the manifest hashes are the files'.
    video = next(r for r in chunked.renditions if r.kind == "video")
    assert video.size_bytes == sum((b / "360p" / s.uri).stat().st_size for s in video.segments)
    # A chunk's x264 starts its VBV buffer where a running encoder sits (encode.MID_STREAM_VBV_INIT).
    # With x264's default start (90% full) this ladder of 2 s chunks came out 12.5% bigger than the
    # serial run's; at 0.65, 6.9% (the rest: a fresh encoder's first IDR, a finer quantiser).
    serial_video = next(r for r in serial.renditions if r.kind == "video")
    assert video.size_bytes < 1.10 * serial_video.size_bytes
    manifest = json.loads((b / "manifest.json").read_text())
    for entry in manifest["objects"]:
        if entry["sha256"] is None:
            continue  # the manifest itself
        assert hashlib.sha256((b / entry["key"]).read_bytes()).hexdigest() == entry["sha256"], entry["key"]
    assert serial.execution.startswith("serial") and serial.chunks == ()
    # What each worker's chunk cost, for the bench's projection (bench/projection.py).
    assert [(c.first, c.end) for c in chunked.chunks] == sorted((c.first, c.end) for c in chunked.chunks)
    assert chunked.chunks[0].first == 0 and all(c.cpu_s > 0 and c.wall_s > 0 for c in chunked.chunks)
    # Each worker's own peak (VmHWM from its exec), not the main process's high-water mark it was forked at.
    assert all(30 * 2**20 < c.peak_rss_bytes < chunked.peak_rss_bytes * 4 for c in chunked.chunks)


def test_a_chunked_run_resumes_from_an_earlier_runs_records(clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cancel = threading.Event()

    def progress(_: Progress) -> None:
        if len(list((out / RECORD_DIR).glob("span-*.json"))) >= 2:
            cancel.set()  # as SIGTERM does: the recorded segments stay

    with pytest.raises(CancelledError):
        transcode(clip, out, config=TranscodeConfig(**CONFIG, parallel="serial"), progress=progress, cancel=cancel)
    recorded = sorted(p.name for p in (out / "360p").glob("seg_*.ts"))
    assert len(recorded) >= 4
    before = {name: os.stat(out / "360p" / name).st_mtime_ns for name in recorded}

    result = run(clip, out, parallel="chunks")
    assert result.resumed_segments == len(recorded)
    assert all(os.stat(out / "360p" / name).st_mtime_ns == mtime for name, mtime in before.items())
    assert result.execution is not None and "chunk" in result.execution
    got = played_frames(out, "360p")
    assert len(got) == SECONDS * FPS
    assert {y - x for (x, _), (y, _) in itertools.pairwise(got)} == {Fraction(1, FPS)}
    assert not (out / RECORD_DIR).exists()


def test_chunks_upload_to_object_storage(
    clip: Path, seaweed: SeaweedServer, space: Space, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The workers make their own clients: credentials from the environment, as on Batch.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage = fast_config(seaweed.endpoint)
    result = transcode(clip, space.uri("out/"), config=TranscodeConfig(**CONFIG, parallel="chunks"), storage=storage)
    assert result.execution is not None and "chunk" in result.execution
    client = seaweed.client()
    keys = space.keys(client, "out/")
    video = next(r for r in result.renditions if r.kind == "video")
    assert [k for k in keys if k.startswith("out/360p/seg_")] == [f"out/360p/{s.uri}" for s in video.segments]
    assert "out/master.m3u8" in keys and not any(RECORD_DIR in k for k in keys)
    assert space.open_uploads(client) == []
    local = run(clip, tmp_path / "local", parallel="serial")
    assert [s.duration_s for s in video.segments] == [
        s.duration_s for s in next(r for r in local.renditions if r.kind == "video").segments
    ]


@pytest.fixture
def dropped(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per video packet the decoder looked at to skip (transcoder.decode.VideoSkip): 1 if it did."""
    from transcoder import decode

    seen: list[int] = []
    real = decode.Decoder._skipped

    def counting(self: decode.Decoder, packet: Any, vstream: Any) -> bool:
        skipped = real(self, packet, vstream)
        seen.append(int(skipped))
        return skipped

    monkeypatch.setattr(decode.Decoder, "_skipped", counting)
    return seen


def test_without_viewer_outputs_the_main_process_leaves_the_workers_video_undecoded(
    clip: Path, tmp_path: Path, dropped: list[int]
) -> None:
    off = {"thumbnails": False, "chapters": False, "poster": False}
    serial = run(clip, tmp_path / "serial", parallel="serial", **off)
    assert dropped == []
    chunked = run(clip, tmp_path / "chunked", parallel="chunks", **off)
    plan_tail = chunked.chunks[-1].end  # the main process's chunk starts where the workers' end
    assert sum(dropped) >= (plan_tail - 2) * FPS  # the workers' video, less a GOP of lead-in, never decoded here
    a, b = played_frames(tmp_path / "serial", "360p"), played_frames(tmp_path / "chunked", "360p")
    assert [t for t, _ in b] == [t for t, _ in a] and len(b) == SECONDS * FPS
    assert [s.duration_s for s in chunked.renditions[0].segments] == [
        s.duration_s for s in serial.renditions[0].segments
    ]


def test_viewer_outputs_are_tapped_in_the_chunks_and_match_a_serial_runs(tmp_path: Path, dropped: list[int]) -> None:
    """Storyboard, poster and chapters of a chunked run: the serial run's bytes, the workers' video undecoded here.

    A slide deck with a keyframe every second: chunk workers start decoding
    exactly at their first frame; slides change on chunk boundaries and inside
    chunks; a tile every second and 6 poster points land on boundaries too.
    """
    from tests.support.media_slides import make_slide_deck
    from transcoder.chapters import ChapterPolicy
    from transcoder.storyboard import StoryboardPolicy

    deck = tmp_path / "deck.mp4"
    changes = make_slide_deck(deck, change_frames=(20, 47, 80, 101, 118), frames=140, fps=10, keyint=10)
    viewer: dict[str, Any] = {
        "chapter_policy": ChapterPolicy(min_spacing_s=1.0, flip_s=0.5),
        "storyboard": StoryboardPolicy(min_interval_s=1, max_interval_s=1),
    }
    serial = run(deck, tmp_path / "serial", parallel="serial", **viewer)
    chunked = run(deck, tmp_path / "chunked", parallel="chunks", **viewer)
    assert len(chunked.chunks) >= 2
    assert sum(dropped) >= (chunked.chunks[-1].end - 2) * 10  # the workers' video, less a GOP, not decoded here
    assert serial.chapters is not None and chunked.chapters == serial.chapters
    assert serial.chapters.starts_s == (0.0, *(float(c) for c in changes))
    assert serial.thumbnails is not None and chunked.thumbnails == serial.thumbnails
    a, b = tmp_path / "serial", tmp_path / "chunked"
    viewer_files = ["poster.jpg", "thumbnails.vtt", "chapters.vtt", "chapters.json", "storyboard/images.m3u8"]
    viewer_files += sorted(p.relative_to(a).as_posix() for p in (a / "storyboard").glob("*.jpg"))
    for name in viewer_files:
        assert (b / name).read_bytes() == (a / name).read_bytes(), name


def test_an_interlaced_chunk_deinterlaces_its_first_frame_as_a_serial_run_does(tmp_path: Path) -> None:
    """bwdif reads the frame before each one: a chunk decodes from a keyframe before its first frame.

    The clip has a keyframe every second, on the chunk starts; the tiles at those times must be the
    serial run's (a chunk that started decoding on its first frame deinterlaced it without its past).
    """
    from transcoder.storyboard import StoryboardPolicy

    clip = make_clip(
        tmp_path / "interlaced.mp4", width=320, height=180, seconds=6, interlaced=True, audio=False, keyint=FPS
    )
    viewer: dict[str, Any] = {"storyboard": StoryboardPolicy(min_interval_s=1, max_interval_s=1), "chapters": False}
    run(clip, tmp_path / "serial", parallel="serial", **viewer)
    chunked = run(clip, tmp_path / "chunked", parallel="chunks", **viewer)
    assert len(chunked.chunks) >= 2 and chunked.source.video.interlaced
    a, b = tmp_path / "serial", tmp_path / "chunked"
    for name in ["poster.jpg", "thumbnails.vtt", *(p.relative_to(a).as_posix() for p in a.glob("storyboard/*.jpg"))]:
        assert (b / name).read_bytes() == (a / name).read_bytes(), name
