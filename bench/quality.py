"""Bytes and Y-PSNR per rung, against the source scaled to the rung's size.

Method (the same for every variant, so their numbers compare):

* The reference for a rung is the source frame (after the engine's own
  deinterlace/rotation filters, if any) scaled to the rung's size with the
  engine's scaler: swscale bicubic to yuv420p (``VideoReformatter``), or the
  frame itself for a rung of the source's size.
* The test frame is the rung's output decoded through its media playlist
  (``<out>/<rung>/index.m3u8``, FFmpeg's hls demuxer), in output order.
  Output frame ``n`` of a rung at ``fps_r`` shows source frame
  ``ceil(n * fps_src / fps_r - 1/2)`` (nearest in time, ties to the earlier:
  the engine's ``CfrSlots`` rule); for a rung at the source's rate that is
  frame ``n``.
* Every ``every``-th output frame is compared (``n = 0, every, 2*every ...``),
  the same frames for every variant. The default 7 is coprime to the usual
  GOP lengths (48, 50, 60 frames), so picture types are sampled in proportion.
* PSNR is over luma only, 8-bit, from the **global** MSE of all sampled frames:
  ``10 log10(255^2 / mean(MSE))``, as FFmpeg's psnr filter reports its
  "average". (A mean of per-frame PSNRs would weigh easy frames more.)

All variants are decoded in lockstep with one decode of the source, so memory
stays at a few frames whatever the length.

Bytes per rung: the sum of the files its media playlist lists (and its init
segment for fMP4); audio is its own rendition, counted separately.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.filter
import numpy as np
import numpy.typing as npt
from av.video.reformatter import Interpolation, VideoReformatter
from av.video.stream import VideoStream

from .ffmpeg_cli import LadderSettings, RungPlan
from .stages import pre_filter_graph

__all__ = [
    "DEFAULT_EVERY",
    "RungQuality",
    "measure_quality",
    "playlist_bytes",
    "source_index",
    "x264_settings",
]

DEFAULT_EVERY = 7
_MAP = re.compile(r'#EXT-X-MAP:.*URI="([^"]+)"')
_X264_TAG = b"x264 - core "


@dataclass(slots=True)
class RungQuality:
    """Luma PSNR of one rung of one variant."""

    frames: int = 0  # frames decoded from the rung's output
    sampled: int = 0  # frames compared
    sse: float = 0.0  # sum of squared luma errors over the compared frames
    pixels: int = 0  # luma samples compared
    missing: int = 0  # sampled frames the output did not have

    @property
    def mse(self) -> float:
        return self.sse / self.pixels if self.pixels else math.nan

    @property
    def psnr_y_db(self) -> float:
        mse = self.mse
        if math.isnan(mse):
            return math.nan
        return 100.0 if mse <= 1e-10 else 10 * math.log10(255.0**2 / mse)

    def as_dict(self) -> dict[str, Any]:
        return {
            "psnr_y_db": round(self.psnr_y_db, 4),
            "mse_y": round(self.mse, 5),
            "frames": self.frames,
            "sampled": self.sampled,
            "missing": self.missing,
        }


def playlist_files(playlist: Path) -> list[Path]:
    """The media files a media playlist lists (init segment first)."""
    files: list[Path] = []
    for line in playlist.read_text().splitlines():
        line = line.strip()
        if match := _MAP.match(line):
            files.append(playlist.parent / match.group(1))
        elif line and not line.startswith("#"):
            files.append(playlist.parent / line)
    return files


def playlist_bytes(playlist: Path) -> int:
    """Bytes of the files ``playlist`` lists."""
    return sum(f.stat().st_size for f in playlist_files(playlist))


def x264_settings(playlist: Path) -> str | None:
    """x264's settings string (its SEI: "x264 - core N ... options: ...") from the first segment."""
    files = playlist_files(playlist)
    if not files:
        return None
    with av.open(str(files[0])) as container:
        for packet in container.demux(video=0):
            data = bytes(packet)
            start = data.find(_X264_TAG)
            if start < 0:
                continue
            end = data.find(b"\x00", start)
            text = data[start : end if end > 0 else len(data)]
            return text.decode("ascii", "replace")
    return None


def source_index(n: int, source_fps: Fraction, rung_fps: Fraction) -> int:
    """The source frame that output frame ``n`` of a ``rung_fps`` rung shows."""
    if source_fps == rung_fps:
        return n
    return math.ceil(Fraction(n) * source_fps / rung_fps - Fraction(1, 2))


