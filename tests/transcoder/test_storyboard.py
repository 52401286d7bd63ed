"""Storyboard thumbnails: the plan (pure), and sheets + WebVTT built from decoded frames of real clips.

The VTT is read back with a small regex parser written here (not the
renderer's code), and every tile is checked against the source frame of its
cue's start time, scaled independently (2x2 box average with numpy).
"""

from __future__ import annotations

import io
import itertools
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import m3u8
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.media_slides import make_pan
from transcoder.colour import ScalerColour
from transcoder.errors import ConfigError
from transcoder.output import content_type_for
from transcoder.storyboard import Storyboard, StoryboardOutput, StoryboardPolicy, plan_storyboard

F64 = np.ndarray[Any, np.dtype[np.float64]]

# --------------------------------------------------------------------------- #
# An independent WebVTT thumbnails reader
# --------------------------------------------------------------------------- #

_TIMING = re.compile(r"^(\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3}) --> (\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3})$")
_PAYLOAD = re.compile(r"^([^#\s]+)#xywh=(\d+),(\d+),(\d+),(\d+)$")


@dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    url: str
    x: int
    y: int
    w: int
    h: int


def parse_thumbnails_vtt(text: str) -> list[Cue]:
    blocks = text.strip("\n").split("\n\n")
    assert blocks[0] == "WEBVTT", blocks[0]
    cues = []
    for block in blocks[1:]:
        timing, payload = block.split("\n")
        t = _TIMING.match(timing)
        p = _PAYLOAD.match(payload)
        assert t and p, block
        n = [int(g) for g in t.groups()]
        start = ((n[0] * 60 + n[1]) * 60 + n[2]) * 1000 + n[3]
        end = ((n[4] * 60 + n[5]) * 60 + n[6]) * 1000 + n[7]
        cues.append(Cue(start, end, p.group(1), *(int(g) for g in p.groups()[1:])))
    return cues


# --------------------------------------------------------------------------- #
# The plan (pure)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("duration_s", "size", "interval", "tile", "thumbnails", "sheets"),
    [
        (10.0, (1920, 1080), 2, (160, 90), 5, 1),
        (10.5, (1920, 1080), 2, (160, 90), 6, 1),
        (0.0, (1920, 1080), 2, (160, 90), 1, 1),  # a still image still gets one thumbnail
        (600.0, (1280, 720), 2, (160, 90), 300, 3),  # 10 min: every 2 s
        (1200.0, (1280, 720), 4, (160, 90), 300, 3),
        (3600.0, (1280, 720), 10, (160, 90), 360, 4),  # 1 h: every 10 s
        (6 * 3600.0, (1920, 1080), 10, (160, 90), 2160, 22),  # the longest input the config accepts
        (30 * 3600.0, (1920, 1080), 36, (160, 90), 3000, 30),  # past 10 s: sheets capped
        (10.0, (640, 480), 2, (160, 120), 5, 1),  # 4:3
        (10.0, (1080, 1920), 2, (90, 160), 5, 1),  # portrait
        (10.0, (2560, 1080), 2, (160, 68), 5, 1),  # 64:27: 67.5 -> even 68
        (10.0, (854, 480), 2, (160, 90), 5, 1),
    ],
)
def test_plan_table(
    duration_s: float, size: tuple[int, int], interval: int, tile: tuple[int, int], thumbnails: int, sheets: int
) -> None:
    plan = plan_storyboard(duration_s, *size)
    assert plan.interval_s == interval
    assert (plan.tile_width, plan.tile_height) == tile
    assert (plan.thumbnails, plan.sheets) == (thumbnails, sheets)
    assert (plan.columns, plan.rows) == (10, 10)


