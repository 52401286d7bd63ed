"""Ladders for slides and screen recordings: the pruning rule, the published output, frame reuse.

The rule (:mod:`transcoder.pruning`) is table-tested on given rates; the
end-to-end tests transcode a still screen recording (:mod:`tests.support.media_screen`),
where every rung measures about the same, and check the published ladder is
strictly increasing in pixels and BANDWIDTH, with the dropped rungs reported
and absent from the master playlist and from the output (a local directory,
and an s3:// prefix on SeaweedFS). Frame reuse: a decoded frame equal to the
previous one is found exactly, and reusing the last scaled frame for it changes
no output byte.
"""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import m3u8
import numpy as np
import pytest
from click.testing import CliRunner

import transcoder
from tests.support.media import ClipFactory
from tests.support.media_screen import make_screen_recording
from tests.support.s3server import (
    SeaweedServer,
    Space,
    fast_config,
)
from transcoder import LadderPolicy, RungSpec, TranscodeConfig, transcode
from transcoder.cli import EXIT_OK, cli
from transcoder.config import EncoderSettings
from transcoder.encode import RungEncoder
from transcoder.errors import ConfigError
from transcoder.models import TranscodeResult
from transcoder.output import LocalDirectory
from transcoder.prediction import PREDICTED, PREDICTION_MARGIN, index_activity, predict_still_ladder, predicted_rates
from transcoder.pruning import (
    DROPPED_NOT_CHEAPER,
    DROPPED_PIXELS,
    DROPPED_SMALL_SAVING,
    KEPT,
    KEPT_TOP,
    RungRates,
    prune_ladder,
)
from transcoder.still import RepeatDetector

# ----------------------------------------------------------------------------- the rule, table-tested

SIZES = {"1080p": (1920, 1080), "720p": (1280, 720), "480p": (854, 480), "360p": (640, 360)}


def _rates(*rows: tuple[str, int, int]) -> list[RungRates]:
    return [
        RungRates(name=name, width=SIZES[name][0], height=SIZES[name][1], bandwidth_bps=peak, average_bandwidth_bps=avg)
        for name, peak, avg in rows
    ]


# (rows of name, BANDWIDTH, AVERAGE; min_saving) -> [(name, reason, compared_with)]
TABLE: list[tuple[str, list[tuple[str, int, int]], float, list[tuple[str, str, str | None]]]] = [
    (
        "an ordinary ladder keeps every rung",
        [("1080p", 5_500_000, 4_000_000), ("720p", 3_000_000, 2_200_000), ("480p", 1_500_000, 1_100_000)],
        0.15,
        [("1080p", KEPT_TOP, None), ("720p", KEPT, "1080p"), ("480p", KEPT, "720p")],
    ),
    (
        # The screen recording: 720p measured between 360p and 480p.
        "equal rates keep only the top rung",
        [("720p", 162_000, 150_000), ("480p", 163_000, 151_000), ("360p", 162_000, 150_000)],
        0.15,
        [("720p", KEPT_TOP, None), ("480p", DROPPED_NOT_CHEAPER, "720p"), ("360p", DROPPED_NOT_CHEAPER, "720p")],
    ),
    (
        "a small saving is dropped, and the next rung is compared with the kept larger one",
        [("1080p", 1_000_000, 800_000), ("720p", 900_000, 700_000), ("480p", 800_000, 600_000)],
        0.15,
        # 720p saves 10% / 12.5%; 480p saves 20% / 25% against 1080p, not 11% against 720p.
        [("1080p", KEPT_TOP, None), ("720p", DROPPED_SMALL_SAVING, "1080p"), ("480p", KEPT, "1080p")],
    ),
    (
        "the saving must hold on AVERAGE-BANDWIDTH too",
        [("1080p", 1_000_000, 800_000), ("720p", 700_000, 750_000)],
        0.15,
        [("1080p", KEPT_TOP, None), ("720p", DROPPED_SMALL_SAVING, "1080p")],
    ),
    (
        "a cheaper peak with a dearer average is not cheaper",
        [("1080p", 1_000_000, 500_000), ("720p", 600_000, 500_000)],
        0.0,
        [("1080p", KEPT_TOP, None), ("720p", DROPPED_NOT_CHEAPER, "1080p")],
    ),
    (
        "min_saving 0 keeps any strictly cheaper rung",
        [("1080p", 1_000_000, 800_000), ("720p", 999_999, 799_999)],
        0.0,
        [("1080p", KEPT_TOP, None), ("720p", KEPT, "1080p")],
    ),
    (
        "exactly the minimum saving is kept",
        [("1080p", 1_000_000, 1_000_000), ("720p", 850_000, 850_000)],
        0.15,
        [("1080p", KEPT_TOP, None), ("720p", KEPT, "1080p")],
    ),
    (
        "a rung with as many pixels is dropped",
        [("720p", 1_000_000, 800_000), ("720p", 500_000, 400_000)],
        0.15,
        [("720p", KEPT_TOP, None), ("720p", DROPPED_PIXELS, "720p")],
    ),
    (
        "the top rung is kept even when it costs more than a smaller one",
        [("1080p", 100_000, 90_000), ("360p", 300_000, 250_000)],
        0.15,
        [("1080p", KEPT_TOP, None), ("360p", DROPPED_NOT_CHEAPER, "1080p")],
    ),
]


