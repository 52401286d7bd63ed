"""bench.quality's SSIM against the bundled FFmpeg's own ssim filter, on the same pictures."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import av.filter
import numpy as np
import pytest

from bench.quality import ssim

U8 = np.ndarray[Any, np.dtype[np.uint8]]


def _frame(luma: U8) -> av.VideoFrame:
    chroma = np.full(luma.size // 2, 128, dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(np.concatenate([luma.reshape(-1), chroma]).reshape(-1, luma.shape[1]), "yuv420p")
    frame.pts, frame.time_base = 0, Fraction(1, 25)
    return frame


def ffmpeg_ssim_y(a: U8, b: U8) -> float:
    """What libavfilter's ssim filter reports for the luma planes (frame metadata ``lavfi.ssim.Y``)."""
    height, width = a.shape
    graph = av.filter.Graph()
    main, ref = (
        graph.add_buffer(width=width, height=height, format=av.VideoFormat("yuv420p"), time_base=Fraction(1, 25))
        for _ in range(2)
    )
    measure, sink = graph.add("ssim"), graph.add("buffersink")
    main.link_to(measure, 0, 0)
    ref.link_to(measure, 0, 1)
    measure.link_to(sink)
    graph.configure()
    main.push(_frame(a))
    ref.push(_frame(b))
    return float(graph.pull().metadata["lavfi.ssim.Y"])


@pytest.mark.parametrize(("noise", "width", "height"), [(0, 320, 180), (3, 320, 180), (12, 318, 178), (40, 64, 48)])
def test_ssim_is_ffmpegs(noise: int, width: int, height: int) -> None:
    rng = np.random.default_rng(noise)
    ramp = np.cumsum(rng.integers(0, 256, (height, width)), axis=1) / width  # texture with edges and flats
    a = np.clip(ramp * 4, 0, 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-noise, noise + 1, a.shape), 0, 255).astype(np.uint8)
    want = ffmpeg_ssim_y(a, b)
    assert ssim(a, b) == pytest.approx(want, abs=1e-6)  # the filter prints 6 decimals
    assert (want == 1.0) == (noise == 0)
