"""Reading a published ladder back the way a player does: a rendition's segments in playlist order."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import m3u8


def played_frames(out: Path, rendition: str) -> list[tuple[Fraction, bool]]:
    """(presentation time, keyframe) of every frame of ``rendition``, its init segment and segments played in order."""
    playlist = m3u8.load(str(out / rendition / "index.m3u8"))
    data = b""
    if playlist.segment_map:
        data += (out / rendition / playlist.segment_map[0].uri).read_bytes()
    data += b"".join((out / rendition / segment.uri).read_bytes() for segment in playlist.segments)
    with av.open(io.BytesIO(data), mode="r") as container:
        return sorted(
            (Fraction(f.pts) * Fraction(f.time_base), f.key_frame)
            for f in container.decode(video=0)
            if f.pts is not None and f.time_base
        )


__all__ = ["played_frames"]
