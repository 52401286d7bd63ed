"""Tiny screen recordings for the ladder-pruning and frame-reuse tests, made with PyAV.

A "screen recording" is a slide (a title band and rows of pseudo-text on a
light page) that stays still, plus a cursor that moves only during
``cursor_moves_s`` (start, end) seconds. The frames outside that span are
exact copies of each other, as a screen recorder makes them; x264 codes them
as skipped blocks, so their decoded pictures are byte-identical too (checked
by the tests that depend on it).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

__all__ = ["make_screen_recording", "slide_picture"]

U8 = np.ndarray[Any, np.dtype[np.uint8]]
_PAGE, _INK, _BAND = (235, 128, 128), (40, 128, 128), (70, 150, 110)  # YUV (limited range)
_CURSOR = 16  # cursor size in pixels


def slide_picture(width: int, height: int, *, seed: int = 0) -> tuple[U8, U8, U8]:
    """Y, U, V planes (4:2:0) of a slide: title band, rows of word-like ink blocks."""
    rng = np.random.default_rng(seed)
    y = np.full((height, width), _PAGE[0], dtype=np.uint8)
    u = np.full((height // 2, width // 2), _PAGE[1], dtype=np.uint8)
    v = np.full((height // 2, width // 2), _PAGE[2], dtype=np.uint8)
    band = height // 8 // 2 * 2
    y[:band], u[: band // 2], v[: band // 2] = _BAND
    row_h = max(4, height // 24 // 2 * 2)
    top = band + row_h
    while top + row_h <= height - row_h:
        x = width // 12
        right = int(width * rng.uniform(0.5, 0.92))
        while x < right:
            word = int(rng.integers(row_h, 4 * row_h))
            y[top : top + row_h - 2, x : min(x + word, right)] = _INK[0]
            x += word + row_h // 2
        top += 2 * row_h
    return y, u, v


def _with_cursor(planes: tuple[U8, U8, U8], x: int, y0: int) -> U8:
    y, u, v = (p.copy() for p in planes)
    for row in range(_CURSOR):  # a solid arrow-ish triangle
        y[y0 + row, x : x + row // 2 + 1] = 16
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(-1, y.shape[1])


def make_screen_recording(
    path: Path,
    *,
    width: int = 640,
    height: int = 360,
    fps: int = 10,
    seconds: float = 3.0,
    cursor_moves_s: tuple[float, float] = (1.0, 1.5),
    cursor_every: int = 1,
    audio: bool = True,
) -> Path:
    """Write a still slide with a briefly moving cursor to ``path`` (MP4, H.264 + AAC).

    While it moves, the cursor steps on every ``cursor_every``-th frame only.
    """
    planes = slide_picture(width, height)
    frames = round(seconds * fps)
    with av.open(str(path), mode="w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, fps)
        astream = out.add_stream("aac", rate=48000, layout="stereo") if audio else None
        x, cy = width // 3, height // 2
        for i in range(frames):
            t = i / fps
            if cursor_moves_s[0] <= t < cursor_moves_s[1] and i % cursor_every == 0:
                x += 6
            frame = av.VideoFrame.from_ndarray(_with_cursor(planes, x, cy), format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if astream is not None:
            rate, samples = 48000, 1024
            for k in range(round(seconds * rate / samples)):
                n = np.arange(k * samples, (k + 1) * samples)
                tone = (0.2 * np.sin(2 * np.pi * 440 * n / rate)).astype(np.float32)
                aframe = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
                aframe.sample_rate, aframe.pts, aframe.time_base = rate, k * samples, Fraction(1, rate)
                out.mux(astream.encode(aframe))
            out.mux(astream.encode(None))
    return path
