"""The viewer outputs' frame taps (storyboard, poster, chapters), and a chunked run's parts of them.

:class:`Viewer` makes the run's :class:`~transcoder.storyboard.Storyboard`,
:class:`~transcoder.poster.PosterPicker` and
:class:`~transcoder.chapters.ChapterDetector` from the config, the probe and
the ladder, alike in every process. A serial run feeds them every frame: the
decoder's frames to the first two, the smallest rung's pictures to the third.

In a chunked run (:mod:`transcoder.chunks`) no process sees every frame, yet
the files must come out as a serial run's, byte for byte. Each process taps
only the frames of its own part of the timeline (:class:`PartTaps`) and the
worker processes send theirs back as a :class:`ViewerPart`; the main process
merges every part (:meth:`Viewer.merge`) into the objects a serial run would
have fed, and publishes them as a serial run does. It then need not decode
the workers' video at all (:class:`~transcoder.decode.VideoSkip`).

Why the merge is exact:

* A storyboard tile and a poster candidate are each the first frame at or
  after a target time. A tapped frame offers a candidate for every target it
  passes: those after the previous decoded frame's time, up to its own. A
  process decodes a contiguous run of frames, so the previous frame is the
  serial run's, except before the first frame a process decodes: that frame
  then offers for every earlier target too, and loses to the true one, which
  is earlier. Per target, the earliest candidate of all parts wins.
* The chapter detector reads one number per picture, the mean absolute
  difference (MAD) from the picture before. A part sends the MADs between
  its own pictures (only those within ``window_s`` of a change or of its
  edges: the others decide nothing) and its first and last tiny luma
  pictures, from which the main process computes the MAD across each seam.

A part owns the decoded frames, and the smallest rung's pictures, whose
times lie in its half-open span of the timeline (:func:`part_spans`); the
parts of a run tile it. Memory of a part until it is sent: its tiles (22 kB
each at 160x90), its poster candidates (1.4 MB each at 1280x720: one per
candidate point in its span, and one for its first frame when the process
decoded nothing before it) and two floats per picture.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol, TypeVar

import av
import numpy as np

from .chapters import ChapterDetector, ChapterPolicy, mad
from .colour import ScalerColour
from .config import TranscodeConfig
from .encode import rung_segment_s
from .errors import MediaError
from .models import Ladder, SourceInfo
from .poster import PosterPicker, poster_score
from .storyboard import Storyboard

_U8 = np.ndarray[Any, np.dtype[np.uint8]]
_I16 = np.ndarray[Any, np.dtype[np.int16]]
_POSTER_LONGEST = 1280
_SLACK_S = 1e-6  # far below a frame, far above float rounding


class FrameTap(Protocol):
    """Sees every decoded frame, in time order (the decoder thread calls it)."""

    def offer(self, frame: av.VideoFrame, time_s: Fraction) -> None: ...


class PictureTap(Protocol):
    """Sees a rung's output pictures, in time order; ``same``: equal to the picture before."""

    def offer(self, frame: av.VideoFrame, time_s: Fraction, same: bool = False) -> None: ...


@dataclass(frozen=True, slots=True)
class PartSpan:
    """``[start_s, stop_s)`` of the output timeline (``stop_s`` None: to its end)."""

    start_s: Fraction
    stop_s: Fraction | None = None

    def __contains__(self, time_s: Fraction) -> bool:
        return time_s >= self.start_s and (self.stop_s is None or time_s < self.stop_s)


def part_spans(ladder: Ladder, first: int, end: int | None) -> tuple[PartSpan, PartSpan]:
    """Segments ``first`` .. ``end - 1`` as spans of decoded frames and of the smallest rung's pictures.

    Decoded frames are split at the top rung's segment boundaries, pictures at the smallest rung's.
    """

    def span(index: int | None, rung_index: int) -> Fraction | None:
        if index is None:
            return None
        rung = ladder.rungs[rung_index]
        per_segment = round(Fraction(rung_segment_s(ladder, rung)) * rung.fps)
        return Fraction(index * per_segment) / rung.fps

    frames = PartSpan(span(first, 0) or Fraction(0), span(end, 0))
    pictures = PartSpan(span(first, -1) or Fraction(0), span(end, -1))
    return frames, pictures


