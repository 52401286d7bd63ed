"""Bytes, x264 settings, Y-PSNR and Y-SSIM per rung, the same way for every variant.

* Reference: the source frame (after the engine's filters before scaling) scaled to the rung
  with the engine's scaler (swscale bicubic to yuv420p), or the frame itself at the source size.
* Test: the rung decoded through its media playlist (``<out>/<rung>/index.m3u8``). Output
  frame ``n`` of a rung at ``fps_r`` shows source frame ``ceil(n * fps_src / fps_r - 1/2)``
  (nearest in time, ties to the earlier: the engine's rule).
* A second figure does not favour the engine's scaler: each sampled test frame scaled *up* to the
  source's size (swscale bicubic, the same fixed filter for every variant) against the source
  frame itself, ``psnr_y_src_db``, the usual practice for ladders. The report shows both while
  they disagree. SSIM is measured the same way, at the source's size (``ssim_y_src``: FFmpeg's
  ssim filter's formula, 8x8 windows every 4 pixels, averaged over the sampled frames; the
  bundled FFmpeg has no libvmaf).
* Every ``every``-th output frame, the same for every variant (7 is coprime to GOPs of 48, 50
  and 60 frames, so picture types are sampled in proportion); PSNR from the global MSE of the
  sampled frames, as FFmpeg's psnr filter's "average". Every output is decoded in lockstep with
  one decode of the source, so memory stays at a few frames.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.filter
import numpy as np
import numpy.typing as npt
from av.video.reformatter import Interpolation, VideoReformatter

from .variants import Plan, Rung

__all__ = [
    "DEFAULT_EVERY",
    "filter_graph",
    "measure_psnr",
    "playlist_bytes",
    "source_index",
    "ssim",
    "x264_settings",
]

DEFAULT_EVERY = 7


def playlist_files(playlist: Path) -> list[Path]:
    """The media files a media playlist lists (MPEG-TS segments: every variant here writes TS)."""
    return [playlist.parent / line for line in playlist.read_text().splitlines() if line and not line.startswith("#")]


def playlist_bytes(playlist: Path) -> int:
    return sum(f.stat().st_size for f in playlist_files(playlist)) if playlist.exists() else 0


def x264_settings(playlist: Path) -> str | None:
    """x264's settings string (its SEI: "x264 - core N ... options: ...") from the first segment."""
    files = playlist_files(playlist) if playlist.exists() else []
    if not files:
        return None
    with av.open(str(files[0])) as container:
        for packet in container.demux(video=0):
            data = bytes(packet)
            if (start := data.find(b"x264 - core ")) >= 0:
                end = data.find(b"\x00", start)
                return data[start : end if end > 0 else len(data)].decode("ascii", "replace")
    return None


def source_index(n: int, source_fps: Fraction, rung_fps: Fraction) -> int:
    """The source frame that output frame ``n`` of a ``rung_fps`` rung shows."""
    return n if source_fps == rung_fps else math.ceil(Fraction(n) * source_fps / rung_fps - Fraction(1, 2))


def filter_graph(stream: Any, filters: tuple[str, ...], threads: int | None = None) -> av.filter.Graph | None:
    """``buffer -> filters -> buffersink`` for ``stream``, configured; None without filters."""
    if not filters:
        return None
    graph = av.filter.Graph()
    if threads is not None:
        graph.threads = threads
    node = graph.add_buffer(template=stream)
    for spec in filters:
        name, _, args = spec.partition("=")
        nxt = graph.add(name, args or None)
        node.link_to(nxt)
        node = nxt
    node.link_to(graph.add("buffersink"))
    graph.configure()
    return graph


def filtered(frames: Iterator[av.VideoFrame], graph: av.filter.Graph | None) -> Iterator[av.VideoFrame]:
    """``frames`` through ``graph`` (flushed at the end)."""
    if graph is None:
        yield from frames
        return
    for frame in itertools.chain(frames, [None]):
        graph.vpush(frame)
        while True:
            try:
                yield graph.vpull()
            except (av.BlockingIOError, av.EOFError):
                break


def luma(frame: av.VideoFrame, rung: Rung, reformatter: VideoReformatter) -> npt.NDArray[np.uint8]:
    if (frame.width, frame.height, frame.format.name) != (rung.width, rung.height, "yuv420p"):
        frame = reformatter.reformat(
            frame,
            width=rung.width,
            height=rung.height,
            format="yuv420p",
            interpolation=Interpolation.BICUBIC,
            threads=1,
        )
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(frame.height, plane.line_size)
    return rows[:, : frame.width]


def _psnr(sse: float, pixels: int) -> float:
    mse = sse / pixels if pixels else math.nan
    return math.nan if math.isnan(mse) else 100.0 if mse < 1e-10 else 10 * math.log10(255**2 / mse)


