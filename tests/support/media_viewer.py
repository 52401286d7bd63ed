"""Readers for the viewer outputs (thumbnails and chapters tracks) and the deck they are tested on.

* :func:`make_deck`: the slide deck of :func:`tests.support.media_slides.make_slide_deck`
  (640x360, 8 s at 10 fps, new slides at frames 14, 31, 45, 63, a cursor moving on every
  frame) with a 440 Hz stereo AAC track, so a run has an audio rendition too.
* :func:`parse_vtt`: the cues of a WebVTT file, strictly (timestamps, arrows,
  blank lines between cues), as ``(start_s, end_s, payload)``.
* :func:`parse_xywh`: an image URL with a ``#xywh=`` media fragment split
  into the URL and the rectangle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.support.media_slides import make_slide_deck

__all__ = ["CHANGE_FRAMES", "DECK_FPS", "DECK_FRAMES", "Cue", "make_deck", "parse_vtt", "parse_xywh"]

DECK_FPS = 10
DECK_FRAMES = 80
CHANGE_FRAMES = (14, 31, 45, 63)
_TIMESTAMP = r"(\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3})"
_TIMING = re.compile(rf"^{_TIMESTAMP} --> {_TIMESTAMP}$")
_XYWH = re.compile(r"^(?P<url>[^#]+)#xywh=(?P<x>\d+),(?P<y>\d+),(?P<w>\d+),(?P<h>\d+)$")


@dataclass(frozen=True, slots=True)
class Cue:
    start_s: float
    end_s: float
    payload: str


def make_deck(path: Path, *, width: int = 640, height: int = 360) -> list[Fraction]:
    """Write the deck with audio to ``path``; return the times (s) at which a new slide first shows."""
    silent = path.with_name(path.stem + "-video.mp4")
    changes = make_slide_deck(
        silent, change_frames=CHANGE_FRAMES, frames=DECK_FRAMES, fps=DECK_FPS, width=width, height=height
    )
    with av.open(str(silent)) as src, av.open(str(path), mode="w", format="mp4") as out:
        video_in = src.streams.video[0]
        video_out = out.add_stream_from_template(video_in)
        audio = out.add_stream("aac", rate=48000, layout="stereo")
        for packet in src.demux(video_in):
            if packet.dts is None:
                continue
            packet.stream = video_out
            out.mux(packet)
        samples = 48000 * DECK_FRAMES // DECK_FPS
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
        for start in range(0, samples, 1024):
            chunk = np.ascontiguousarray(np.tile(tone[start : start + 1024], (2, 1)))
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    silent.unlink()
    return changes


def _seconds(hours: str, minutes: str, seconds: str, millis: str) -> float:
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


def parse_vtt(text: str) -> list[Cue]:
    """The cues of ``text``; AssertionError for anything that is not a plain WebVTT file of cues."""
    assert text.startswith("WEBVTT"), text[:40]
    blocks = [block for block in re.split(r"\n\n+", text.strip()) if block]
    assert blocks[0].splitlines()[0] in ("WEBVTT",) or blocks[0].startswith("WEBVTT "), blocks[0]
    cues = []
    for block in blocks[1:]:
        lines = block.splitlines()
        timing = _TIMING.match(lines[0])
        assert timing is not None, f"not a cue timing line: {lines[0]!r}"
        start, end = _seconds(*timing.groups()[:4]), _seconds(*timing.groups()[4:])
        assert end > start, lines[0]
        assert len(lines) == 2 and lines[1].strip(), f"a cue needs exactly one payload line: {block!r}"
        cues.append(Cue(start, end, lines[1]))
    return cues


def parse_xywh(payload: str) -> tuple[str, tuple[int, int, int, int]]:
    """``"sheet.jpg#xywh=0,0,160,90"`` -> ``("sheet.jpg", (0, 0, 160, 90))``."""
    match = _XYWH.match(payload)
    assert match is not None, f"not an image URL with #xywh=: {payload!r}"
    return match["url"], (int(match["x"]), int(match["y"]), int(match["w"]), int(match["h"]))
