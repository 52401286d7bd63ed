"""Thumbnails and chapters from a real run: files, references from the master, switches, failures.

The source is an 8 s slide deck at 10 fps with audio (``tests.support.media_viewer``)
whose slides change at 1.4, 3.1, 4.5 and 6.3 s, transcoded into two rungs.
The outputs are read back as a player would: the WebVTT tracks by a strict
cue parser, the sprite sheets by decoding the JPEGs, ``chapters.json`` with
``json``, the master playlist with the ``m3u8`` parser.
"""

from __future__ import annotations

import io
import itertools
import json
import posixpath
from collections.abc import Collection, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import m3u8
import numpy as np
import pytest
from click.testing import CliRunner

from tests.support.faultproxy import FaultProxy, Rule
from tests.support.media_slides import make_pan
from tests.support.media_viewer import DECK_FPS, DECK_FRAMES, make_deck, parse_vtt, parse_xywh
from tests.support.s3server import SeaweedServer, Space, client_for, fast_config
from transcoder import (
    ChapterPolicy,
    EncoderSettings,
    LadderPolicy,
    LocalDirectory,
    OutputError,
    RungSpec,
    StoryboardPolicy,
    TranscodeConfig,
    TranscodeResult,
)
from transcoder import transcode as run_transcode
from transcoder.chapters import APPLE_CHAPTERS_DATA_ID
from transcoder.cli import EXIT_OK, EXIT_USAGE, cli
from transcoder.errors import ConfigError
from transcoder.storage import UploadError

DURATION_S = DECK_FRAMES / DECK_FPS
CONFIG = TranscodeConfig(
    encoder=EncoderSettings(preset="ultrafast"),
    # Two rungs, both published: no prediction, no saving rule.
    ladder=LadderPolicy(
        rungs=(RungSpec(short_side=360, bitrate_kbps=600), RungSpec(short_side=180, bitrate_kbps=200)),
        min_rung_saving=0.0,
        still_max_inter_bpp=0.0,
    ),
    threads=2,
    segment_s=2.0,
    gop_s=1.0,
    chapter_policy=ChapterPolicy(min_spacing_s=1.0),  # the deck's slides last 1.4-1.8 s
)
VIEWER_FILES = {
    "thumbnails.vtt",
    "storyboard/sheet-000.jpg",
    "storyboard/images.m3u8",
    "chapters.vtt",
    "chapters.json",
}


@pytest.fixture(scope="module")
def deck(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Fraction]]:
    path = tmp_path_factory.mktemp("deck") / "deck.mp4"
    return path, make_deck(path)


@pytest.fixture(scope="module")
def local_run(deck: tuple[Path, list[Fraction]], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("viewer") / "out"
    result = run_transcode(deck[0], out, config=CONFIG)
    return out, result


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _luma(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data), mode="r", format="image2pipe") as container:
        frame = next(container.decode(video=0))
    return frame.to_ndarray(format="gray").astype(np.int16)


def _source_luma(path: Path, times: Sequence[Fraction], size: tuple[int, int]) -> list[np.ndarray]:
    """The source's frames shown at ``times``, as luma of ``size`` (full range, like a JPEG's)."""
    wanted = {round(t * DECK_FPS) for t in times}
    out: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                small = frame.reformat(width=size[0], height=size[1], format="gray", interpolation="AREA")
                out[index] = small.to_ndarray().astype(np.int16)
    return [out[round(t * DECK_FPS)] for t in times]


# ----------------------------------------------------------------------------- local output


def test_result_names_every_viewer_file_and_they_exist(local_run: tuple[Path, TranscodeResult]) -> None:
    out, result = local_run
    assert [r.name for r in result.renditions if r.kind == "video"] == ["360p", "180p"]
    assert set(result.files) >= VIEWER_FILES
    assert set(result.files) == set(_tree(out))  # and nothing else was written
    thumbs = result.thumbnails
    assert thumbs is not None
    assert (thumbs.vtt_uri, thumbs.sheet_uris, thumbs.image_playlist_uri) == (
        "thumbnails.vtt",
        ("storyboard/sheet-000.jpg",),
        "storyboard/images.m3u8",
    )
    # 8 s at the shortest interval (2 s): 4 tiles of 160x90 (16:9) on one sheet.
    assert (thumbs.count, thumbs.interval_s, thumbs.tile_width, thumbs.tile_height) == (4, 2, 160, 90)
    chapters = result.chapters
    assert chapters is not None
    assert (chapters.vtt_uri, chapters.json_uri, chapters.count) == ("chapters.vtt", "chapters.json", 5)
    # Files are put before the master, which comes last.
    assert result.files[-1] == "master.m3u8"


