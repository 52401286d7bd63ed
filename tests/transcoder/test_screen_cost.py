"""A still source's cheaper settings: used exactly when the still gate says so.

A source the index gate of :mod:`transcoder.prediction` finds still (slides,
screen recordings) is encoded with :data:`~transcoder.still.STILL_X264_PARAMS`
and, where the rungs fill the budget, one x264 thread per rung and one decoder
thread (:mod:`transcoder.threadplan`). These tests read what x264 itself wrote
into the bitstream (its SEI settings string), the thread plan, ``--plan``, and
check that a moving (camera-like) source comes out byte for byte as before.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import pytest
from click.testing import CliRunner

import transcoder
from tests.support.media_screen import make_screen_recording
from transcoder import LadderPolicy, RungSpec, TranscodeConfig, transcode
from transcoder.budget import CpuBudget
from transcoder.cli import EXIT_OK, cli
from transcoder.config import EncoderSettings
from transcoder.models import Ladder, Rung
from transcoder.prediction import predict_still_ladder, still_gate
from transcoder.still import STILL_X264_PARAMS
from transcoder.threadplan import MIN_X264_THREADS, plan_threads

ClipFactory = Callable[..., Path]

TWO_RUNGS = LadderPolicy(rungs=(RungSpec(short_side=360, bitrate_kbps=800), RungSpec(short_side=180, bitrate_kbps=300)))
STILL_PARAMS = dict(item.split("=") for item in STILL_X264_PARAMS.split(":"))


def _config(*, still_settings: bool = True) -> TranscodeConfig:
    return TranscodeConfig(
        ladder=TWO_RUNGS,
        segment_s=1.0,
        gop_s=1.0,
        threads=2,
        encoder=EncoderSettings(still_settings=still_settings),
    )


@pytest.fixture(scope="module")
def screen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of a still 640x360 slide at 10 fps with a cursor that moves for half a second."""
    return make_screen_recording(tmp_path_factory.mktemp("screen") / "screen.mp4")


def _x264_settings(segment: Path) -> dict[str, str]:
    """The options x264 wrote into the SEI of the segment's first video packet."""
    with av.open(io.BytesIO(segment.read_bytes()), mode="r", format="mpegts") as container:
        first = next(bytes(p) for p in container.demux(video=0) if p.size)
    start = first.index(b"x264 - core")
    text = first[start : first.index(b"\x00", start)].decode("ascii", "replace")
    return dict(item.split("=", 1) for item in text.split(" - options: ", 1)[1].split() if "=" in item)


def _segments(out: Path, name: str) -> list[Path]:
    return sorted((out / name).glob("seg_*.ts"))


def test_a_still_source_is_encoded_with_the_still_settings(screen: Path, tmp_path: Path) -> None:
    info = transcoder.probe(screen)
    assert still_gate(screen, info, TWO_RUNGS)[1] == ""
    for still_settings in (True, False):
        config = _config(still_settings=still_settings)
        prediction = predict_still_ladder(screen, info, transcoder.plan_ladder(info, TWO_RUNGS), config)
        assert prediction.still  # the gate's verdict; the switch decides whether it is used
        encoded = prediction.encode_ladder(transcoder.plan_ladder(info, TWO_RUNGS))
        plan = plan_threads(encoded, CpuBudget(cores=2, source="override"), still=still_settings)
        out = tmp_path / str(still_settings)
        result = transcode(screen, out, config=config)
        videos = [r.name for r in result.renditions if r.kind == "video"]
        assert videos
        for name in videos:
            # What x264 wrote into the bitstream, not what was asked for.
            settings = _x264_settings(_segments(out, name)[0])
            if still_settings:
                assert {k: settings[k] for k in STILL_PARAMS} == STILL_PARAMS, name
            else:  # the preset's own settings (veryfast: 3 B-frames, subme 2)
                assert settings["bframes"] == "3" and settings["subme"] == "2", name
            assert settings["threads"] == str(plan.encoder_threads[name]), name


