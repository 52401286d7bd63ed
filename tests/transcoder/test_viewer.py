"""A chunked run's viewer outputs (transcoder.viewer): parts tapped apart and merged equal a serial run's.

The decoded frames of a slide deck are fed once to serial taps, and once split
into parts at chosen frames, each part fed as a chunk worker sees it: from a
lead-in (the keyframe before its start, or none when a keyframe starts it)
to the first frame past its end, through its own taps. The merged storyboard
sheets and tracks, poster JPEG and chapter files must be byte-identical to
the serial ones. Splits sit on slide changes, on tile and poster points, a
frame either side of them, and make a part of one frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np
import pytest

from tests.support.media_slides import make_slide_deck
from transcoder.chapters import ChapterDetector, ChapterPolicy
from transcoder.poster import PosterPicker
from transcoder.storyboard import Storyboard, StoryboardPolicy
from transcoder.viewer import PartSpan, PartTaps, Viewer

FPS = 10
FRAMES = 140  # 14 s
CHANGES = (20, 47, 60, 63, 80, 101, 118)  # new slides at 2.0 s, 4.7, 6.0, 6.3, 8.0, 10.1, 11.8
FLIPPED = (60, 63)  # two changes 0.3 s apart (under window_s) hide each other: neither is a cut
DURATION = FRAMES / FPS  # poster points at 1.4, 3.5, 5.6, 7.0, 8.4 and 10.5 s: frames 14, 35, 56, 70, 84, 105
CHAPTERS = ChapterPolicy(min_spacing_s=1.0, flip_s=0.5)
TILES = StoryboardPolicy(min_interval_s=1, max_interval_s=1)  # a tile every second: frames 0, 10, 20, ...

Frames = list[tuple[av.VideoFrame, Fraction]]


def viewer() -> Viewer:
    """The three outputs, made alike for each part and for the merge (as each process makes its own)."""
    return Viewer(
        Storyboard(DURATION, 320, 180, policy=TILES),
        PosterPicker(DURATION, 320, 180),
        ChapterDetector(CHAPTERS),
    )


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Frames:
    path = tmp_path_factory.mktemp("viewer") / "deck.mp4"
    make_slide_deck(path, change_frames=CHANGES, frames=FRAMES, fps=FPS)
    with av.open(str(path)) as container:
        out = [(frame, Fraction(frame.pts or 0) * (frame.time_base or 1)) for frame in container.decode(video=0)]
    assert len(out) == FRAMES
    return out


def outputs(merged: Viewer) -> dict[str, bytes]:
    end = Fraction(FRAMES, FPS)
    assert merged.storyboard is not None and merged.poster is not None and merged.chapters is not None
    board, chapters, poster = merged.storyboard.finish(end), merged.chapters.finish(end), merged.poster.jpeg()
    assert board is not None and chapters is not None and poster is not None
    files = {f.relpath: f.data for f in (*board.files, *chapters.files)}
    files["poster.jpg"] = poster
    files["cuts"] = repr(chapters.cuts_s).encode()
    return files


def serial(frames: Frames) -> dict[str, bytes]:
    whole = viewer()
    for frame, time_s in frames:
        for tap in whole.frame_taps:
            tap.offer(frame, time_s)
        assert whole.chapters is not None
        whole.chapters.offer(frame, time_s)
    return outputs(whole)


def parted(frames: Frames, starts: Sequence[int], leads: Sequence[int]) -> dict[str, bytes]:
    """Parts start at ``starts`` (frame indices, the first 0); part i is decoded from frame ``starts[i] - leads[i]``."""
    parts = []
    bounds = [*starts, None]
    for index, (start, lead) in enumerate(zip(starts, leads, strict=True)):
        stop = bounds[index + 1]
        span = PartSpan(Fraction(start, FPS), Fraction(stop, FPS) if stop is not None else None)
        taps = PartTaps(viewer(), span, span)
        picture_tap = taps.picture_tap
        assert picture_tap is not None
        # Decoded from the lead-in to the first frame at or past the part's end, as a worker decodes.
        for frame, time_s in frames[start - lead : None if stop is None else stop + 1]:
            for tap in taps.frame_taps:
                tap.offer(frame, time_s)
            picture_tap.offer(frame, time_s)
        parts.append(taps.part())
    merged = viewer()
    merged.merge(reversed(parts))  # in any order
    return outputs(merged)


@pytest.mark.parametrize(
    ("starts", "leads"),
    [
        pytest.param([0, 20, 60, 100], [0, 0, 0, 0], id="keyframes-at-starts-seam-on-a-change"),
        pytest.param([0, 47, 81, 118], [0, 7, 5, 9], id="lead-ins-seams-on-and-after-changes"),
        pytest.param([0, 46, 80, 102], [0, 0, 3, 0], id="seams-a-frame-before-and-after-changes"),
        pytest.param([0, 14, 35, 105], [0, 0, 4, 0], id="seams-on-poster-points"),
        pytest.param([0, 70, 71, 130], [0, 0, 0, 0], id="a-part-of-one-frame"),
        pytest.param([0, 30, 60, 90, 120], [0, 11, 0, 29, 1], id="five-parts"),
        pytest.param([0, 62, 100], [0, 0, 0], id="a-seam-between-two-changes-that-hide-each-other"),
    ],
)
def test_merged_parts_publish_what_the_serial_taps_do(frames: Frames, starts: list[int], leads: list[int]) -> None:
    want = serial(frames)
    assert len([k for k in want if k.startswith("storyboard/sheet-")]) == 1 and want["thumbnails.vtt"].count(
        b"#xywh="
    ) == (FRAMES // FPS)
    cuts = tuple(c / FPS for c in CHANGES if c not in FLIPPED)
    assert want["cuts"] == repr(cuts).encode()  # the deck's changes, found
    assert parted(frames, starts, leads) == want


def test_a_part_that_stops_early_leaves_tiles_to_the_next_one(frames: Frames) -> None:
    """Every tile comes from the earliest frame at or after its time, whichever part holds it."""
    parts = []
    for start, stop in ((0, 25), (25, None)):
        span = PartSpan(Fraction(start, FPS), Fraction(stop, FPS) if stop is not None else None)
        taps = PartTaps(viewer(), span, span)
        for frame, time_s in frames[start : None if stop is None else stop + 1]:
            for tap in taps.frame_taps:
                tap.offer(frame, time_s)
        parts.append(taps.part())
    # The second part's first frame (2.5 s) offers itself for tiles 0-2, which the first part's frames win.
    assert [(c.first, c.end) for c in parts[1].tiles][:2] == [(0, 3), (3, 4)]
    merged = viewer()
    merged.merge(parts)
    assert merged.storyboard is not None and merged.storyboard.count == FRAMES // FPS


def test_flat_video_falls_back_to_its_first_frame_in_both() -> None:
    """No candidate scores (grey, then black): the poster is the video's first frame, from the part that starts it."""
    grey = np.full((270, 320), 128, dtype=np.uint8)
    frames = [
        (av.VideoFrame.from_ndarray(grey if i < 30 else np.full_like(grey, 16), format="yuv420p"), Fraction(i, FPS))
        for i in range(FRAMES)
    ]
    whole = PosterPicker(DURATION, 320, 180)
    for frame, time_s in frames:
        whole.offer(frame, time_s)
    merged = viewer()
    parts = []
    for start, stop in ((0, 50), (50, None)):
        span = PartSpan(Fraction(start, FPS), Fraction(stop, FPS) if stop is not None else None)
        taps = PartTaps(viewer(), span, span)
        for frame, time_s in frames[start:]:
            for tap in taps.frame_taps:
                tap.offer(frame, time_s)
        parts.append(taps.part())
    assert parts[0].first_picture is not None and parts[1].first_picture is None
    assert all(c.picture is None for part in parts for c in part.poster)  # nothing scored: no pictures sent
    merged.merge(parts)
    assert merged.poster is not None
    jpeg, want = merged.poster.jpeg(), whole.jpeg()
    assert jpeg is not None and jpeg == want