def test_thumbnail_cues_cover_the_timeline_and_point_into_sheets_that_exist(
    local_run: tuple[Path, TranscodeResult], deck: tuple[Path, list[Fraction]]
) -> None:
    out, _ = local_run
    cues = parse_vtt((out / "thumbnails.vtt").read_text())
    assert len(cues) == 4
    assert cues[0].start_s == 0.0
    assert all(a.end_s == b.start_s for a, b in itertools.pairwise(cues))  # no gaps, no overlaps
    assert cues[-1].end_s == pytest.approx(DURATION_S, abs=0.001)
    sheets: dict[str, np.ndarray] = {}
    tiles = []
    for cue in cues:
        url, (x, y, w, h) = parse_xywh(cue.payload)
        path = posixpath.normpath(posixpath.join(posixpath.dirname("thumbnails.vtt"), url))
        assert (out / path).is_file(), path
        if path not in sheets:
            sheets[path] = _luma((out / path).read_bytes())
        sheet = sheets[path]
        assert (w, h) == (160, 90)
        assert x + w <= sheet.shape[1] and y + h <= sheet.shape[0], (cue, sheet.shape)
        tiles.append(sheet[y : y + h, x : x + w])
    # The sheet is cropped to the tiles it holds: 4 in a row.
    assert next(iter(sheets.values())).shape == (90, 640)
    # Each tile shows the slide on screen at its cue's start, not another one.
    times = [Fraction(round(c.start_s * 1000), 1000) for c in cues]
    sources = _source_luma(deck[0], times, (160, 90))
    for k, tile in enumerate(tiles):
        errors = [float(np.abs(tile - source).mean()) for source in sources]
        assert int(np.argmin(errors)) == k, errors
        assert errors[k] < 6, errors


def test_chapters_start_at_the_known_slide_changes(
    local_run: tuple[Path, TranscodeResult], deck: tuple[Path, list[Fraction]]
) -> None:
    out, result = local_run
    changes = deck[1]
    assert result.chapters is not None
    starts = result.chapters.starts_s
    assert starts[0] == 0.0 and len(starts) == len(changes) + 1
    for found, known in zip(starts[1:], changes, strict=True):
        assert abs(Fraction(found).limit_denominator(1000) - known) <= Fraction(1, DECK_FPS), (starts, changes)
    cues = parse_vtt((out / "chapters.vtt").read_text())
    assert [c.start_s for c in cues] == pytest.approx(list(starts), abs=0.001)
    assert all(a.end_s == b.start_s for a, b in itertools.pairwise(cues))
    assert cues[-1].end_s == pytest.approx(DURATION_S, abs=0.001)
    assert [c.payload for c in cues] == [f"Chapter {n}" for n in range(1, len(cues) + 1)]
    entries = json.loads((out / "chapters.json").read_text())
    assert [e["chapter"] for e in entries] == list(range(1, len(cues) + 1))
    assert [e["start-time"] for e in entries] == pytest.approx([c.start_s for c in cues], abs=0.001)
    assert [e["duration"] for e in entries] == pytest.approx([c.end_s - c.start_s for c in cues], abs=0.001)
    assert all(e["titles"][0]["title"] == c.payload for e, c in zip(entries, cues, strict=True))


def test_master_names_the_chapters_and_the_image_playlist(local_run: tuple[Path, TranscodeResult]) -> None:
    out, _ = local_run
    master = m3u8.loads((out / "master.m3u8").read_text())
    assert [(d.data_id, d.uri, d.value) for d in master.session_data] == [
        (APPLE_CHAPTERS_DATA_ID, "chapters.json", None)
    ]
    (image,) = master.image_playlists
    assert image.uri == "storyboard/images.m3u8"
    assert image.image_stream_info.resolution == (160, 90)
    images = m3u8.loads((out / image.uri).read_text())
    assert images.is_images_only and images.is_endlist
    (segment,) = images.segments
    assert segment.uri == "sheet-000.jpg" and (out / "storyboard" / segment.uri).is_file()
    assert segment.duration == pytest.approx(DURATION_S, abs=0.001)
    # Nothing but the master names the viewer files: a run that fails before
    # the master leaves nothing a player would find.
    for path in out.rglob("*.m3u8"):
        if path.name != "master.m3u8" and path.parent.name != "storyboard":
            text = path.read_text()
            assert not any(name in text for name in ("chapters", "thumbnails", "sheet-", "images.m3u8")), path