def test_a_moving_source_keeps_the_presets_settings(clip: ClipFactory, tmp_path: Path) -> None:
    # Noise and motion: the gate says the source moves, so the switch changes nothing
    # x264 is given: its own settings string, every option and the thread count
    # included. (Not the bytes: two runs of this 2-rung ladder with 3 frame threads
    # per rung differ on a loaded machine whatever the switch, bench/NOTES.md.)
    source = clip(seconds=1.0, width=640, height=360)
    info = transcoder.probe(source)
    assert still_gate(source, info, TWO_RUNGS)[1] == "the source moves"
    settings: dict[bool, dict[str, list[dict[str, str]]]] = {}
    for still_settings in (True, False):
        out = tmp_path / str(still_settings)
        result = transcode(source, out, config=_config(still_settings=still_settings))
        names = [r.name for r in result.renditions if r.kind == "video"]
        assert names == ["360p", "180p"]
        settings[still_settings] = {name: [_x264_settings(p) for p in _segments(out, name)] for name in names}
    assert settings[True] == settings[False]
    for name, per_segment in settings[True].items():
        assert len(per_segment) == 1 and per_segment[0]["bframes"] == "3" and per_segment[0]["subme"] == "2", name


def _rung(name: str, width: int, height: int) -> Rung:
    return Rung(
        name=name, width=width, height=height, fps=Fraction(30), bitrate_kbps=1000, maxrate_kbps=1100, bufsize_kbps=2000
    )


# The bench's screen recording after prediction: 1080p and 360p are encoded.
SCREEN_LADDER = Ladder(rungs=(_rung("1080p", 1920, 1080), _rung("360p", 640, 360)), audio=(), gop_s=2.0, segment_s=4.0)


def test_the_still_thread_plan_applies_only_where_the_rungs_fill_the_budget() -> None:
    two = CpuBudget(cores=2, source="override")
    moving, still = plan_threads(SCREEN_LADDER, two), plan_threads(SCREEN_LADDER, two, still=True)
    assert moving.encoder_threads == {"1080p": 2, "360p": MIN_X264_THREADS} and moving.decoder_threads == 2
    assert still.encoder_threads == {"1080p": 1, "360p": 1} and still.decoder_threads == 1
    # Priorities and the lookahead thread stay what the budget makes them.
    assert still.encoder_nice == moving.encoder_nice and still.x264_lookahead_thread == moving.x264_lookahead_thread
    assert sum("a still source" in line for line in still.describe()) == 3  # decoder and both rungs say why
    # With cores to spare per rung, frame threads buy speed: the usual plan.
    for cores in (4, 16):
        budget = CpuBudget(cores=cores, source="override")
        usual, still = plan_threads(SCREEN_LADDER, budget), plan_threads(SCREEN_LADDER, budget, still=True)
        assert (still.encoder_threads, still.decoder_threads) == (usual.encoder_threads, usual.decoder_threads)


@pytest.fixture(scope="module")
def screen_720p(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The still slide at 1280x720: the default ladder plans 720p, 480p and 360p, which fill 2 cores."""
    return make_screen_recording(tmp_path_factory.mktemp("screen720") / "screen.mp4", width=1280, height=720, seconds=2)


def test_plan_shows_the_still_settings(screen_720p: Path, clip: ClipFactory) -> None:
    runner = CliRunner()
    for source, still in ((screen_720p, True), (clip(seconds=1.0, width=1280, height=720), False)):
        done = runner.invoke(cli, [str(source), "--plan", "--json", "--threads", "2"])
        assert done.exit_code == EXIT_OK, done.output
        payload = json.loads(done.stdout)
        assert len(payload["x264"]) == 3
        for name, options in payload["x264"].items():
            assert options["x264-params"].endswith(":" + STILL_X264_PARAMS) == still, name
        threads = payload["threads"]
        assert (set(threads["encoder_threads"].values()) == {1} and threads["decoder_threads"] == 1) == still
