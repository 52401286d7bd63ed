"""The output manifest: real runs (local and on SeaweedFS) checked against what was stored, and the pure builder."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Collection, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import m3u8
import pytest
from click.testing import CliRunner

from api_client.models import manifest_errors
from tests.support.media import ClipFactory
from tests.support.s3server import SeaweedServer, Space, fast_config
from transcoder import (
    EncoderSettings,
    LadderPolicy,
    LocalDirectory,
    OutputError,
    OutputSink,
    RenditionResult,
    RungSpec,
    S3Location,
    SegmentInfo,
    TranscodeConfig,
    plan_ladder,
    probe,
    transcode,
)
from transcoder.cli import EXIT_OK, cli
from transcoder.colour import MATRIX_NAMES, PRIMARIES_NAMES, RANGE_NAMES, TRANSFER_NAMES
from transcoder.manifest import (
    MANIFEST,
    ObjectEntry,
    RunFacts,
    SourceIdentity,
    build_manifest,
    deletable_keys,
    plan_hash,
)
from transcoder.models import ChaptersResult, LoudnessResult, ThumbnailsResult
from transcoder.storage.uploader import S3Sink

CONFIG = TranscodeConfig(
    encoder=EncoderSettings(preset="ultrafast"),
    ladder=LadderPolicy(rungs=(RungSpec(short_side=180, bitrate_kbps=300), RungSpec(short_side=120, bitrate_kbps=150))),
    threads=2,
    segment_s=1.0,
    gop_s=1.0,
)


class OrderSink:
    """Forwards to ``inner`` and records every put and publish in the order the coordinator made them."""

    def __init__(self, inner: OutputSink) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def put(self, relpath: str, data: bytes) -> None:
        self.calls.append(("put", relpath))
        self.inner.put(relpath, data)

    def flush(self) -> None:
        self.inner.flush()

    def publish(self, relpath: str, data: bytes) -> None:
        self.calls.append(("publish", relpath))
        self.inner.publish(relpath, data)

    def abort(self, keep: Collection[str] = ()) -> None:
        self.inner.abort(keep)

    def retract(self, relpath: str) -> None:
        self.inner.retract(relpath)

    def discard(self, relpaths: Sequence[str]) -> None:
        self.calls.extend(("discard", relpath) for relpath in relpaths)
        self.inner.discard(relpaths)

    def describe(self, relpath: str) -> str:
        return self.inner.describe(relpath)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_lists_exactly(document: dict[str, Any], stored: dict[str, bytes]) -> None:
    """Every stored object listed once, with its size and SHA-256; nothing listed that is not stored."""
    keys = [entry["key"] for entry in document["objects"]]
    assert len(keys) == len(set(keys))
    assert sorted(keys) == sorted(stored)
    for entry in document["objects"]:
        data = stored[entry["key"]]
        if entry["key"] == MANIFEST:  # the one entry that cannot hold its own size and hash
            assert (entry["bytes"], entry["sha256"]) == (None, None)
            continue
        assert entry["bytes"] == len(data), entry["key"]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest(), entry["key"]
    assert document["total_bytes"] == sum(len(data) for key, data in stored.items() if key != MANIFEST)


def _assert_order(calls: list[tuple[str, str]]) -> None:
    """The manifest is put after every other object, and the master is published after it, last."""
    stores = [(kind, path) for kind, path in calls if kind in ("put", "publish")]
    assert stores[-1] == ("publish", "master.m3u8")
    assert stores[-2] == ("put", MANIFEST)
    assert [path for _, path in stores].count(MANIFEST) == 1


def _assert_matches_master(document: dict[str, Any], stored: dict[str, bytes]) -> None:
    """The renditions are what the master playlist and the media playlists say."""
    master = m3u8.loads(stored[document["master"]].decode())
    renditions = {r["name"]: r for r in document["renditions"]}
    audio = [r for r in document["renditions"] if r["kind"] == "audio"]
    assert len(audio) == 1
    assert [m.uri for m in master.media if m.type == "AUDIO"] == [audio[0]["playlist"]]
    videos = [r for r in document["renditions"] if r["kind"] == "video"]
    assert sorted(p.uri for p in master.playlists) == sorted(r["playlist"] for r in videos)
    for variant in master.playlists:
        rendition = next(r for r in videos if r["playlist"] == variant.uri)
        info = variant.stream_info
        assert info.resolution == (rendition["width"], rendition["height"])
        assert info.codecs == f"{rendition['codecs']},{audio[0]['codecs']}"
        assert info.bandwidth == rendition["peak_bps"] + audio[0]["peak_bps"]
        assert info.average_bandwidth == rendition["average_bps"] + audio[0]["average_bps"]
        assert info.frame_rate == pytest.approx(rendition["frame_rate"], abs=0.001)
        assert Fraction(rendition["frame_rate_exact"]) == pytest.approx(rendition["frame_rate"], abs=0.001)
    assert sorted(p.uri for p in master.iframe_playlists) == sorted(r["iframe_playlist"] for r in videos)
    for rendition in renditions.values():
        playlist = m3u8.loads(stored[rendition["playlist"]].decode())
        assert len(playlist.segments) == rendition["segment_count"]
        assert sum(s.duration for s in playlist.segments) == pytest.approx(rendition["duration_s"], abs=1e-3)
        base = rendition["playlist"].rsplit("/", 1)[0]
        assert rendition["bytes"] == sum(len(stored[f"{base}/{s.uri}"]) for s in playlist.segments)


def _assert_colour_tags(document: dict[str, Any], stored: dict[str, bytes], tmp_path: Path) -> None:
    """Each video rendition's colour is what its first segment's decoded frames carry."""
    for rendition in document["renditions"]:
        if rendition["kind"] != "video":
            assert rendition["colour"] is None
            continue
        playlist = m3u8.loads(stored[rendition["playlist"]].decode())
        segment = tmp_path / "first.ts"
        segment.write_bytes(stored[rendition["playlist"].rsplit("/", 1)[0] + "/" + playlist.segments[0].uri])
        with av.open(str(segment)) as container:
            frame = next(container.decode(video=0))
            assert (frame.width, frame.height) == (rendition["width"], rendition["height"])
            tagged = {
                "primaries": PRIMARIES_NAMES[frame.color_primaries],
                "transfer": TRANSFER_NAMES[frame.color_trc],
                "matrix": MATRIX_NAMES[frame.colorspace],
                "range": RANGE_NAMES[frame.color_range],
            }
        assert rendition["colour"] == tagged


def test_a_local_run_lists_every_file_once_with_its_size_and_hash(clip: ClipFactory, tmp_path: Path) -> None:
    source = clip(seconds=2.0)
    out = tmp_path / "out"
    out.mkdir()
    sink = OrderSink(LocalDirectory(out))
    result = transcode(source, sink, config=CONFIG)

    stored = _tree(out)
    assert result.manifest is not None
    assert stored[MANIFEST] == result.manifest.text.encode()
    assert result.manifest.sha256 == hashlib.sha256(stored[MANIFEST]).hexdigest()
    assert result.manifest.size_bytes == len(stored[MANIFEST])
    document = json.loads(stored[MANIFEST])
    assert document == result.manifest.document()
    assert manifest_errors(document) == []  # the contract's schema and rules

    _assert_lists_exactly(document, stored)
    _assert_order(sink.calls)
    _assert_matches_master(document, stored)
    _assert_colour_tags(document, stored, tmp_path)
    assert sorted(result.files) == sorted(stored)
    assert {e["key"]: e["content_type"] for e in document["objects"]}["180p/seg_00000.ts"] == "video/mp2t"
    assert document["poster"] == "poster.jpg" and "poster.jpg" in stored
    assert document["segment_format"] == "ts"

    stat = os.stat(source)
    facts = document["source"]
    assert (facts["uri"], facts["size_bytes"], facts["etag"]) == (str(source), stat.st_size, None)
    modified = facts["modified"]
    assert modified.endswith("Z") and abs(_epoch(modified) - stat.st_mtime) < 0.001
    assert facts["video"]["codec"] == "h264" and facts["audio"]["codec"] == "aac"
    assert facts["duration_s"] == pytest.approx(result.source.duration_s)
    assert document["timing"]["wall_s"] <= result.wall_s
    assert 0 < document["timing"]["cpu_s"] <= result.cpu_s + 0.01
    assert document["plan_hash"] == plan_hash(result.ladder, CONFIG.encoder, CONFIG.segment_format)


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_dropped_rung_is_not_listed(clip: ClipFactory, tmp_path: Path) -> None:
    # Two rungs of the same pixel count: the smaller bitrate can never save enough, one is dropped after encoding.
    source = clip(seconds=2.0)
    config = dataclasses.replace(
        CONFIG,
        ladder=LadderPolicy(
            rungs=(RungSpec(short_side=180, bitrate_kbps=300), RungSpec(short_side=176, bitrate_kbps=290)),
            min_rung_saving=0.5,
            still_max_inter_bpp=0.0,
        ),
    )
    out = tmp_path / "out"
    out.mkdir()
    sink = OrderSink(LocalDirectory(out))
    result = transcode(source, sink, config=config)
    assert result.dropped_rungs  # the case under test
    assert any(kind == "discard" for kind, _ in sink.calls)
    assert result.manifest is not None
    document = result.manifest.document()
    _assert_lists_exactly(document, _tree(out))
    dropped = result.dropped_rungs[0]
    assert any(path.startswith(f"{dropped}/") for kind, path in sink.calls if kind == "put")
    assert not any(e["key"].startswith(f"{dropped}/") for e in document["objects"])


class _ManifestRefusingDirectory(LocalDirectory):
    def put(self, relpath: str, data: bytes) -> None:
        if relpath == MANIFEST:
            raise OutputError("disk full", context={"path": relpath})
        super().put(relpath, data)


def test_a_manifest_that_cannot_be_stored_fails_the_run_and_publishes_nothing(
    clip: ClipFactory, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OutputError, match="disk full"):
        transcode(clip(seconds=2.0), _ManifestRefusingDirectory(out), config=CONFIG)
    assert [p for p in out.rglob("*") if p.is_file()] == []  # no master, and what the run wrote is gone


def test_transcode_json_prints_the_stored_manifest(clip: ClipFactory, tmp_path: Path) -> None:
    source = clip(seconds=2.0)
    out = tmp_path / "out"
    args = [str(source), "-o", str(out), "--json", "-q", "--preset", "ultrafast", "--threads", "2"]
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == EXIT_OK, run.output
    payload = json.loads(run.stdout)
    stored = (out / MANIFEST).read_bytes()
    assert payload["manifest"] == json.loads(stored)
    assert payload["manifest_file"] == {
        "key": MANIFEST,
        "bytes": len(stored),
        "sha256": hashlib.sha256(stored).hexdigest(),
    }


# ----------------------------------------------------------------------------- on SeaweedFS


@pytest.mark.slow
def test_an_s3_run_lists_every_object_and_deleting_them_empties_the_prefix(
    seaweed: SeaweedServer, s3: Any, space: Space, clip: ClipFactory, tmp_path: Path
) -> None:
    source = clip(seconds=2.0)
    s3.upload_file(str(source), space.bucket, space.key("in/source.mp4"))
    storage = fast_config(seaweed.endpoint)
    client = seaweed.client(config=storage)
    s3_sink = S3Sink(client, S3Location.parse(space.uri("out/"), prefix=True), storage)
    sink = OrderSink(s3_sink)
    try:
        result = transcode(space.uri("in/source.mp4"), sink, config=CONFIG, storage=storage, s3_client=client)
    finally:
        s3_sink.close()

    keys = space.keys(s3, "out/")
    stored = {key[len("out/") :]: s3.get_object(Bucket=space.bucket, Key=space.key(key))["Body"].read() for key in keys}
    assert result.manifest is not None
    document = json.loads(stored[MANIFEST])
    assert stored[MANIFEST] == result.manifest.text.encode()
    assert manifest_errors(document) == []
    _assert_lists_exactly(document, stored)
    _assert_order(sink.calls)
    _assert_matches_master(document, stored)
    for entry in document["objects"]:  # the content type listed is the one stored
        head = s3.head_object(Bucket=space.bucket, Key=space.key("out/" + entry["key"]))
        assert head["ContentType"] == entry["content_type"], entry["key"]

    head = s3.head_object(Bucket=space.bucket, Key=space.key("in/source.mp4"))
    facts = document["source"]
    assert (facts["uri"], facts["size_bytes"], facts["etag"], facts["modified"]) == (
        space.uri("in/source.mp4"),
        source.stat().st_size,
        head["ETag"],
        None,
    )

    # The same plan into another location (a local directory): the same plan hash.
    local = transcode(source, tmp_path / "local", config=CONFIG)
    assert local.manifest is not None
    assert local.manifest.document()["plan_hash"] == document["plan_hash"]

    # The web app deletes exactly the listed keys: nothing of the output is left.
    for key in deletable_keys(document):
        s3.delete_object(Bucket=space.bucket, Key=space.key("out/" + key))
    assert space.keys(s3, "out/") == []
    assert space.keys(s3, "in/") == ["in/source.mp4"]  # and nothing else was touched


# ----------------------------------------------------------------------------- the pure builder


def _video_rendition() -> RenditionResult:
    segment = SegmentInfo(rendition="180p", sequence=0, uri="seg_00000.ts", start_s=0.0, duration_s=1.0, size_bytes=10)
    return RenditionResult(
        name="180p",
        kind="video",
        playlist_uri="180p/index.m3u8",
        iframe_playlist_uri="180p/iframes.m3u8",
        init_uri=None,
        codecs="avc1.42c00d",
        width=320,
        height=180,
        fps=Fraction(30000, 1001),
        bitrate_kbps=300,
        segments=(segment,),
        peak_bps=80,
        average_bps=80,
        size_bytes=10,
        duration_s=1.0,
        audio_group="audio",
    )


def _facts(clip_info: Any, **overrides: Any) -> RunFacts:
    ladder = plan_ladder(clip_info, CONFIG.ladder, gop_s=CONFIG.gop_s, segment_s=CONFIG.segment_s)
    base: dict[str, Any] = {
        "objects": [
            ObjectEntry(key="180p/seg_00000.ts", size_bytes=10, sha256="a" * 64, content_type="video/mp2t"),
            ObjectEntry(key="poster.jpg", size_bytes=5, sha256="b" * 64, content_type="image/jpeg"),
        ],
        "master": ObjectEntry(
            key="master.m3u8", size_bytes=3, sha256="c" * 64, content_type="application/vnd.apple.mpegurl"
        ),
        "renditions": [],
        "source": clip_info,
        "identity": SourceIdentity(uri="s3://b/k.mp4", size_bytes=1234, etag='"abc"'),
        "ladder": ladder,
        "encoder": CONFIG.encoder,
        "segment_format": "ts",
        "engine_version": "0.1.0",
        "wall_s": 1.5,
        "cpu_s": 2.5,
    }
    base.update(overrides)
    return RunFacts(**base)


def test_the_builder_lists_master_and_itself_and_sums_the_rest(clip: ClipFactory) -> None:
    document = build_manifest(_facts(probe(clip(seconds=2.0))))
    entries = {e["key"]: e for e in document["objects"]}
    assert list(entries) == sorted(entries)
    assert entries[MANIFEST] == {"key": MANIFEST, "bytes": None, "sha256": None, "content_type": "application/json"}
    assert entries["master.m3u8"]["bytes"] == 3
    assert document["total_bytes"] == 18
    assert deletable_keys(document) == ["180p/seg_00000.ts", MANIFEST, "master.m3u8", "poster.jpg"]
    assert document["source"]["etag"] == '"abc"' and document["source"]["loudness"] is None
    assert document["version"] == 1


def test_thumbnails_chapters_and_loudness_slots_fill_and_conform(clip: ClipFactory) -> None:
    """The slots a run fills when the output has a storyboard, chapters and measured loudness."""
    facts = _facts(
        probe(clip(seconds=2.0)),
        thumbnails=ThumbnailsResult(
            vtt_uri="thumbnails.vtt",
            sheet_uris=("thumbs/sheet_000.jpg",),
            image_playlist_uri=None,
            count=2,
            interval_s=2,
            tile_width=160,
            tile_height=90,
            columns=5,
            rows=5,
        ),
        chapters=ChaptersResult(vtt_uri="chapters.vtt", json_uri="chapters.json", count=2, starts_s=(0.0, 12.5)),
        loudness=LoudnessResult(
            target_lufs=-16.0, input_lufs=-27.31, output_lufs=-16.04, gain_db_min=10.1, gain_db_max=11.7
        ),
        renditions=[_video_rendition()],
    )
    document = build_manifest(facts)
    assert document["thumbnails"]["sheets"] == ["thumbs/sheet_000.jpg"]
    assert document["chapters"] == {"vtt": "chapters.vtt", "json": "chapters.json", "count": 2, "starts_s": [0.0, 12.5]}
    assert document["source"]["loudness"] == {"target_lufs": -16.0, "before_lufs": -27.31, "after_lufs": -16.04}
    assert manifest_errors(document) == []


def test_the_plan_hash_follows_the_ladder_and_encoder_not_the_machine(clip: ClipFactory) -> None:
    info = probe(clip(seconds=2.0))

    def hashed(config: TranscodeConfig) -> str:
        ladder = plan_ladder(info, config.ladder, gop_s=config.gop_s, segment_s=config.segment_s)
        return plan_hash(ladder, config.encoder, config.segment_format)

    base = hashed(CONFIG)
    assert len(base) == 64 and base == hashed(CONFIG)
    other_ladder = LadderPolicy(
        rungs=(RungSpec(short_side=180, bitrate_kbps=350), RungSpec(short_side=120, bitrate_kbps=150))
    )
    changed = [
        dataclasses.replace(CONFIG, ladder=other_ladder),
        dataclasses.replace(CONFIG, encoder=EncoderSettings(preset="veryfast")),
        dataclasses.replace(CONFIG, encoder=EncoderSettings(preset="ultrafast", crf=20)),
        dataclasses.replace(CONFIG, segment_format="fmp4"),
        dataclasses.replace(CONFIG, segment_s=2.0),
    ]
    hashes = [hashed(config) for config in changed]
    assert base not in hashes and len(set(hashes)) == len(hashes)
    same = [
        dataclasses.replace(CONFIG, threads=1),
        dataclasses.replace(CONFIG, poster=False),
        dataclasses.replace(CONFIG, encoder=EncoderSettings(preset="ultrafast", reuse_still_frames=False)),
        dataclasses.replace(CONFIG, ladder=dataclasses.replace(CONFIG.ladder, min_rung_saving=0.3)),
    ]
    assert {hashed(config) for config in same} == {base}