def _sse(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    diff = a.astype(np.int32) - b
    return float(np.einsum("ij,ij->", diff, diff, dtype=np.int64))


# FFmpeg's ssim filter (libavfilter/vf_ssim.c, ssim_end1): its constants for sums over 8x8 windows of 8-bit samples.
_SSIM_C1 = round(0.01 * 0.01 * 255 * 255 * 64)
_SSIM_C2 = round(0.03 * 0.03 * 255 * 255 * 64 * 63)


def ssim(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    """SSIM of two planes as FFmpeg's ssim filter computes it: 8x8 windows every 4 pixels, averaged.

    Sums over 4x4 blocks, then over 2x2 neighbouring blocks (the filter's ``ssim_4x4xn`` and
    ``ssim_end1``); edge pixels that do not fill a block are left out, as there.
    """
    h, w = (min(a.shape[0], b.shape[0]) // 4) * 4, (min(a.shape[1], b.shape[1]) // 4) * 4
    x, y = a[:h, :w].astype(np.int64), b[:h, :w].astype(np.int64)

    def blocks(plane: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        sums: npt.NDArray[np.int64] = plane.reshape(h // 4, 4, w // 4, 4).sum(axis=(1, 3))
        return sums[:-1, :-1] + sums[1:, :-1] + sums[:-1, 1:] + sums[1:, 1:]

    s1, s2, ss, s12 = blocks(x), blocks(y), blocks(x * x + y * y), blocks(x * y)
    variance = ss * 64 - s1 * s1 - s2 * s2
    covariance = s12 * 64 - s1 * s2
    num = (2 * s1 * s2 + _SSIM_C1).astype(np.float64) * (2 * covariance + _SSIM_C2)
    den = (s1 * s1 + s2 * s2 + _SSIM_C1).astype(np.float64) * (variance + _SSIM_C2)
    return float((num / den).mean())


def measure_psnr(plan: Plan, outputs: dict[str, Path], every: int = DEFAULT_EVERY) -> dict[str, dict[str, Any]]:
    """``{variant: {rung: {psnr_y_db, psnr_y_src_db, ssim_y_src, frames, sampled, missing}}}`` per rung."""
    zero = {"sse": 0.0, "pixels": 0, "sse_src": 0.0, "pixels_src": 0, "ssim_src": 0.0}
    zero |= {"frames": 0, "sampled": 0, "missing": 0}
    stats = {v: {r.name: dict(zero) for r in plan.rungs} for v in outputs}
    opened: list[Any] = []
    decoders: dict[tuple[str, str], Iterator[av.VideoFrame]] = {}
    for v, out in outputs.items():
        for r in plan.rungs:
            playlist = out / r.name / "index.m3u8"
            if playlist.exists():
                opened.append(av.open(str(playlist)))
                opened[-1].streams.video[0].thread_type = "AUTO"
                decoders[(v, r.name)] = opened[-1].decode(video=0)
    scalers = {r.name: VideoReformatter() for r in plan.rungs}
    upscaler = VideoReformatter()
    next_n = {r.name: 0 for r in plan.rungs}
    try:
        with av.open(str(plan.source)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            frames = filtered(container.decode(stream), filter_graph(stream, plan.filters))
            for s_index, frame in enumerate(frames):
                native = replace(plan.rungs[0], width=frame.width, height=frame.height)
                source_luma: npt.NDArray[np.uint8] | None = None
                for rung in plan.rungs:
                    while source_index(next_n[rung.name], plan.fps, rung.fps) == s_index:
                        n, ref = next_n[rung.name], luma(frame, rung, scalers[rung.name])
                        for v in outputs:
                            st = stats[v][rung.name]
                            test, decoder = None, decoders.get((v, rung.name))
                            while decoder is not None and st["frames"] <= n:
                                if (test := next(decoder, None)) is None:
                                    break
                                st["frames"] += 1
                            if test is None or st["frames"] != n + 1:
                                st["missing"] += 1
                                continue
                            st["sse"] += _sse(luma(test, rung, scalers[rung.name]), ref)
                            st["pixels"] += ref.size
                            if source_luma is None:
                                source_luma = luma(frame, native, upscaler).copy()
                            upscaled = luma(test, native, upscaler)
                            st["sse_src"] += _sse(upscaled, source_luma)
                            st["ssim_src"] += ssim(upscaled, source_luma)
                            st["pixels_src"] += source_luma.size
                            st["sampled"] += 1
                        next_n[rung.name] = n + every
        for (v, name), frames_left in decoders.items():
            stats[v][name]["frames"] += sum(1 for _ in frames_left)
    finally:
        for container in opened:
            container.close()
    for per_rung in stats.values():
        for st in per_rung.values():
            st["psnr_y_db"] = _psnr(st.pop("sse"), int(st.pop("pixels")))
            st["psnr_y_src_db"] = _psnr(st.pop("sse_src"), int(st.pop("pixels_src")))
            st["ssim_y_src"] = st.pop("ssim_src") / st["sampled"] if st["sampled"] else math.nan
    return stats
