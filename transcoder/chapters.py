"""Chapters from hard scene changes (slide changes), as WebVTT and Apple JSON.

Detection runs on a tiny luma picture of every frame (64x36 by default,
area-averaged by swscale: averaging ~30x30 source pixels into one cell
removes grain and text aliasing) and one number per frame: the mean absolute
difference (MAD, in 8-bit luma levels) from the previous frame.

A frame starts a new scene (a *cut*) when its MAD is

* at least ``min_change`` (a new slide changes a large part of the picture;
  a moving cursor or a revealed bullet changes little), and
* at least ``spike_ratio`` times the MAD of every other frame within
  ``window_s`` seconds before and after it. A cut is a single spike; camera
  motion, scrolling, grain and noise change every frame by similar amounts,
  so a pan (even one that starts abruptly) never stands out from its
  neighbours. The window is in seconds, not frames, because frames may
  repeat (screen recorders, frame-rate conversion): a pan captured at 5 fps
  and shown at 30 changes only every sixth frame, and each of those changes
  must still see the others. Two real cuts closer than ``window_s`` hide
  each other (slides flipped through; they would not make chapters anyway).

The decision on a frame waits until ``window_s`` of later frames are seen.

Cuts then become chapters with a minimum length (:func:`space_cuts`): every
chapter lasts at least ``min_spacing_s``, and a scene of under ``flip_s`` (a
slide flipped past) never starts one.

Output: a WebVTT chapters track (``kind="chapters"``) and Apple's JSON
chapter format, which the master playlist references with
``EXT-X-SESSION-DATA:DATA-ID="com.apple.hls.chapters"`` (see
:class:`transcoder.hls.SessionData`).

Cost (measured on a 2-vCPU machine, one thread, the frames of the 10 s 1080p
``bench.sources`` sample): 0.58-0.66 ms per decoded 1080p frame (the area
downscale is most of it), 0.10-0.12 ms per 640x360 rung frame; 0.8% and 0.13%
of that sample's ``transcode`` CPU (23 s). Feed it a small rung's frames.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from .errors import ConfigError
from .storyboard import OutputFile, vtt_timestamp

__all__ = [
    "APPLE_CHAPTERS_DATA_ID",
    "Chapter",
    "ChapterDetector",
    "ChapterOutput",
    "ChapterPolicy",
    "chapters_from_cuts",
    "mad",
    "render_chapters_json",
    "render_chapters_vtt",
    "space_cuts",
]

# The DATA-ID Apple's players read chapter JSON from ("Providing JavaScript
# Object Notation (JSON) chapters", Apple HLS documentation).
APPLE_CHAPTERS_DATA_ID = "com.apple.hls.chapters"

_I16 = np.ndarray[Any, np.dtype[np.int16]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChapterPolicy:
    """Thresholds of the scene-change detector; see the module docstring.

    ``min_change`` is a MAD in 8-bit luma levels on the ``width`` x ``height``
    picture. Measured on 320x180 and 640x360 clips: two slides of one
    template with different text 13-23; a block of ink the size of a revealed
    line 5.6 (640x360) to 8.3 (320x180); a moving 12-16 pixel cursor 0.2-0.6;
    film grain of standard deviation 8 levels ~1.3; a pan 12-38.
    """

    width: int = 64
    height: int = 36
    min_change: float = 6.0
    spike_ratio: float = 3.0
    window_s: float = 0.5
    min_spacing_s: float = 10.0
    flip_s: float = 2.0  # a scene shorter than this (or min_spacing_s) is a slide flipped past
    title_format: str = "Chapter {number}"
    language: str = "en"  # BCP 47 tag of the titles (they are English words)

    def __post_init__(self) -> None:
        if self.width < 8 or self.height < 8:
            raise ConfigError(f"the luma picture must be at least 8x8, got {self.width}x{self.height}")
        if not self.min_change > 0:
            raise ConfigError(f"min_change must be positive, got {self.min_change}")
        if self.spike_ratio < 1 or not self.window_s > 0:
            raise ConfigError(f"need spike_ratio >= 1 and window_s > 0, got {self.spike_ratio}, {self.window_s}")
        if not math.isfinite(self.min_spacing_s) or self.min_spacing_s < 0:
            raise ConfigError(f"min_spacing_s must be finite and >= 0, got {self.min_spacing_s}")
        if not math.isfinite(self.flip_s) or self.flip_s < 0:
            raise ConfigError(f"flip_s must be finite and >= 0, got {self.flip_s}")
        if "{number}" not in self.title_format:
            raise ConfigError(f"title_format must contain {{number}}: {self.title_format!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Chapter:
    """Chapter ``number`` (from 1) spans ``[start_s, end_s)`` seconds."""

    number: int
    start_s: float
    end_s: float
    title: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChapterOutput:
    """What :meth:`ChapterDetector.finish` returns: the chapters, their two files, and the raw cuts."""

    chapters: tuple[Chapter, ...]
    cuts_s: tuple[float, ...]
    vtt: OutputFile
    json: OutputFile

    @property
    def files(self) -> tuple[OutputFile, ...]:
        return (self.vtt, self.json)


def space_cuts(cuts_s: Sequence[float], end_s: float, min_spacing_s: float, *, flip_s: float = 2.0) -> list[float]:
    """Keep the cuts that start chapters at least ``min_spacing_s`` long.

    Cuts are taken in order (greedily). A cut is kept when it lies at least
    ``min_spacing_s`` after the last kept cut (or 0) and before ``end_s``, so
    every chapter, the first (from 0) and the last (to ``end_s``) included,
    lasts at least ``min_spacing_s``. A cut whose own scene is shorter than
    ``min(flip_s, min_spacing_s)`` (until the next cut) is never kept: a
    slide flipped past on the way to another joins the chapter before, and
    the chapter starts where the content settled. Cuts must be increasing.
    Pure.
    """
    flip = min(flip_s, min_spacing_s)
    kept: list[float] = []
    last = 0.0
    for index, cut in enumerate(cuts_s):
        if index and cut <= cuts_s[index - 1]:
            raise ValueError(f"cuts must be increasing: {cuts_s[index - 1]} then {cut}")
        scene_end = cuts_s[index + 1] if index + 1 < len(cuts_s) else end_s
        if cut - last >= min_spacing_s and end_s - cut >= min_spacing_s and scene_end - cut >= flip and cut > 0:
            kept.append(cut)
            last = cut
    return kept


def chapters_from_cuts(starts_s: Sequence[float], end_s: float, policy: ChapterPolicy) -> tuple[Chapter, ...]:
    """Chapters from 0 to ``end_s``, one more than the (spaced) cut times given."""
    bounds = [0.0, *starts_s, end_s]
    return tuple(
        Chapter(
            number=i + 1,
            start_s=bounds[i],
            end_s=bounds[i + 1],
            title=policy.title_format.format(number=i + 1),
        )
        for i in range(len(bounds) - 1)
    )


def render_chapters_vtt(chapters: Sequence[Chapter]) -> str:
    """A WebVTT chapters track: one cue per chapter, its title as the payload.

    Cue times are rounded to milliseconds; consecutive chapters share the
    boundary, so the cues cover the timeline without gaps or overlaps
    (WebVTT section 4.3: chapter cues must not overlap). Pure.
    """
    if not chapters:
        raise ValueError("a chapters track needs at least one chapter")
    lines = ["WEBVTT", ""]
    for chapter in chapters:
        if any(ch in chapter.title for ch in "\r\n") or "-->" in chapter.title or not chapter.title.strip():
            raise ValueError(f"a cue title must be one non-empty line without '-->': {chapter.title!r}")
        lines += [
            f"{vtt_timestamp(chapter.start_s)} --> {vtt_timestamp(chapter.end_s)}",
            chapter.title,
            "",
        ]
    return "\n".join(lines)


def render_chapters_json(chapters: Sequence[Chapter], *, language: str = "en") -> str:
    """Apple's HLS chapter JSON: an array of ``chapter``, ``start-time``, ``duration``, ``titles``.

    Times in seconds with 3 decimals (the VTT's millisecond grid). Pure.
    """
    entries = [
        {
            "chapter": chapter.number,
            "start-time": round(chapter.start_s, 3),
            "duration": round(chapter.end_s - chapter.start_s, 3),
            "titles": [{"language": language, "title": chapter.title}],
        }
        for chapter in chapters
    ]
    return json.dumps(entries, indent=2) + "\n"


def mad(luma: _I16, previous: _I16) -> float:
    """The mean absolute difference of two tiny luma pictures, in 8-bit levels."""
    return float(np.abs(luma - previous).mean())


class ChapterDetector:
    """Finds hard scene changes in frames offered in time order. One owner thread.

    Frames may be any size and pixel format (decoded source frames or a
    small rung's); only their luma is read. Memory: two tiny luma pictures,
    one (time, MAD) pair per frame of the last ``2 * window_s`` seconds, and
    the cut times.
    """

    def __init__(
        self,
        policy: ChapterPolicy | None = None,
        *,
        vtt_path: str = "chapters.vtt",
        json_path: str = "chapters.json",
    ) -> None:
        self.policy = policy or ChapterPolicy()
        self._vtt_path = vtt_path
        self._json_path = json_path
        self._scaler = VideoReformatter()
        self._previous: _I16 | None = None
        self._recent: deque[tuple[float, float]] = deque()  # (time_s, MAD) of recent frames
        self._candidates: deque[tuple[float, float]] = deque()  # frames with MAD >= min_change, undecided
        self._cuts: list[float] = []
        self.frames = 0  # frames offered
        self.scaled = 0  # frames scaled (those not flagged ``same``)

    def offer(self, frame: av.VideoFrame, time_s: Fraction | float, same: bool = False) -> None:
        """Compare ``frame`` (shown at ``time_s`` seconds) with the previous one.

        ``same``: the caller knows the frame's pictures equal the previous
        frame's byte for byte (the decoder's :class:`~transcoder.still.RepeatDetector`);
        it then counts as no change without being scaled.
        """
        self.frames += 1
        if same and self._previous is not None:
            self._record(float(time_s), 0.0)
            return
        luma = self.luma(frame)
        previous, self._previous = self._previous, luma
        if previous is not None:
            self._record(float(time_s), mad(luma, previous))

    def luma(self, frame: av.VideoFrame) -> _I16:
        """The tiny luma picture the detector compares (``policy.width`` x ``policy.height``)."""
        policy = self.policy
        small = self._scaler.reformat(
            frame,
            width=policy.width,
            height=policy.height,
            format="gray",
            interpolation=Interpolation.AREA,
            threads=1,  # a 64x36 picture: worker threads would cost more than they save
        )
        self.scaled += 1
        luma: _I16 = small.to_ndarray().astype(np.int16)
        return luma

    def record(self, time_s: float, difference: float | None) -> None:
        """Take one picture's MAD measured elsewhere (a chunked run's, merged in time order).

        None: the first picture, which has nothing before it.
        """
        self.frames += 1
        if difference is not None:
            self._record(time_s, difference)

    def _record(self, now: float, mad: float) -> None:
        policy = self.policy
        self._recent.append((now, mad))
        if mad >= policy.min_change:
            self._candidates.append((now, mad))
        # Decide every candidate whose whole window after it has been seen.
        while self._candidates and self._candidates[0][0] + policy.window_s < now:
            self._decide(self._candidates.popleft())
        # Keep what the oldest undecided candidate (or the next one) may need.
        horizon = (self._candidates[0][0] if self._candidates else now) - policy.window_s
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()

    def _decide(self, candidate: tuple[float, float]) -> None:
        time_s, mad = candidate
        window = self.policy.window_s
        neighbours = max(
            (m for t, m in self._recent if t != time_s and abs(t - time_s) <= window),
            default=0.0,
        )
        if mad >= self.policy.spike_ratio * neighbours:
            self._cuts.append(time_s)

    @property
    def cuts_s(self) -> tuple[float, ...]:
        """The cuts decided so far (a change waits ``window_s`` for the frames after it)."""
        return tuple(self._cuts)

    def finish(self, end_s: Fraction | float) -> ChapterOutput | None:
        """Decide the last changes, space the cuts and render both files. Call once.

        ``end_s`` is the end of the timeline (the last chapter ends there).
        None when no frame was offered or ``end_s`` is not positive.
        """
        while self._candidates:
            self._decide(self._candidates.popleft())
        end = float(end_s)
        if self.frames == 0 or not end > 0:
            return None
        starts = space_cuts(self._cuts, end, self.policy.min_spacing_s, flip_s=self.policy.flip_s)
        chapters = chapters_from_cuts(starts, end, self.policy)
        return ChapterOutput(
            chapters=chapters,
            cuts_s=tuple(self._cuts),
            vtt=OutputFile(self._vtt_path, render_chapters_vtt(chapters).encode()),
            json=OutputFile(self._json_path, render_chapters_json(chapters, language=self.policy.language).encode()),
        )