def _uniform(levels: Sequence[int]) -> Frames:
    """Flat frames whose luma steps as given: the chapter detector's MAD is each step (in full-range levels)."""
    out = []
    for index, level in enumerate(levels):
        data = np.full((270, 320), 128, dtype=np.uint8)
        data[:180] = level
        out.append((av.VideoFrame.from_ndarray(data, format="yuv420p"), Fraction(index, FPS)))
    return out


def _cuts(frames: Frames, starts: Sequence[int]) -> tuple[float, ...]:
    parts = []
    bounds = [*starts, None]
    for index, start in enumerate(starts):
        stop = bounds[index + 1]
        span = PartSpan(Fraction(start, FPS), Fraction(stop, FPS) if stop is not None else None)
        taps = PartTaps(Viewer(None, None, ChapterDetector(CHAPTERS)), span, span)
        assert taps.picture_tap is not None
        for frame, time_s in frames[start : None if stop is None else stop + 1]:
            taps.picture_tap.offer(frame, time_s)
        parts.append(taps.part())
    merged = Viewer(None, None, ChapterDetector(CHAPTERS))
    merged.merge(parts)
    assert merged.chapters is not None
    out = merged.chapters.finish(Fraction(len(frames), FPS))
    assert out is not None
    return out.cuts_s


@pytest.mark.parametrize("seam", [59, 60, 61, 62, 63, 66])
def test_a_small_change_across_a_seam_still_vetoes_a_cut(seam: int) -> None:
    """A step of 4 levels (no change by itself) 0.2 s before one of 8 makes the 8 no spike, on both sides of a seam."""
    frames = _uniform([100] * 60 + [104] * 2 + [112] * 40)
    assert _cuts(frames, [0]) == ()
    assert _cuts(frames, [0, seam]) == ()
    alone = _uniform([100] * 62 + [112] * 40)  # without the small step the 8 is a cut, wherever the seam
    assert _cuts(alone, [0]) == _cuts(alone, [0, seam]) == (6.2,)