@dataclass(frozen=True, slots=True)
class TileCandidate:
    """The frame at ``time_s`` as a tile, for tiles ``first`` .. ``end - 1`` (those it passes)."""

    time_s: Fraction
    first: int
    end: int
    planes: tuple[_U8, _U8, _U8]


@dataclass(frozen=True, slots=True)
class PosterCandidate:
    """The frame at ``time_s`` at the poster's size, for candidate points ``first`` .. ``end - 1``.

    ``picture`` (yuvj420p, planes one after another) only when it scored.
    """

    time_s: Fraction
    first: int
    end: int
    score: float | None
    picture: _U8 | None


@dataclass(frozen=True, slots=True)
class ChapterSignal:
    """The chapter detector's signal over one part: MADs between its pictures, and its edge pictures."""

    start_s: float  # the time of its first picture
    first: _I16  # its first and last tiny luma pictures
    last: _I16
    samples: tuple[tuple[float, float], ...]  # (time, MAD) of the pictures after the first, where they matter


@dataclass(frozen=True, slots=True)
class ViewerPart:
    """What one process's taps saw of its part of the timeline (plain data: it crosses a process boundary)."""

    start_s: Fraction
    tiles: tuple[TileCandidate, ...] = ()
    poster: tuple[PosterCandidate, ...] = ()
    first_picture: _U8 | None = None  # the video's first frame at the poster's size (the part that starts it)
    chapters: ChapterSignal | None = None


_Candidate = TypeVar("_Candidate", TileCandidate, PosterCandidate)


class Viewer:
    """The run's viewer outputs: each of the three is None when the config turns it off."""

    def __init__(
        self,
        storyboard: Storyboard | None,
        poster: PosterPicker | None,
        chapters: ChapterDetector | None,
    ) -> None:
        self.storyboard = storyboard
        self.poster = poster
        self.chapters = chapters

    @classmethod
    def make(cls, config: TranscodeConfig, info: SourceInfo, ladder: Ladder, colour: ScalerColour | None) -> Viewer:
        """The outputs for this source and ladder; ``colour``: how the rungs' scalers read the source."""
        top = ladder.rungs[0]
        storyboard = poster = None
        if config.thumbnails:
            # Planned from the probe's duration and the top rung's (display)
            # size; tiles are cut from the decoded frames, read with the same
            # colour as the rungs' scalers read them.
            storyboard = Storyboard(info.duration_s, top.width, top.height, policy=config.storyboard, colour=colour)
        if config.poster:
            # Candidates along the video, not the container: audio that
            # outlasts the camera would put them past the last frame.
            span_s = info.video.duration_s or info.duration_s
            poster = PosterPicker(span_s, *_poster_size(top.width, top.height), colour=colour)
        chapters = ChapterDetector(config.chapter_policy) if config.chapters else None
        return cls(storyboard, poster, chapters)

    @property
    def frame_taps(self) -> tuple[FrameTap, ...]:
        """What a serial run's decoder feeds (the chapter detector takes the smallest rung's pictures)."""
        return tuple(tap for tap in (self.poster, self.storyboard) if tap is not None)

    def merge(self, parts: Iterable[ViewerPart]) -> None:
        """Feed every part of a chunked run (the parts tile the timeline) as a serial run feeds its frames."""
        ordered = sorted(parts, key=lambda part: part.start_s)
        if self.storyboard is not None:
            _merge_tiles(self.storyboard, ordered)
        if self.poster is not None:
            _merge_poster(self.poster, ordered)
        if self.chapters is not None:
            _merge_chapters(self.chapters, [part.chapters for part in ordered if part.chapters is not None])


