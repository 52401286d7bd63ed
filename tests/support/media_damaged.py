"""Sources that fail part-way through decoding, for tests of what a failed run leaves behind."""

from __future__ import annotations

from pathlib import Path

from tests.support.media import mp4_top_level_boxes


def make_zeroed_tail(path: Path, source: Path, *, from_fraction: float) -> Path:
    """``source`` (an mp4 with its ``moov`` after the ``mdat``) with the media data zeroed from ``from_fraction`` on.

    The index survives, so the probe accepts the file and decoding starts;
    every packet past the cut decodes with an error, and the decoder gives up
    (``InputError``, "input is corrupt") a few dozen packets later: the
    failure comes mid-decode, after the rungs have encoded the frames before it.
    """
    if not 0.0 < from_fraction < 1.0:
        raise ValueError("from_fraction must be within (0, 1)")
    data = bytearray(source.read_bytes())
    mdat = next(box for box in mp4_top_level_boxes(source) if box.kind == "mdat")
    header = 16 if int.from_bytes(data[mdat.offset : mdat.offset + 4], "big") == 1 else 8
    start = mdat.offset + header + int((mdat.size - header) * from_fraction)
    end = mdat.offset + mdat.size
    data[start:end] = bytes(end - start)
    path.write_bytes(bytes(data))
    return path