@given(
    duration_s=st.floats(min_value=0, max_value=1e7, allow_nan=False),
    width=st.integers(2, 8192),
    height=st.integers(2, 8192),
    max_sheets=st.integers(1, 40),
)
def test_plan_bounds_hold_for_any_duration(duration_s: float, width: int, height: int, max_sheets: int) -> None:
    policy = StoryboardPolicy(max_sheets=max_sheets)
    plan = plan_storyboard(duration_s, width, height, policy=policy)
    assert 1 <= plan.sheets <= max_sheets
    assert plan.thumbnails * plan.interval_s >= duration_s  # the tiles cover the whole duration
    assert (plan.thumbnails - 1) * plan.interval_s < max(duration_s, 1e-9)  # and no tile starts past its end
    assert plan.interval_s >= policy.min_interval_s
    if duration_s <= policy.max_interval_s * max_sheets * 100:
        assert plan.interval_s <= policy.max_interval_s
    assert plan.tile_width % 2 == 0 and plan.tile_height % 2 == 0
    assert max(plan.tile_width, plan.tile_height) == 160
    # aspect kept to within the rounding to even sizes (or the 2-pixel floor)
    if min(plan.tile_width, plan.tile_height) > 2:
        assert abs(plan.tile_width / plan.tile_height - width / height) <= 2.0 / min(
            plan.tile_width, plan.tile_height
        ) * (width / height)


def test_plan_interval_grows_with_duration() -> None:
    intervals = [plan_storyboard(d, 1920, 1080).interval_s for d in range(0, 20_000, 97)]
    assert intervals == sorted(intervals)
    assert intervals[0] == 2 and intervals[-1] == 10


# --------------------------------------------------------------------------- #
# Sheets and track from a real clip
# --------------------------------------------------------------------------- #

FPS = 10


@pytest.fixture(scope="module")
def pan_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 7 s: still for 1 s, then 6 px per frame, so every later frame differs from its neighbours.
    return make_pan(tmp_path_factory.mktemp("storyboard") / "pan.mp4", frames=7 * FPS, still_frames=FPS, fps=FPS)