def _luma(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    plane = frame.planes[0]
    rows: npt.NDArray[np.uint8] = np.frombuffer(memoryview(plane), dtype=np.uint8)
    return rows.reshape(frame.height, plane.line_size)[:, : frame.width]


def _sse(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    diff = a.astype(np.int32) - b.astype(np.int32)
    return float(np.einsum("ij,ij->", diff, diff, dtype=np.int64))


class _Output:
    """The decoded frames of one rung of one variant, taken in order."""

    def __init__(self, playlist: Path, quality: RungQuality) -> None:
        self.quality = quality
        self.container: Any = av.open(str(playlist)) if playlist.exists() else None
        self._frames: Iterator[av.VideoFrame] = iter(())
        if self.container is not None:
            stream = self.container.streams.video[0]
            stream.thread_type = "AUTO"
            self._frames = self.container.decode(stream)
        self.index = -1

    def frame(self, n: int) -> av.VideoFrame | None:
        """Output frame ``n`` (frames before it are decoded and dropped)."""
        current: av.VideoFrame | None = None
        while self.index < n:
            current = next(self._frames, None)
            if current is None:
                return None
            self.index += 1
            self.quality.frames += 1
        return current

    def drain(self) -> None:
        for _ in self._frames:
            self.quality.frames += 1
        if self.container is not None:
            self.container.close()


class _Reference:
    """Scales a source frame to a rung's size, the engine's way."""

    def __init__(self, rung: RungPlan) -> None:
        self.rung = rung
        self.reformatter = VideoReformatter()

    def luma(self, frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
        if (frame.width, frame.height, frame.format.name) != (self.rung.width, self.rung.height, "yuv420p"):
            frame = self.reformatter.reformat(
                frame,
                width=self.rung.width,
                height=self.rung.height,
                format="yuv420p",
                interpolation=Interpolation.BICUBIC,
                threads=1,
            )
        return _luma(frame)


def _source_frames(settings: LadderSettings) -> Iterator[av.VideoFrame]:
    with av.open(str(settings.source)) as container:
        stream = container.streams[settings.info.video.index]
        assert isinstance(stream, VideoStream)
        stream.thread_type = "AUTO"
        graph = pre_filter_graph(stream, settings.pre_filters)
        for frame in container.decode(stream):
            assert isinstance(frame, av.VideoFrame)
            if graph is None:
                yield frame
                continue
            graph.vpush(frame)
            yield from _drain(graph)
        if graph is not None:
            graph.vpush(None)
            yield from _drain(graph)


def _drain(graph: av.filter.Graph) -> Iterator[av.VideoFrame]:
    while True:
        try:
            yield graph.vpull()
        except (av.BlockingIOError, av.EOFError):
            return


def measure_quality(
    settings: LadderSettings, outputs: dict[str, Path], *, every: int = DEFAULT_EVERY
) -> dict[str, dict[str, RungQuality]]:
    """Y-PSNR of every rung of every variant (``outputs``: variant -> output directory).

    Returns ``{variant: {rung: RungQuality}}``. A rung whose playlist is
    missing gets no frames (NaN PSNR) rather than an exception.
    """
    if every < 1:
        raise ValueError("every must be >= 1")
    results = {v: {r.name: RungQuality() for r in settings.rungs} for v in outputs}
    src_fps = Fraction(settings.info.video.fps)
    decoders = {
        (v, r.name): _Output(out / r.name / "index.m3u8", results[v][r.name])
        for v, out in outputs.items()
        for r in settings.rungs
    }
    refs = {r.name: _Reference(r) for r in settings.rungs}
    # Per rung: the next sampled output frame and the source frame it shows.
    next_n = {r.name: 0 for r in settings.rungs}
    try:
        for s_index, frame in enumerate(_source_frames(settings)):
            for rung in settings.rungs:
                while source_index(next_n[rung.name], src_fps, rung.fps) == s_index:
                    n = next_n[rung.name]
                    ref = refs[rung.name].luma(frame)
                    for variant in outputs:
                        quality = results[variant][rung.name]
                        out = decoders[(variant, rung.name)].frame(n)
                        if out is None:
                            quality.missing += 1
                            continue
                        if (out.width, out.height) != (rung.width, rung.height):
                            raise ValueError(
                                f"{variant} {rung.name}: output is {out.width}x{out.height}, "
                                f"expected {rung.width}x{rung.height}"
                            )
                        quality.sse += _sse(_luma(out), ref)
                        quality.pixels += ref.size
                        quality.sampled += 1
                    next_n[rung.name] = n + every
    finally:
        for decoder in decoders.values():
            decoder.drain()
    return results