@pytest.mark.parametrize(("rows", "min_saving", "expected"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_pruning_rule(
    rows: list[tuple[str, int, int]], min_saving: float, expected: list[tuple[str, str, str | None]]
) -> None:
    decisions = prune_ladder(_rates(*rows), min_saving=min_saving)
    assert [(d.name, d.reason, d.compared_with) for d in decisions] == expected
    assert [d.kept for d in decisions] == [reason in (KEPT, KEPT_TOP) for _, reason, _ in expected]
    kept = [d for d in decisions if d.kept]
    # What is published is strictly decreasing in pixels and in both rates, largest first.
    for larger, smaller in itertools.pairwise(kept):
        assert larger.width * larger.height > smaller.width * smaller.height
        assert larger.bandwidth_bps > smaller.bandwidth_bps
        assert larger.average_bandwidth_bps > smaller.average_bandwidth_bps
        assert min(smaller.bandwidth_saving or 0, smaller.average_saving or 0) >= min_saving


def test_pruning_rule_reports_the_savings() -> None:
    decisions = prune_ladder(_rates(("1080p", 1_000_000, 800_000), ("720p", 900_000, 700_000)), min_saving=0.15)
    assert decisions[0].bandwidth_saving is None
    assert decisions[1].bandwidth_saving == pytest.approx(0.10)
    assert decisions[1].average_saving == pytest.approx(0.125)


@pytest.mark.parametrize("bad", [-0.1, 1.0])
def test_minimum_saving_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        prune_ladder(_rates(("1080p", 1, 1)), min_saving=bad)
    with pytest.raises(ConfigError):
        LadderPolicy(min_rung_saving=bad)


# ----------------------------------------------------------------------------- end to end

THREE_RUNGS = LadderPolicy(
    rungs=(
        RungSpec(short_side=360, bitrate_kbps=800),
        RungSpec(short_side=240, bitrate_kbps=400),
        RungSpec(short_side=180, bitrate_kbps=300),
    )
)
CONFIG = TranscodeConfig(ladder=THREE_RUNGS, segment_s=1.0, gop_s=1.0, threads=2)


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of a still 640x360 slide at 10 fps (a cursor moves for half a second), with audio."""
    return make_screen_recording(tmp_path_factory.mktemp("screen") / "screen.mp4")


def _variants(master_text: str) -> list[tuple[str, int, int, int]]:
    """(uri, pixels, BANDWIDTH, AVERAGE-BANDWIDTH) of every variant in the master, in order."""
    master = m3u8.loads(master_text)
    out = []
    for p in master.playlists:
        info = p.stream_info
        w, h = info.resolution
        out.append((p.uri, w * h, info.bandwidth, info.average_bandwidth))
    return out


def _assert_monotonic_and_reported(result: TranscodeResult, master_text: str, names: set[str]) -> list[str]:
    """Checks shared by the local and the s3 run; returns the dropped rungs' names."""
    decisions = result.rung_decisions
    assert [d.name for d in decisions] == ["360p", "240p", "180p"]  # every planned rung, largest first
    dropped = [d.name for d in decisions if not d.kept]
    assert dropped, "a still slide costs about the same at every size: some rung must be dropped"
    assert decisions[0].kept and decisions[0].reason == KEPT_TOP
    for d in decisions[1:]:
        if not d.kept:  # measured, or predicted before encoding (then left out with a margin)
            assert d.reason.removeprefix(PREDICTED) in (DROPPED_NOT_CHEAPER, DROPPED_SMALL_SAVING)
            assert d.compared_with is not None and d.bandwidth_saving is not None and d.average_saving is not None
            limit = 0.15 * (PREDICTION_MARGIN if d.reason.startswith(PREDICTED) else 1.0)
            assert min(d.bandwidth_saving, d.average_saving) < limit
    variants = _variants(master_text)
    kept = [d for d in decisions if d.kept]
    assert [uri for uri, *_ in variants] == [f"{d.name}/index.m3u8" for d in kept]
    # The master states exactly the rates the decision used, ...
    assert [(bw, avg) for _, _, bw, avg in variants] == [(d.bandwidth_bps, d.average_bandwidth_bps) for d in kept]
    # ... and what a player sees is strictly increasing in pixels and BANDWIDTH, smallest first.
    ascending = sorted(variants, key=lambda v: v[1])
    assert all(a[1] < b[1] and a[2] < b[2] and a[3] < b[3] for a, b in itertools.pairwise(ascending))
    # Nothing of a dropped rung is published, listed or left behind.
    assert {r.name for r in result.renditions} == {d.name for d in kept} | {"audio"}
    for name in dropped:
        assert not any(n.startswith(f"{name}/") for n in names), name
        assert not any(f.startswith(f"{name}/") for f in result.files), name
        assert f"{name}/" not in master_text
    assert result.output_bytes == sum(r.size_bytes for r in result.renditions)
    return dropped


def test_still_screen_recording_publishes_a_strictly_increasing_ladder(screen: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = transcode(screen, out, config=CONFIG)
    names = {str(p.relative_to(out)) for p in out.rglob("*")}  # files and directories
    dropped = _assert_monotonic_and_reported(result, (out / "master.m3u8").read_text(), names)
    assert not any((out / name).exists() for name in dropped)  # not even an empty directory
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == set(result.files)


def test_dropped_rungs_are_deleted_from_object_storage(
    seaweed: SeaweedServer, s3: Any, space: Space, screen: Path
) -> None:
    storage = fast_config(seaweed.endpoint)
    result = transcode(
        screen, space.uri("out/"), config=CONFIG, storage=storage, s3_client=seaweed.client(config=storage)
    )
    keys = {key.removeprefix("out/") for key in space.keys(s3, "out/")}
    master_text = s3.get_object(Bucket=space.bucket, Key=space.key("out/master.m3u8"))["Body"].read().decode()
    _assert_monotonic_and_reported(result, master_text, keys)
    assert keys == set(result.files)
    assert space.open_uploads(s3) == []


def test_moving_content_keeps_every_rung(clip: ClipFactory, tmp_path: Path) -> None:
    # Noise and motion: each smaller rung costs clearly less, so nothing is dropped.
    source = clip(seconds=2.0, width=640, height=360)
    result = transcode(source, tmp_path / "out", config=CONFIG)
    assert [(d.name, d.kept) for d in result.rung_decisions] == [("360p", True), ("240p", True), ("180p", True)]
    assert all(min(d.bandwidth_saving or 1, d.average_saving or 1) >= 0.15 for d in result.rung_decisions)


@pytest.fixture(scope="module")
def screen_720p(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same still slide at 1280x720: the CLI's default ladder plans 720p, 480p and 360p."""
    return make_screen_recording(tmp_path_factory.mktemp("screen720") / "screen.mp4", width=1280, height=720, seconds=2)


def test_cli_json_and_summary_show_the_decision(screen_720p: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    common = [str(screen_720p), "--segment-seconds", "1", "--gop-seconds", "1", "--threads", "2", "-q"]
    done = runner.invoke(cli, [*common, "-o", str(tmp_path / "json"), "--json"])
    assert done.exit_code == EXIT_OK, done.output
    payload = json.loads(done.stdout)
    decisions = payload["rung_decisions"]
    assert [d["name"] for d in decisions] == ["720p", "480p", "360p"]
    assert payload["dropped_rungs"] == [d["name"] for d in decisions if not d["kept"]] != []
    audio_peak = next(r["peak_bps"] for r in payload["renditions"] if r["kind"] == "audio")
    video = {r["name"]: r for r in payload["renditions"] if r["kind"] == "video"}
    assert set(video) == {d["name"] for d in decisions if d["kept"]}
    for d in decisions:
        if d["kept"]:  # the decision's rates are the master's: video peak plus audio peak
            assert d["bandwidth_bps"] == video[d["name"]]["peak_bps"] + audio_peak
        else:
            assert d["reason"].removeprefix(PREDICTED) in (DROPPED_NOT_CHEAPER, DROPPED_SMALL_SAVING)
            assert d["compared_with"] == "720p"
    summary = runner.invoke(cli, [*common, "-o", str(tmp_path / "table")])
    assert summary.exit_code == EXIT_OK, summary.output
    for name in payload["dropped_rungs"]:
        assert f"dropped {name} (" in summary.stdout
    # With no minimum saving only rungs that are not cheaper go; the flag reaches the rule.
    zero = runner.invoke(cli, [*common, "-o", str(tmp_path / "zero"), "--json", "--min-rung-saving", "0"])
    assert zero.exit_code == EXIT_OK, zero.output
    zero_decisions = json.loads(zero.stdout)["rung_decisions"]
    assert all(d["kept"] or d["reason"].removeprefix(PREDICTED) == DROPPED_NOT_CHEAPER for d in zero_decisions)


# ----------------------------------------------------------------------------- reuse of the last scaled frame


def _decoded_repeats(path: Path) -> list[bool]:
    """For each decoded frame, whether its pixels equal the previous frame's (numpy, independently)."""
    flags, previous = [], None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            pixels = frame.to_ndarray()
            flags.append(previous is not None and np.array_equal(pixels, previous))
            previous = pixels
    return flags


def test_repeat_detector_flags_exactly_the_repeated_frames(screen: Path, clip: ClipFactory) -> None:
    for path, still in ((screen, True), (clip(seconds=1.0), False)):
        expected = _decoded_repeats(path)
        detector = RepeatDetector()
        with av.open(str(path)) as container:
            flags = [detector.same_as_previous(frame) for frame in container.decode(video=0)]
        assert flags == expected
        assert detector.repeats == sum(expected)
        # The slide repeats on most frames; noise and motion never do.
        assert (sum(flags) > len(flags) // 3) if still else not any(flags)


def test_repeat_detector_compares_pixels_not_padding_or_identity() -> None:
    detector = RepeatDetector()
    base = np.full((48, 64), 100, dtype=np.uint8)
    changed = base.copy()
    changed[-1, -1] = 101  # the last luma pixel: after every band but the last
    frames = [
        av.VideoFrame.from_ndarray(base, format="gray"),
        av.VideoFrame.from_ndarray(base.copy(), format="gray"),  # another buffer, equal pixels
        av.VideoFrame.from_ndarray(changed, format="gray"),
        av.VideoFrame.from_ndarray(np.full((48, 66), 100, dtype=np.uint8), format="gray"),  # another size
    ]
    assert [detector.same_as_previous(f) for f in frames] == [False, True, False, False]


def _picture(frame: av.VideoFrame) -> bytes:
    """The visible pixels of every plane (padding left out)."""
    return b"".join(
        np.frombuffer(memoryview(plane), dtype=np.uint8)[: plane.line_size * plane.height]
        .reshape(plane.height, plane.line_size)[:, : plane.width]
        .tobytes()
        for plane in frame.planes
    )


@pytest.mark.parametrize(
    ("fps", "side"),
    [(10, 240), (10, 360), (60, 180)],
    ids=["scaled rung", "same-size rung", "60 fps source into a 30 fps rung"],
)
def test_reusing_scaled_frames_changes_no_encoded_picture(
    tmp_path: Path, fps: int, side: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cursor steps every third frame: at 60 -> 30 fps some changed frames get no
    # output slot and are followed by repeats, which must not reuse an older picture.
    # What x264 receives is compared (pixels, slot, forced picture type): its output
    # bytes can differ between two runs of one process with equal input (a run's
    # first keyframe was seen to, about once in four suite runs), so they prove nothing here.
    source = make_screen_recording(
        tmp_path / "src.mp4", fps=fps, seconds=2.0, cursor_moves_s=(0.5, 1.5), cursor_every=3
    )
    ladder = LadderPolicy(rungs=(RungSpec(short_side=side, bitrate_kbps=800),))
    handed: list[tuple[int | None, Any, bytes]] = []
    encode = RungEncoder._encode

    def spy(self: RungEncoder, frame: av.VideoFrame | None) -> None:
        if frame is not None:
            handed.append((frame.pts, frame.pict_type, _picture(frame)))
        encode(self, frame)

    monkeypatch.setattr(RungEncoder, "_encode", spy)
    outputs: dict[bool, list[tuple[int | None, Any, bytes]]] = {}
    results = {}
    for reuse in (True, False):
        handed.clear()
        config = TranscodeConfig(
            ladder=ladder, segment_s=1.0, gop_s=1.0, threads=1, encoder=EncoderSettings(reuse_still_frames=reuse)
        )
        results[reuse] = transcode(source, tmp_path / str(reuse), config=config)
        outputs[reuse] = list(handed)
    assert len(outputs[True]) == round(2.0 * min(fps, 30)) and outputs[True] == outputs[False]
    video = [r for r in results[True].renditions if r.kind == "video"]
    assert [r.reused_frames for r in results[False].renditions if r.kind == "video"] == [0]
    repeats = _decoded_repeats(source)
    if fps == 10:  # one output slot per source frame: every repeat is a reuse
        assert video[0].reused_frames == sum(repeats) > 0
    else:  # only repeats that get a slot and follow a scaled frame's unchanged run
        assert 0 < video[0].reused_frames < sum(repeats)


# ----------------------------------------------------------------------------- predicted before encoding


def test_the_index_tells_a_still_source_from_a_moving_one(screen: Path, clip: ClipFactory) -> None:
    still = index_activity(screen, transcoder.probe(screen))
    moving_path = clip(seconds=2.0, width=640, height=360)
    moving = index_activity(moving_path, transcoder.probe(moving_path))
    assert still is not None and moving is not None
    assert still.frames == 30 and moving.frames == 60  # one entry per frame, read from the header
    limit = LadderPolicy().still_max_inter_bpp
    assert still.inter_bits_per_pixel <= limit < moving.inter_bits_per_pixel
    assert still.all_over_key_bits < moving.all_over_key_bits


def test_predicted_rates_add_the_audio_group_and_scale_by_the_sources_inter_share() -> None:
    audio = transcoder.AudioPlan()
    rungs = tuple(
        transcoder.Rung(
            name=n, width=w, height=h, fps=Fraction(30), bitrate_kbps=1, maxrate_kbps=1, bufsize_kbps=1, audio=audio
        )
        for n, (w, h) in SIZES.items()
    )
    ladder = transcoder.Ladder(rungs=rungs, audio=(audio,), gop_s=2.0, segment_s=4.0)
    rates = predicted_rates(ladder, [50_000, 40_000, 30_000, 20_000], 1.5, {"audio": 140_000})
    # bytes per 2 s GOP -> bits/s, x1.5 for what changes between keyframes, + audio
    assert [r.bandwidth_bps for r in rates] == [440_000, 380_000, 320_000, 260_000]
    assert [r.average_bandwidth_bps for r in rates] == [r.bandwidth_bps for r in rates]


class _RecordingSink(LocalDirectory):
    """A local directory that remembers every object ever handed to it."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.seen: list[str] = []

    def put(self, relpath: str, data: bytes) -> None:
        self.seen.append(relpath)
        super().put(relpath, data)


def test_rungs_predicted_to_be_dropped_are_never_encoded(screen_720p: Path, tmp_path: Path) -> None:
    config = TranscodeConfig(segment_s=1.0, gop_s=1.0, threads=2)  # the default ladder: 720p, 480p, 360p
    info = transcoder.probe(screen_720p)
    prediction = predict_still_ladder(screen_720p, info, transcoder.plan_ladder(info), config)
    assert prediction.why_not == "" and prediction.skipped
    (tmp_path / "out").mkdir()
    sink = _RecordingSink(tmp_path / "out")
    result = transcode(screen_720p, sink, config=config)
    skipped = {d.name for d in result.rung_decisions if d.reason.startswith(PREDICTED)}
    assert skipped == {d.name for d in prediction.skipped}
    assert "720p" not in skipped  # the top rung is never left out
    for name in skipped:
        assert not any(path.startswith(f"{name}/") for path in sink.seen), name  # not a single segment
    assert {r.name for r in result.renditions if r.kind == "video"} <= {"720p", "480p", "360p"} - skipped


def test_a_moving_source_is_not_predicted(clip: ClipFactory) -> None:
    path = clip(seconds=2.0, width=640, height=360)
    info = transcoder.probe(path)
    prediction = predict_still_ladder(path, info, transcoder.plan_ladder(info, THREE_RUNGS), CONFIG)
    assert prediction.why_not == "the source moves" and prediction.skipped == ()