def decoded_frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def source_luma_full_range(frame: av.VideoFrame) -> F64:
    """The frame's luma as JPEG's full range, box-averaged 2x2 (320x180 -> 160x90)."""
    y = frame.to_ndarray(format="gray").astype(np.float64)  # swscale's gray is full range from limited
    box: F64 = y.reshape(y.shape[0] // 2, 2, y.shape[1] // 2, 2).mean(axis=(1, 3))
    return box


def psnr(a: F64, b: F64) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def decode_jpeg_luma(data: bytes) -> F64:
    with av.open(io.BytesIO(data), mode="r", format="image2pipe") as container:
        frame = next(container.decode(video=0))
    return frame.to_ndarray(format="gray").astype(np.float64)


def build(frames: list[av.VideoFrame], policy: StoryboardPolicy, end_s: float, **kwargs: Any) -> StoryboardOutput:
    storyboard = Storyboard(end_s, frames[0].width, frames[0].height, policy=policy, **kwargs)
    for frame in frames:
        assert frame.time is not None and frame.pts is not None and frame.time_base is not None
        storyboard.offer(frame, Fraction(frame.pts * frame.time_base))
    output = storyboard.finish(end_s)
    assert output is not None
    return output


def test_tiles_show_the_frame_of_their_cue(pan_clip: Path) -> None:
    frames = decoded_frames(pan_clip)
    assert len(frames) == 7 * FPS
    end_s = len(frames) / FPS
    # 1 s tiles on 3x2 sheets: 7 tiles, one full sheet and one partial.
    policy = StoryboardPolicy(min_interval_s=1, columns=3, rows=2)
    output = build(frames, policy, end_s)
    assert output.plan.interval_s == 1
    assert [s.relpath for s in output.sheets] == ["storyboard/sheet-000.jpg", "storyboard/sheet-001.jpg"]
    assert output.vtt.relpath == "thumbnails.vtt"
    assert content_type_for(output.vtt.relpath) == "text/vtt"
    assert {content_type_for(s.relpath) for s in output.sheets} == {"image/jpeg"}

    cues = parse_thumbnails_vtt(output.vtt.data.decode())
    assert len(cues) == output.thumbnails == 7
    # cover the whole duration, contiguous, no overlaps
    assert cues[0].start_ms == 0 and cues[-1].end_ms == round(end_s * 1000)
    assert all(a.end_ms == b.start_ms for a, b in itertools.pairwise(cues))
    assert all(c.end_ms > c.start_ms for c in cues)

    sheets = {f"storyboard/{s.relpath.rsplit('/', 1)[1]}": decode_jpeg_luma(s.data) for s in output.sheets}
    assert sheets["storyboard/sheet-000.jpg"].shape == (2 * 90, 3 * 160)
    assert sheets["storyboard/sheet-001.jpg"].shape == (90, 160)  # cropped to the one tile it holds
    references = [source_luma_full_range(f) for f in frames]
    for cue in cues:
        sheet = sheets[cue.url]
        assert (cue.w, cue.h) == (160, 90)
        assert cue.x >= 0 and cue.x + cue.w <= sheet.shape[1] and cue.y >= 0 and cue.y + cue.h <= sheet.shape[0]
        tile = sheet[cue.y : cue.y + cue.h, cue.x : cue.x + cue.w]
        index = cue.start_ms * FPS // 1000  # the frame shown at the cue's start
        expected = psnr(tile, references[index])
        assert expected > 30, (cue, expected)
        # and it is that frame, not a neighbour (frames after 1 s all differ)
        for other in (index - 1, index + 1):
            if 0 <= other < len(frames) and max(index, other) > FPS:
                assert expected > psnr(tile, references[other]) + 3, (cue, other)


def test_track_names_sheets_relative_to_itself(pan_clip: Path) -> None:
    frames = decoded_frames(pan_clip)[:25]
    policy = StoryboardPolicy(min_interval_s=1)
    beside = build(frames, policy, 2.5, vtt_path="storyboard/thumbnails.vtt")
    assert {c.url for c in parse_thumbnails_vtt(beside.vtt.data.decode())} == {"sheet-000.jpg"}
    nested = build(frames, policy, 2.5, vtt_path="tracks/thumbnails.vtt", directory="images/sb")
    assert nested.sheets[0].relpath == "images/sb/sheet-000.jpg"
    assert {c.url for c in parse_thumbnails_vtt(nested.vtt.data.decode())} == {"../images/sb/sheet-000.jpg"}


def solid(y: int, width: int = 64, height: int = 36, pix_fmt: str = "yuv420p") -> av.VideoFrame:
    data = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    data[:height] = y
    return av.VideoFrame.from_ndarray(data, format=pix_fmt)


class CountingScaler:
    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def reformat(self, frame: av.VideoFrame, **kwargs: Any) -> av.VideoFrame:
        self.calls += 1
        scaled: av.VideoFrame = self.inner.reformat(frame, **kwargs)
        return scaled


def test_only_frames_that_start_an_interval_are_scaled() -> None:
    storyboard = Storyboard(20.0, 64, 36)  # 2 s interval: 10 tiles
    counter = CountingScaler(storyboard._scaler)
    storyboard._scaler = counter  # type: ignore[assignment]
    for index in range(20 * 30):
        storyboard.offer(solid(16 + index % 200), Fraction(index, 30))
    output = storyboard.finish(20.0)
    assert output is not None and output.thumbnails == 10
    assert counter.calls == 10  # not 600


def test_a_gap_fills_every_tile_it_skips_with_the_next_frame() -> None:
    storyboard = Storyboard(12.0, 64, 36, policy=StoryboardPolicy(min_interval_s=1, columns=4, rows=4))
    storyboard.offer(solid(40), Fraction(0))
    storyboard.offer(solid(40), Fraction(1, 2))
    storyboard.offer(solid(200), Fraction(9, 2))  # nothing between 0.5 s and 4.5 s
    storyboard.offer(solid(120), Fraction(11, 2))
    output = storyboard.finish(6)
    assert output is not None
    cues = parse_thumbnails_vtt(output.vtt.data.decode())
    assert [(c.start_ms, c.end_ms) for c in cues] == [(k * 1000, (k + 1) * 1000) for k in range(6)]
    sheet = decode_jpeg_luma(output.sheets[0].data)
    means = [float(sheet[c.y : c.y + c.h, c.x : c.x + c.w].mean()) for c in cues]
    full = [(v - 16) * 255 / 219 for v in (40, 200, 200, 200, 200, 120)]
    assert means == pytest.approx(full, abs=3)


def test_nothing_offered_gives_nothing() -> None:
    assert Storyboard(10.0, 1920, 1080).finish(10.0) is None


def test_portrait_frames_of_another_size_make_portrait_tiles() -> None:
    # a portrait display size; frames arrive at a rung's size (smaller) and are still scaled to the tile
    storyboard = Storyboard(4.0, 1080, 1920)
    for index in range(8):
        storyboard.offer(solid(100, width=180, height=320), Fraction(index, 2))
    output = storyboard.finish(4.0)
    assert output is not None
    assert decode_jpeg_luma(output.sheets[0].data).shape == (160, 2 * 90)
    assert {(c.w, c.h) for c in parse_thumbnails_vtt(output.vtt.data.decode())} == {(90, 160)}


@pytest.mark.parametrize(
    ("source_y", "colour", "tile_y"),
    [
        (40, ScalerColour(src_colorspace="ITU601", src_color_range="JPEG"), 40.0),  # full range stays put
        (40, None, (40 - 16) * 255 / 219),  # limited range (what rungs carry) is expanded to JPEG's
    ],
)
def test_tiles_convert_from_the_source_range(source_y: int, colour: ScalerColour | None, tile_y: float) -> None:
    storyboard = Storyboard(2.0, 64, 36, colour=colour)
    storyboard.offer(solid(source_y, pix_fmt="yuvj420p" if colour else "yuv420p"), Fraction(0))
    output = storyboard.finish(2.0)
    assert output is not None
    assert float(decode_jpeg_luma(output.sheets[0].data).mean()) == pytest.approx(tile_y, abs=1.5)


def test_ten_bit_frames_are_taken() -> None:
    data = np.full((36 * 3 // 2, 64), 512, dtype=np.uint16)  # 10-bit limited mid-grey, neutral chroma
    frame = av.VideoFrame.from_ndarray(data, format="yuv420p10le")
    storyboard = Storyboard(2.0, 64, 36)
    storyboard.offer(frame, Fraction(0))
    output = storyboard.finish(2.0)
    assert output is not None
    assert float(decode_jpeg_luma(output.sheets[0].data).mean()) == pytest.approx((128 - 16) * 255 / 219, abs=1.5)


def test_image_playlist_describes_the_same_sheets(pan_clip: Path) -> None:
    frames = decoded_frames(pan_clip)
    end_s = len(frames) / FPS
    output = build(frames, StoryboardPolicy(min_interval_s=1, columns=3, rows=2), end_s)
    assert output.image_playlist.relpath == "storyboard/images.m3u8"
    assert content_type_for(output.image_playlist.relpath) == "application/vnd.apple.mpegurl"
    data = m3u8.parse(output.image_playlist.data.decode())
    assert data["is_images_only"] and data["is_endlist"] and data["playlist_type"] == "vod"
    assert data["version"] == 7
    # relative to the playlist's directory: the sheets sit beside it
    assert [s["uri"] for s in data["segments"]] == ["sheet-000.jpg", "sheet-001.jpg"]
    assert [s["duration"] for s in data["segments"]] == [6.0, 1.0]  # 6 tiles of 1 s, then the last to 7 s
    assert data["targetduration"] == 6
    # one tile's size; each sheet's own grid (the last is cropped to its one tile)
    assert data["tiles"] == [
        {"resolution": "160x90", "layout": "3x2", "duration": 1.0},
        {"resolution": "160x90", "layout": "1x1", "duration": 1.0},
    ]
    for sheet, segment, tiles in zip(output.sheets, data["segments"], data["tiles"], strict=True):
        columns, rows = (int(n) for n in tiles["layout"].split("x"))
        assert decode_jpeg_luma(sheet.data).shape == (rows * 90, columns * 160)
        assert output.image_bandwidth_bps >= len(sheet.data) * 8 / segment["duration"]
    assert output.image_bandwidth_bps == max(
        math.ceil(len(s.data) * 8 / seg["duration"]) for s, seg in zip(output.sheets, data["segments"], strict=True)
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_interval_s": 0},
        {"min_interval_s": 12},  # above max_interval_s
        {"columns": 0},
        {"max_sheets": 0},
        {"tile_long_side": 161},
        {"jpeg_quantiser": 1},
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        StoryboardPolicy(**kwargs)