class PartTaps:
    """The taps of one part of a chunked run's timeline; :meth:`part` is what they saw.

    ``frames`` is the part's span of decoded frames, ``pictures`` of the
    smallest rung's pictures. Frames before the span are looked at only for
    their time (a candidate's predecessor). One owner thread per tap: the
    decoder's for :attr:`frame_taps`, the smallest rung's for :attr:`picture_tap`.
    """

    def __init__(self, viewer: Viewer, frames: PartSpan, pictures: PartSpan) -> None:
        self.span = frames
        self._tiles = _TileTap(viewer.storyboard, frames) if viewer.storyboard is not None else None
        self._poster = _PosterTap(viewer.poster, frames) if viewer.poster is not None else None
        self._chapters = _ChapterTap(viewer.chapters, pictures) if viewer.chapters is not None else None

    @property
    def frame_taps(self) -> tuple[FrameTap, ...]:
        return tuple(tap for tap in (self._poster, self._tiles) if tap is not None)

    @property
    def picture_tap(self) -> PictureTap | None:
        return self._chapters

    def part(self) -> ViewerPart:
        return ViewerPart(
            start_s=self.span.start_s,
            tiles=tuple(self._tiles.candidates) if self._tiles is not None else (),
            poster=tuple(self._poster.candidates) if self._poster is not None else (),
            first_picture=self._poster.first_picture if self._poster is not None else None,
            chapters=self._chapters.signal() if self._chapters is not None else None,
        )


class _TargetTap:
    """A tap for targets met by "the first frame at or after a time": it follows the decoded frames' times."""

    def __init__(self, span: PartSpan) -> None:
        self._span = span
        self._previous: Fraction | None = None

    def _step(self, time_s: Fraction) -> tuple[bool, Fraction | None]:
        """Whether ``time_s`` lies in the span; the previous decoded frame's time (None: nothing before it)."""
        previous, self._previous = self._previous, time_s
        return time_s in self._span, previous


