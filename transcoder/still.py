"""Spotting decoded frames that repeat the previous one (slides, screen recordings).

A slide stays on screen for minutes; a screen recorder stores it as skipped
blocks, so its decoded pictures are byte-identical frame after frame. Every
rung would still rescale the same picture at the full frame rate. The decoder
thread flags such a frame (:class:`RepeatDetector`) and each rung reuses the
frame it scaled last (:class:`~transcoder.encode.RungEncoder`); x264 then
takes its skip path on its own.

Cost (measured, 1920x1080 yuv420p, numpy): a full comparison of two equal
frames ~0.16 ms, against 8-10 ms to decode one. Every 16th row is compared
first, then bands of rows, stopping at the first difference: frames that
differ cost a small fraction of that (see bench/NOTES.md for the numbers).

A still *source* (the index gate of :mod:`transcoder.prediction` says its
inter frames carry almost no bits) is also encoded with
:data:`STILL_X264_PARAMS`, and the thread plan gives its rungs one x264
thread each when they fill the budget (:mod:`transcoder.threadplan`).
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np

# 8-bit planar formats whose visible bytes per row are the plane's width: only
# those bytes are compared (the padding after them may hold anything). Other
# formats compare whole buffers, padding included, which can only miss a
# repeat, never invent one.
_PLANAR_8BIT = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p", "gray"}
)
_BANDS = 8  # the luma plane is compared in this many bands, stopping at the first difference
_SPARSE_ROWS = 16  # the rows compared first

_Plane = np.ndarray[Any, np.dtype[np.uint8]]

# x264 parameters added to every rung of a still source, and only there:
# camera and other moving content keeps the preset's settings, byte for byte.
# On a still source nearly every macroblock of an inter frame is skipped, yet
# x264 still decides B-frame patterns in its lookahead (bframes) and builds
# half-pel planes of every reference frame for sub-pixel motion search
# (subme > 0), whose only motion here is a pointer or a scroll in whole
# pixels. Measured on the bench's 20 s 1080p30 screen recording, veryfast,
# one thread, the same decoded frames (bench/NOTES.md, "Still sources"):
# x264 CPU 1080p -40%, 720p -35%, 480p -42%, 360p -34%; PSNR-Y +0.13, -0.04,
# +0.16, +0.04 dB; bytes +11%, +5%, +4%, +4%. (bframes=0 alone: -15-20% CPU,
# +1% bytes; deblocking off gained 0.7 dB at 1080p but lost 0.2 dB at 720p.)
STILL_X264_PARAMS = "bframes=0:subme=0"


def _planes(frame: av.VideoFrame) -> list[_Plane]:
    visible = frame.format.name in _PLANAR_8BIT
    out = []
    for plane in frame.planes:
        data: _Plane = np.frombuffer(memoryview(plane), dtype=np.uint8)
        if visible:
            data = data[: plane.line_size * plane.height].reshape(plane.height, plane.line_size)[:, : plane.width]
        out.append(data)
    return out


def _key(frame: av.VideoFrame) -> tuple[Any, ...]:
    # Everything besides the pixels that the scaler reads: equal pixels under
    # another size, format or colour description are not the same picture.
    return (frame.width, frame.height, frame.format.name, frame.color_range, frame.colorspace)


class RepeatDetector:
    """Tells whether each frame equals the one before it, byte for byte. One owner thread.

    Keeps a reference to the previous frame (one decoded frame of memory);
    never modifies a frame.
    """

    def __init__(self) -> None:
        self._previous: av.VideoFrame | None = None
        self._previous_key: tuple[Any, ...] | None = None
        self.repeats = 0  # frames found equal to their predecessor

    def same_as_previous(self, frame: av.VideoFrame) -> bool:
        """True if ``frame``'s pictures equal the previous frame's (the first frame: False)."""
        previous, previous_key = self._previous, self._previous_key
        key = _key(frame)
        self._previous, self._previous_key = frame, key
        if previous is None or key != previous_key:
            return False
        same = _equal(_planes(previous), _planes(frame))
        self.repeats += same
        return same


def _equal(a: list[_Plane], b: list[_Plane]) -> bool:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        return False
    luma_a, luma_b = a[0], b[0]
    # Every 16th row first: a change anywhere taller than that (a pointer,
    # a new bullet, re-coded text edges) shows there at 1/16 of the cost.
    if not np.array_equal(luma_a[::_SPARSE_ROWS], luma_b[::_SPARSE_ROWS]):
        return False
    step = max(1, -(-len(luma_a) // _BANDS))
    for start in range(0, len(luma_a), step):
        if not np.array_equal(luma_a[start : start + step], luma_b[start : start + step]):
            return False
    return all(np.array_equal(x, y) for x, y in zip(a[1:], b[1:], strict=True))