@pytest.mark.parametrize("grain", [0.0, 8.0])
def test_a_camera_pan_makes_no_chapter(tmp_path: Path, grain: float) -> None:
    """An abrupt pan (still for 1 s, then 6 px a frame), clean and grainy: one chapter, the whole video."""
    source = make_pan(tmp_path / "pan.mp4", frames=60, still_frames=10, grain=grain)
    result = run_transcode(source, tmp_path / "out", config=CONFIG)
    assert result.chapters is not None
    assert result.chapters.starts_s == (0.0,)
    entries = json.loads((tmp_path / "out" / "chapters.json").read_text())
    assert [(e["start-time"], e["duration"]) for e in entries] == [(0.0, 6.0)]


# ----------------------------------------------------------------------------- switches


@pytest.mark.parametrize(("thumbnails", "chapters"), [(False, False), (False, True), (True, False)])
def test_switches_leave_out_their_files_and_master_lines(
    deck: tuple[Path, list[Fraction]], tmp_path: Path, thumbnails: bool, chapters: bool
) -> None:
    out = tmp_path / "out"
    result = run_transcode(deck[0], out, config=replace(CONFIG, thumbnails=thumbnails, chapters=chapters))
    written = set(_tree(out))
    assert written == set(result.files)
    thumb_files = {"thumbnails.vtt", "storyboard/sheet-000.jpg", "storyboard/images.m3u8"}
    chapter_files = {"chapters.vtt", "chapters.json"}
    assert written & thumb_files == (thumb_files if thumbnails else set())
    assert written & chapter_files == (chapter_files if chapters else set())
    assert (result.thumbnails is not None) is thumbnails
    assert (result.chapters is not None) is chapters
    master = (out / "master.m3u8").read_text()
    assert ("#EXT-X-IMAGE-STREAM-INF" in master) is thumbnails
    assert ("#EXT-X-SESSION-DATA" in master) is chapters
    assert any(p.startswith("storyboard/") for p in written) is thumbnails