class _TileTap(_TargetTap):
    def __init__(self, storyboard: Storyboard, span: PartSpan) -> None:
        super().__init__(span)
        self._storyboard = storyboard
        self.candidates: list[TileCandidate] = []

    def offer(self, frame: av.VideoFrame, time_s: Fraction) -> None:
        inside, previous = self._step(time_s)
        if not inside:
            return
        interval = self._storyboard.interval_s
        # The tiles k with previous < k * interval <= time_s.
        first = 0 if previous is None else int(previous // interval) + 1
        end = int(time_s // interval) + 1
        if first < end:
            self.candidates.append(TileCandidate(time_s, first, end, self._storyboard.tile(frame)))


class _PosterTap(_TargetTap):
    def __init__(self, poster: PosterPicker, span: PartSpan) -> None:
        super().__init__(span)
        self._poster = poster
        self.candidates: list[PosterCandidate] = []
        self.first_picture: _U8 | None = None

    def offer(self, frame: av.VideoFrame, time_s: Fraction) -> None:
        inside, previous = self._step(time_s)
        if not inside:
            return
        points = self._poster.points
        first = 0 if previous is None else bisect.bisect_right(points, previous)
        end = bisect.bisect_right(points, time_s)
        opens = previous is None and self._span.start_s == 0  # the video's first frame: the fallback
        if first >= end and not opens:
            return
        candidate = self._poster.candidate(frame)
        picture: _U8 = np.asarray(candidate.to_ndarray(), dtype=np.uint8)
        if opens:
            self.first_picture = picture
        if first < end:
            score = poster_score(candidate)
            self.candidates.append(PosterCandidate(time_s, first, end, score, picture if score is not None else None))


class _ChapterTap:
    def __init__(self, detector: ChapterDetector, span: PartSpan) -> None:
        self._detector = detector
        self._span = span
        self._first: tuple[float, _I16] | None = None
        self._last: _I16 | None = None
        self._samples: list[tuple[float, float]] = []

    def offer(self, frame: av.VideoFrame, time_s: Fraction, same: bool = False) -> None:
        if time_s not in self._span:
            return
        if same and self._last is not None:
            self._samples.append((float(time_s), 0.0))
            return
        luma = self._detector.luma(frame)
        if self._last is None:
            self._first = (float(time_s), luma)
        else:
            self._samples.append((float(time_s), mad(luma, self._last)))
        self._last = luma

    def signal(self) -> ChapterSignal | None:
        if self._first is None or self._last is None:
            return None
        start, first = self._first
        return ChapterSignal(
            start_s=start,
            first=first,
            last=self._last,
            samples=_where_they_matter(self._samples, self._detector.policy, start),
        )


def _where_they_matter(
    samples: Sequence[tuple[float, float]], policy: ChapterPolicy, start_s: float
) -> tuple[tuple[float, float], ...]:
    """The samples a decision can read: within ``window_s`` of a change (MAD >= min_change) or of an edge.

    With a little to spare: the detector compares float times its own way
    (``abs(t - c) <= window_s``), and a sample kept for nothing is harmless.
    """
    if not samples:
        return ()
    window = policy.window_s + _SLACK_S
    end_s = samples[-1][0]
    changes = [t for t, m in samples if m >= policy.min_change]

    def near_change(t: float) -> bool:
        i = bisect.bisect_left(changes, t - window)
        return i < len(changes) and changes[i] <= t + window

    return tuple((t, m) for t, m in samples if t - start_s <= window or end_s - t <= window or near_change(t))


def _earliest(candidates: Iterable[_Candidate]) -> dict[int, _Candidate]:
    """Per target (a tile, a poster point), the earliest frame offered for it: the serial run's."""
    best: dict[int, _Candidate] = {}
    for candidate in candidates:
        for target in range(candidate.first, candidate.end):
            if target not in best or candidate.time_s < best[target].time_s:
                best[target] = candidate
    return best


def _merge_tiles(storyboard: Storyboard, parts: Sequence[ViewerPart]) -> None:
    best = _earliest(candidate for part in parts for candidate in part.tiles)
    if sorted(best) != list(range(len(best))):
        raise MediaError("the chunks' storyboard tiles do not join up", context={"tiles": len(best)})
    for k in range(len(best)):
        storyboard.place(best[k].planes)


def _merge_poster(poster: PosterPicker, parts: Sequence[ViewerPart]) -> None:
    best = _earliest(candidate for part in parts for candidate in part.poster)
    chosen: tuple[float, _U8] | None = None
    # In time order, the first of the highest scores, as the serial picker keeps it.
    for candidate in sorted({c.time_s: c for c in best.values()}.values(), key=lambda c: c.time_s):
        score, picture = candidate.score, candidate.picture
        if score is not None and picture is not None and (chosen is None or score > chosen[0]):
            chosen = (score, picture)
    first = next((part.first_picture for part in parts if part.first_picture is not None), None)
    poster.adopt(
        (chosen[0], _frame(chosen[1])) if chosen is not None else None,
        _frame(first) if first is not None else None,
    )


def _merge_chapters(detector: ChapterDetector, signals: Sequence[ChapterSignal]) -> None:
    last: _I16 | None = None
    for signal in signals:
        detector.record(signal.start_s, mad(signal.first, last) if last is not None else None)
        for time_s, value in signal.samples:
            detector.record(time_s, value)
        last = signal.last


def _frame(picture: _U8) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(picture, format="yuvj420p")


def _poster_size(width: int, height: int, longest: int = _POSTER_LONGEST) -> tuple[int, int]:
    scale = min(1.0, longest / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


__all__ = [
    "ChapterSignal",
    "FrameTap",
    "PartSpan",
    "PartTaps",
    "PictureTap",
    "PosterCandidate",
    "TileCandidate",
    "Viewer",
    "ViewerPart",
    "part_spans",
]
