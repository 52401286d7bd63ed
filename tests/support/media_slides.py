"""Tiny clips for the chapter and storyboard tests, made with PyAV.

* :func:`make_slide_deck`: slides of one template (title band, rows of
  word-like ink, :func:`tests.support.media_screen.slide_picture` with a different
  seed each) that change at known frames, with a cursor that moves on every
  frame and optional film grain (fresh on every frame, as a camera filming a
  projector gives).
* :func:`make_pan`: a camera pan over a textured scene with hard edges,
  still at first, then moving abruptly at a constant speed; every frame of
  the pan differs from its neighbours.

Both are H.264 (CRF 18) in MP4 at 10 fps, so a frame's time is exactly
``index / fps``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from tests.support.media_screen import slide_picture

__all__ = ["make_pan", "make_slide_deck", "pan_scene"]

U8 = np.ndarray[Any, np.dtype[np.uint8]]
_CURSOR = 12


def _write(path: Path, frames: Iterator[U8], *, width: int, height: int, fps: int, keyint: int | None = None) -> Path:
    options = {"crf": "18", "preset": "veryfast"}
    if keyint is not None:  # a keyframe every ``keyint`` frames exactly (and none elsewhere)
        options["x264-params"] = f"keyint={keyint}:min-keyint={keyint}:scenecut=0"
    with av.open(str(path), mode="w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps, options=options)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, fps)
        for index, data in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(data, format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def _pack(y: U8, u: U8, v: U8) -> U8:
    return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(-1, y.shape[1])


def make_slide_deck(
    path: Path,
    *,
    change_frames: Sequence[int] = (14, 31, 45, 63),
    frames: int = 80,
    width: int = 320,
    height: int = 180,
    fps: int = 10,
    grain: float = 0.0,
    cursor: bool = True,
    keyint: int | None = None,
) -> list[Fraction]:
    """Write the deck to ``path``; return the times (s) at which a new slide first shows.

    Slide ``k`` (seed ``k``) is on screen from ``change_frames[k - 1]`` (0 for
    the first). The cursor steps 3 px right (and 1 px down) on every frame;
    ``grain`` is the standard deviation of Gaussian luma noise, in levels.
    ``keyint``: a keyframe every that many frames (None: x264's default GOP).
    """
    slides = [slide_picture(width, height, seed=k) for k in range(len(change_frames) + 1)]
    rng = np.random.default_rng(7)

    def pictures() -> Iterator[U8]:
        for index in range(frames):
            slide = sum(index >= c for c in change_frames)
            y, u, v = (p.copy() for p in slides[slide])
            if grain:
                noisy = y.astype(np.float32) + np.asarray(rng.normal(0.0, grain, y.shape), dtype=np.float32)
                y = np.clip(noisy, 16, 235).astype(np.uint8)
            if cursor:
                x0 = (width // 5 + 3 * index) % (width - 2 * _CURSOR)
                y0 = (height // 3 + index) % (height - 2 * _CURSOR)
                for row in range(_CURSOR):  # a solid arrow-ish triangle
                    y[y0 + row, x0 : x0 + row // 2 + 1] = 16
            yield _pack(y, u, v)

    _write(path, pictures(), width=width, height=height, fps=fps, keyint=keyint)
    return [Fraction(c, fps) for c in change_frames]


def pan_scene(width: int, height: int, *, seed: int = 3) -> U8:
    """A luma scene ``width`` x ``height``: smooth texture plus dark and bright blocks (hard edges)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = np.full((height, width), 120.0, dtype=np.float32)
    for _ in range(6):  # smooth texture: random plane waves
        fx, fy = rng.uniform(-0.08, 0.08, 2)
        scene += 18 * np.sin(fx * xx + fy * yy + rng.uniform(0, 6.3))
    for _ in range(width // 20):  # "buildings" and "windows": hard edges a pan drags along
        x, y = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        w, h = int(rng.integers(6, 30)), int(rng.integers(6, 40))
        scene[y : y + h, x : x + w] = rng.choice([30.0, 220.0])
    return np.clip(scene, 16, 235).astype(np.uint8)


def make_pan(
    path: Path,
    *,
    frames: int = 50,
    still_frames: int = 10,
    speed_px: int = 6,
    width: int = 320,
    height: int = 180,
    fps: int = 10,
    grain: float = 0.0,
) -> Path:
    """Write a pan to ``path``: still for ``still_frames``, then ``speed_px`` px right per frame.

    The view is a ``width`` x ``height`` window on a wider :func:`pan_scene`;
    chroma is neutral. ``grain`` as in :func:`make_slide_deck`.
    """
    travel = speed_px * max(0, frames - still_frames)
    scene = pan_scene(width + travel + 2, height)
    rng = np.random.default_rng(11)
    grey = np.full((height // 2, width // 2), 128, dtype=np.uint8)

    def pictures() -> Iterator[U8]:
        for index in range(frames):
            x = speed_px * max(0, index - still_frames)
            y = scene[:, x : x + width].copy()
            if grain:
                noisy = y.astype(np.float32) + np.asarray(rng.normal(0.0, grain, y.shape), dtype=np.float32)
                y = np.clip(noisy, 16, 235).astype(np.uint8)
            yield _pack(y, grey, grey)

    return _write(path, pictures(), width=width, height=height, fps=fps)
