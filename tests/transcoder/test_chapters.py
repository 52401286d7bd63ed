"""Chapters from slide changes: detection on decoded frames of generated clips, spacing, and both output files.

Clips: a slide deck with known change frames (clean, grainy, without the
cursor, and scaled down as a small rung would see it), and content that must
give no chapter at all: a camera pan (slow, fast and grainy, and with every
frame repeated as frame-rate conversion does), grain on a still slide, and a
screen recording with a moving cursor. The WebVTT and JSON outputs are read
back with a regex parser and ``json``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import m3u8
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.media_screen import make_screen_recording
from tests.support.media_slides import make_pan, make_slide_deck
from transcoder.chapters import (
    APPLE_CHAPTERS_DATA_ID,
    ChapterDetector,
    ChapterOutput,
    ChapterPolicy,
    chapters_from_cuts,
    render_chapters_json,
    space_cuts,
)
from transcoder.errors import ConfigError
from transcoder.hls import SessionData, VariantEntry, render_master_playlist
from transcoder.output import content_type_for

FPS = 10
CHANGES = (14, 31, 45, 63)  # frames where a new slide first shows (80 frames, 8 s)
POLICY = ChapterPolicy(min_spacing_s=1.0)  # the deck's slides last 1.4-1.8 s


def frames_of(path: Path, *, size: tuple[int, int] | None = None) -> Iterator[tuple[av.VideoFrame, Fraction]]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            assert frame.pts is not None and frame.time_base is not None
            time_s = Fraction(frame.pts * frame.time_base)
            if size is not None:  # what a small rung's scaler would hand over
                frame = frame.reformat(width=size[0], height=size[1])
            yield frame, time_s


def detect(
    frames: Iterator[tuple[av.VideoFrame, Fraction]], end_s: float, policy: ChapterPolicy = POLICY
) -> ChapterOutput:
    detector = ChapterDetector(policy)
    for frame, time_s in frames:
        detector.offer(frame, time_s)
    output = detector.finish(end_s)
    assert output is not None
    return output


def assert_found_within_one_frame(found: tuple[float, ...], known: list[Fraction]) -> None:
    assert len(found) == len(known), (found, known)
    for cut, change in zip(found, known, strict=True):
        assert abs(Fraction(cut).limit_denominator(1000) - change) <= Fraction(1, FPS), (found, known)


# --------------------------------------------------------------------------- #
# Every slide change is found
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("grain", "cursor", "size"),
    [
        (0.0, True, None),
        (8.0, True, None),  # a camera filming a projector: fresh noise on every frame
        (0.0, False, None),  # perfectly still slides: nothing at all changes between cuts
        (0.0, True, (96, 54)),  # frames as a small rung hands them over
    ],
)
def test_every_slide_change_is_a_chapter(
    tmp_path: Path, grain: float, cursor: bool, size: tuple[int, int] | None
) -> None:
    known = make_slide_deck(tmp_path / "deck.mp4", change_frames=CHANGES, frames=80, grain=grain, cursor=cursor)
    output = detect(frames_of(tmp_path / "deck.mp4", size=size), 8.0)
    assert_found_within_one_frame(output.cuts_s, known)
    starts = [c.start_s for c in output.chapters]
    assert starts[0] == 0.0
    assert_found_within_one_frame(tuple(starts[1:]), known)
    assert output.chapters[-1].end_s == 8.0


def test_min_spacing_merges_short_slides_into_the_chapter_before(tmp_path: Path) -> None:
    known = make_slide_deck(tmp_path / "deck.mp4", change_frames=CHANGES, frames=80)
    # Slides shown 1.4, 1.7, 1.4, 1.8 and 1.7 s, with 1.6 s chapters: the second
    # slide cannot start a chapter (the first would last 1.4 s) and the third is
    # too short to, so chapter 1 holds the first three slides.
    output = detect(frames_of(tmp_path / "deck.mp4"), 8.0, ChapterPolicy(min_spacing_s=1.6))
    assert len(output.cuts_s) == 4
    assert_found_within_one_frame(tuple(c.start_s for c in output.chapters[1:]), [known[2], known[3]])
    assert all(c.end_s - c.start_s >= 1.6 for c in output.chapters)


# --------------------------------------------------------------------------- #
# ... and nothing else is
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("speed_px", "grain"),
    [(2, 0.0), (6, 0.0), (16, 6.0)],  # slow, medium, fast and grainy; each starts abruptly from still
)
def test_no_chapter_on_a_camera_pan(tmp_path: Path, speed_px: int, grain: float) -> None:
    make_pan(tmp_path / "pan.mp4", frames=50, still_frames=10, speed_px=speed_px, grain=grain)
    output = detect(frames_of(tmp_path / "pan.mp4"), 5.0)
    assert output.cuts_s == ()
    assert len(output.chapters) == 1


def test_no_chapter_on_a_pan_whose_frames_repeat(tmp_path: Path) -> None:
    # 10 fps shown at 30 fps (each frame three times, as a CFR conversion does):
    # the pan changes only every third frame, each change between two repeats.
    make_pan(tmp_path / "pan.mp4", frames=50, still_frames=10, speed_px=6)

    def tripled() -> Iterator[tuple[av.VideoFrame, Fraction]]:
        for frame, time_s in frames_of(tmp_path / "pan.mp4"):
            for k in range(3):
                yield frame, time_s + Fraction(k, 3 * FPS)

    assert detect(tripled(), 5.0).cuts_s == ()


def test_no_chapter_on_grain_over_a_still_slide(tmp_path: Path) -> None:
    make_slide_deck(tmp_path / "still.mp4", change_frames=(), frames=40, grain=10.0)
    assert detect(frames_of(tmp_path / "still.mp4"), 4.0).cuts_s == ()


def test_no_chapter_on_a_moving_cursor(tmp_path: Path) -> None:
    path = make_screen_recording(
        tmp_path / "screen.mp4", width=320, height=180, fps=FPS, seconds=4.0, cursor_moves_s=(0.5, 3.5), audio=False
    )
    output = detect(frames_of(path), 4.0)
    assert output.cuts_s == ()
    assert len(output.chapters) == 1


def test_nothing_offered_gives_nothing() -> None:
    assert ChapterDetector().finish(10.0) is None


# --------------------------------------------------------------------------- #
# Spacing (pure)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("cuts", "end", "spacing", "kept"),
    [
        ([], 60.0, 10.0, []),
        ([20.0, 40.0], 60.0, 10.0, [20.0, 40.0]),
        ([5.0, 40.0], 60.0, 10.0, [40.0]),  # a 5 s opening joins the first chapter
        ([20.0, 55.0], 60.0, 10.0, [20.0]),  # a 5 s ending joins the last chapter
        ([20.0, 21.0, 22.0, 40.0], 60.0, 10.0, [22.0, 40.0]),  # a flip-through: the chapter starts where it settled
        ([20.0, 25.0, 40.0], 60.0, 10.0, [20.0, 40.0]),  # a 5 s slide is no flip: the first cut is kept
        ([float(c) for c in range(5, 60, 5)], 60.0, 10.0, [10.0, 20.0, 30.0, 40.0, 50.0]),  # 5 s slides
        ([20.0, 21.5, 40.0], 60.0, 10.0, [21.5, 40.0]),
        ([20.0, 40.0], 60.0, 0.0, [20.0, 40.0]),
        ([10.0], 20.0, 10.0, [10.0]),  # exactly the minimum on both sides
    ],
)
def test_space_cuts_table(cuts: list[float], end: float, spacing: float, kept: list[float]) -> None:
    assert space_cuts(cuts, end, spacing) == kept


@given(
    st.lists(st.floats(min_value=0.01, max_value=999.0), unique=True, max_size=40),
    st.floats(min_value=0.0, max_value=60.0),
)
def test_every_chapter_lasts_the_minimum(raw: list[float], spacing: float) -> None:
    cuts = sorted(raw)
    kept = space_cuts(cuts, 1000.0, spacing)
    assert set(kept) <= set(cuts)
    bounds = [0.0, *kept, 1000.0]
    assert all(b - a >= spacing for a, b in itertools.pairwise(bounds))
    for cut in kept:  # and no kept cut starts a flipped-past scene
        after = [c for c in cuts if c > cut]
        assert (after[0] if after else 1000.0) - cut >= min(2.0, spacing)


def test_space_cuts_rejects_unordered_cuts() -> None:
    with pytest.raises(ValueError, match="increasing"):
        space_cuts([20.0, 10.0], 60.0, 1.0)


# --------------------------------------------------------------------------- #
# The two files, read back independently
# --------------------------------------------------------------------------- #

_TIMING = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")


def parse_vtt(text: str) -> list[tuple[int, int, str]]:
    blocks = text.strip("\n").split("\n\n")
    assert blocks[0] == "WEBVTT"
    cues = []
    for block in blocks[1:]:
        timing, title = block.split("\n")
        match = _TIMING.match(timing)
        assert match, timing
        n = [int(g) for g in match.groups()]
        cues.append(
            (((n[0] * 60 + n[1]) * 60 + n[2]) * 1000 + n[3], ((n[4] * 60 + n[5]) * 60 + n[6]) * 1000 + n[7], title)
        )
    return cues


def test_vtt_and_json_describe_the_same_chapters(tmp_path: Path) -> None:
    make_slide_deck(tmp_path / "deck.mp4", change_frames=CHANGES, frames=80)
    output = detect(frames_of(tmp_path / "deck.mp4"), 8.0)
    assert (output.vtt.relpath, output.json.relpath) == ("chapters.vtt", "chapters.json")
    assert [content_type_for(f.relpath) for f in output.files] == ["text/vtt", "application/json"]

    cues = parse_vtt(output.vtt.data.decode())
    assert [title for _, _, title in cues] == [f"Chapter {n}" for n in range(1, 6)]
    assert cues[0][0] == 0 and cues[-1][1] == 8000
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cues))  # no gaps, no overlaps
    assert [start for start, _, _ in cues[1:]] == [c * 100 for c in CHANGES]

    entries = json.loads(output.json.data)
    assert isinstance(entries, list) and len(entries) == len(cues)
    for number, (entry, (start, end, title)) in enumerate(zip(entries, cues, strict=True), start=1):
        assert set(entry) == {"chapter", "start-time", "duration", "titles"}
        assert entry["chapter"] == number
        assert entry["start-time"] == pytest.approx(start / 1000)
        assert entry["duration"] == pytest.approx((end - start) / 1000) and entry["duration"] > 0
        assert entry["titles"] == [{"language": "en", "title": title}]


def test_json_times_are_rounded_to_milliseconds() -> None:
    chapters = chapters_from_cuts([1 / 3], 2 / 3, ChapterPolicy())
    entries = json.loads(render_chapters_json(chapters))
    assert [(e["start-time"], e["duration"]) for e in entries] == [(0.0, 0.333), (0.333, 0.333)]


def test_master_references_the_json_the_way_apple_reads_it(tmp_path: Path) -> None:
    make_slide_deck(tmp_path / "deck.mp4", change_frames=CHANGES, frames=80)
    output = detect(frames_of(tmp_path / "deck.mp4"), 8.0)
    variant = VariantEntry(
        uri="360p/index.m3u8",
        iframe_uri=None,
        bandwidth_bps=900_000,
        average_bandwidth_bps=800_000,
        codecs="avc1.64001e",
        width=640,
        height=360,
        fps=Fraction(30),
        audio_group=None,
    )
    master = render_master_playlist(
        [variant], [], session_data=[SessionData(data_id=APPLE_CHAPTERS_DATA_ID, uri=output.json.relpath)]
    )
    (data,) = m3u8.loads(master).session_data
    assert (data.data_id, data.uri) == ("com.apple.hls.chapters", "chapters.json")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"width": 4},
        {"min_change": 0.0},
        {"spike_ratio": 0.5},
        {"window_s": 0.0},
        {"min_spacing_s": float("nan")},
        {"flip_s": -1.0},
        {"title_format": "Chapter"},
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ChapterPolicy(**kwargs)


def test_frames_flagged_same_are_not_scaled_and_change_nothing(tmp_path: Path) -> None:
    # A still deck (no cursor): the decoder's repeat detector would flag every
    # frame but the first of each slide as equal to the one before.
    known = make_slide_deck(tmp_path / "deck.mp4", change_frames=CHANGES, frames=80, cursor=False)
    detector = ChapterDetector(POLICY)
    first_of_slide = {0, *CHANGES}
    for index, (frame, time_s) in enumerate(frames_of(tmp_path / "deck.mp4")):
        detector.offer(frame, time_s, same=index not in first_of_slide)
    output = detector.finish(8.0)
    assert output is not None
    assert_found_within_one_frame(output.cuts_s, known)
    assert (detector.frames, detector.scaled) == (80, len(first_of_slide))