def test_config_rejects_wrong_types() -> None:
    with pytest.raises(ConfigError):
        TranscodeConfig(thumbnails=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TranscodeConfig(storyboard=ChapterPolicy())  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TranscodeConfig(chapter_policy=StoryboardPolicy())  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        StoryboardPolicy(min_interval_s=0)
    with pytest.raises(ConfigError):
        ChapterPolicy(min_spacing_s=-1.0)


# ----------------------------------------------------------------------------- failures


class _Recording:
    """A local directory that records the order of calls and can fail one put."""

    def __init__(self, root: Path, *, fail_on: str | None = None) -> None:
        self.inner = LocalDirectory(root)
        self.calls: list[tuple[str, str]] = []
        self.fail_on = fail_on

    def put(self, relpath: str, data: bytes) -> None:
        self.calls.append(("put", relpath))
        if relpath == self.fail_on:
            raise OutputError("refused by the test", context={"path": relpath})
        self.inner.put(relpath, data)

    def flush(self) -> None:
        self.calls.append(("flush", ""))

    def publish(self, relpath: str, data: bytes) -> None:
        self.calls.append(("publish", relpath))
        self.inner.publish(relpath, data)

    def abort(self, keep: Collection[str] = ()) -> None:
        self.calls.append(("abort", ""))
        self.inner.abort(keep)

    def retract(self, relpath: str) -> None:
        self.inner.retract(relpath)

    def discard(self, relpaths: Sequence[str]) -> None:
        self.inner.discard(relpaths)

    def describe(self, relpath: str) -> str:
        return self.inner.describe(relpath)


def test_viewer_files_are_stored_before_the_flush_and_the_master(
    deck: tuple[Path, list[Fraction]], tmp_path: Path
) -> None:
    sink = _Recording(tmp_path / "out")
    run_transcode(deck[0], sink, config=CONFIG)
    order = [f"{kind}:{path}" for kind, path in sink.calls]
    flush = order.index("flush:")
    assert order[-1] == "publish:master.m3u8" and order[-2] == "flush:"
    for name in VIEWER_FILES:
        assert order.index(f"put:{name}") < flush, name
    # A track or playlist is stored only after the sheet it names.
    sheet = order.index("put:storyboard/sheet-000.jpg")
    assert sheet < order.index("put:thumbnails.vtt") and sheet < order.index("put:storyboard/images.m3u8")


def test_a_run_failing_while_storing_them_publishes_nothing(deck: tuple[Path, list[Fraction]], tmp_path: Path) -> None:
    out = tmp_path / "out"
    sink = _Recording(out, fail_on="chapters.json")
    with pytest.raises(OutputError, match="refused by the test"):
        run_transcode(deck[0], sink, config=CONFIG)
    assert ("put", "thumbnails.vtt") in sink.calls  # the failure came after some viewer files were stored
    assert not any(kind == "publish" for kind, _ in sink.calls)
    assert _tree(out) == {}  # no master, no tracks, no sheets, no segments


# ----------------------------------------------------------------------------- object storage


@pytest.mark.slow
def test_s3_output_holds_the_same_viewer_files(
    seaweed: SeaweedServer,
    s3: Any,
    space: Space,
    deck: tuple[Path, list[Fraction]],
    local_run: tuple[Path, TranscodeResult],
) -> None:
    out, local = local_run
    result = run_transcode(deck[0], space.uri("out/"), config=CONFIG, s3_client=s3)
    keys = {key[len("out/") :] for key in space.keys(s3, "out/")}
    assert keys == set(result.files) == set(local.files)
    expected = _tree(out)
    types = {".jpg": "image/jpeg", ".vtt": "text/vtt", ".json": "application/json"}
    for name in VIEWER_FILES:
        got = s3.get_object(Bucket=space.bucket, Key=space.key("out/" + name))
        assert got["Body"].read() == expected[name], name  # the same bytes as the local run
        if not name.endswith(".m3u8"):
            assert got["ContentType"] == types[posixpath.splitext(name)[1]], name
    assert result.thumbnails == local.thumbnails and result.chapters == local.chapters


@pytest.mark.slow
def test_s3_run_failing_on_the_chapters_leaves_no_object(
    seaweed: SeaweedServer, s3: Any, space: Space, deck: tuple[Path, list[Fraction]]
) -> None:
    with FaultProxy(seaweed.s3_port) as proxy:
        proxy.add(Rule("status", method="PUT", path=r"/out/chapters\.json", status=503, times=None))
        storage = fast_config(proxy.endpoint, attempts_per_call=1, retry_deadline_s=1.0)
        with pytest.raises(UploadError) as caught:
            run_transcode(
                deck[0],
                space.uri("out/"),
                config=CONFIG,
                storage=storage,
                s3_client=client_for(proxy.endpoint, config=storage),
            )
        assert proxy.hits() >= 1
    assert space.uri("out/chapters.json") in str(caught.value)
    assert space.keys(s3, "out/") == []  # no master, and the sheets and tracks stored before were removed
    assert space.open_uploads(s3) == []


# ----------------------------------------------------------------------------- command line


def test_cli_switches_plan_and_json(deck: tuple[Path, list[Fraction]], tmp_path: Path) -> None:
    runner = CliRunner()
    plan = runner.invoke(cli, [str(deck[0]), "--plan"])
    assert plan.exit_code == EXIT_OK, plan.output
    assert "thumbnails: one every 2 s, 160x90 tiles, 10x10 per sheet; 4 tiles on 1 sheet(s) (at most 30)" in plan.stdout
    assert "at least 10 s apart" in plan.stdout
    plan_json = runner.invoke(cli, [str(deck[0]), "--plan", "--json", "--no-chapters"])
    payload = json.loads(plan_json.stdout)
    assert payload["chapters"] is None
    assert payload["thumbnails"]["interval_s"] == 2 and payload["thumbnails"]["max_sheets"] == 30
    off = runner.invoke(cli, [str(deck[0]), "--plan", "--no-thumbnails", "--no-chapters"])
    assert "thumbnails: off" in off.stdout and "chapters: off" in off.stdout

    base = ["--preset", "ultrafast", "--threads", "2", "-q", "--json"]
    done = runner.invoke(cli, [str(deck[0]), "-o", str(tmp_path / "on"), *base])
    assert done.exit_code == EXIT_OK, done.output
    result = json.loads(done.stdout)
    assert result["thumbnails"]["vtt_uri"] == "thumbnails.vtt"
    assert result["thumbnails"]["sheet_uris"] == ["storyboard/sheet-000.jpg"]
    assert result["chapters"]["json_uri"] == "chapters.json" and result["chapters"]["count"] >= 1
    assert all((tmp_path / "on" / name).is_file() for name in VIEWER_FILES)

    skipped = runner.invoke(cli, [str(deck[0]), "-o", str(tmp_path / "off"), *base, "--no-thumbnails", "--no-chapters"])
    assert skipped.exit_code == EXIT_OK, skipped.output
    result = json.loads(skipped.stdout)
    assert result["thumbnails"] is None and result["chapters"] is None
    written = {str(p.relative_to(tmp_path / "off")) for p in (tmp_path / "off").rglob("*") if p.is_file()}
    assert not written & VIEWER_FILES and not any(p.startswith("storyboard") for p in written)
    assert "SESSION-DATA" not in (tmp_path / "off" / "master.m3u8").read_text()

    bad = runner.invoke(cli, [str(deck[0]), "--plan", "--no-thumbnail"])
    assert bad.exit_code == EXIT_USAGE
