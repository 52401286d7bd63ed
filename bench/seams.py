"""``python -m bench.seams SOURCE SERIAL CHUNKED``: quality at the chunk boundaries, against a serial run.

For each video rendition present in both ladders, the PSNR-Y of every segment
against the source, measured at the source's resolution: each decoded frame of
the rendition is scaled up to the source's size with one fixed filter
(swscale bicubic) and compared with the source frame shown in the same slot.
The same filter for every ladder, whoever made it: the engine's own scaler is
not the reference (a rung compared with the source scaled down by the engine
would favour the engine against a tool that scales differently).

Prints, per rendition, the segments where the chunked run starts a chunk
(where it differs from the serial run: a fresh encoder), the worst difference
there, and the bytes of both ladders.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import av
import m3u8
import numpy as np
from av.video.reformatter import VideoReformatter


def _frames(data: bytes) -> Iterator[av.VideoFrame]:
    with av.open(io.BytesIO(data), mode="r") as container:
        yield from container.decode(video=0)


def _rendition_bytes(directory: Path) -> tuple[bytes, list[int]]:
    """The rendition's segments played in order (its init segment first), and each segment's size."""
    playlist = m3u8.load(str(directory / "index.m3u8"))
    data = b""
    if playlist.segment_map:
        data += (directory / playlist.segment_map[0].uri).read_bytes()
    sizes = []
    for segment in playlist.segments:
        chunk = (directory / segment.uri).read_bytes()
        sizes.append(len(chunk))
        data += chunk
    return data, sizes


def segment_psnr(source: Path, directory: Path, *, every: int = 3) -> list[float]:
    """PSNR-Y of each segment of the rendition in ``directory`` against ``source`` (every ``every``-th frame)."""
    playlist = m3u8.load(str(directory / "index.m3u8"))
    durations = [float(segment.duration) for segment in playlist.segments]
    data, _sizes = _rendition_bytes(directory)
    reformatter = VideoReformatter()
    mse: list[list[float]] = [[] for _ in durations]
    bounds = np.cumsum(durations)
    with av.open(str(source)) as src:
        stream = src.streams.video[0]
        fps = float(stream.average_rate or 30)
        width, height = stream.codec_context.width, stream.codec_context.height
        for index, (ref, got) in enumerate(zip(src.decode(stream), _frames(data), strict=False)):
            if index % every:
                continue
            segment = min(int(np.searchsorted(bounds, (index + 0.5) / fps)), len(durations) - 1)
            want = ref.to_ndarray(format="gray").astype(np.float64)
            up = reformatter.reformat(got, width=width, height=height, format="gray", interpolation="BICUBIC")
            have = up.to_ndarray().astype(np.float64)
            mse[segment].append(float(np.mean((want - have) ** 2)))
    return [10 * math.log10(255**2 / max(1e-9, float(np.mean(values)))) if values else math.nan for values in mse]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", type=Path)
    parser.add_argument("serial", type=Path, help="the serial run's ladder directory")
    parser.add_argument("chunked", type=Path, help="the chunked run's ladder directory")
    parser.add_argument("--starts", default="", help="segments where chunks start, comma-separated (default: all)")
    parser.add_argument("--every", type=int, default=3, help="compare every n-th frame")
    args = parser.parse_args()
    starts = {int(s) for s in args.starts.split(",") if s}
    total = {"serial": 0, "chunked": 0}
    for directory in sorted(p for p in args.serial.iterdir() if (p / "iframes.m3u8").exists()):
        other = args.chunked / directory.name
        if not other.exists():
            continue
        a = segment_psnr(args.source, directory, every=args.every)
        b = segment_psnr(args.source, other, every=args.every)
        bytes_a, bytes_b = sum(_rendition_bytes(directory)[1]), sum(_rendition_bytes(other)[1])
        total["serial"] += bytes_a
        total["chunked"] += bytes_b
        seams = sorted(starts) if starts else range(len(a))
        worst = min(((b[i] - a[i]), i) for i in seams if i < len(a))
        print(
            f"{directory.name}: bytes {bytes_b / bytes_a:.4f}x serial; PSNR-Y at chunk starts "
            + ", ".join(f"seg {i}: {a[i]:.2f} -> {b[i]:.2f}" for i in seams if i < len(a))
            + f"; worst {worst[0]:+.2f} dB (segment {worst[1]})"
        )
    print(f"all video renditions: bytes {total['chunked'] / max(1, total['serial']):.4f}x serial")
    return 0


if __name__ == "__main__":
    sys.exit(main())
