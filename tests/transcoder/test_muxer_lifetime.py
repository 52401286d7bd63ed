"""A finished run leaves no muxer (and no libx264 context) for Python's cyclic GC.

Each rendition's muxer used to form a reference cycle with its segmenter
(through the muxer's ``io_open`` callback), so the muxers and the rungs'
libx264 contexts of a run were freed by the cyclic GC at some moment of a
*later* run, in whatever thread set the collection off; the later run's
output then differed in a few bytes now and then (bench/NOTES.md). Now they
go by reference count when the run drops them.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from pathlib import Path

import av.container

from transcoder import LadderPolicy, RungSpec, TranscodeConfig, transcode
from transcoder.segmenter import HlsSegmenter

ClipFactory = Callable[..., Path]


def _alive(kind: type) -> int:
    return sum(isinstance(o, kind) for o in gc.get_objects())


def test_muxers_and_segmenters_are_freed_without_the_cyclic_gc(clip: ClipFactory, tmp_path: Path) -> None:
    source = clip(seconds=1.0, width=320, height=180)
    config = TranscodeConfig(
        ladder=LadderPolicy(
            rungs=(RungSpec(short_side=180, bitrate_kbps=400), RungSpec(short_side=90, bitrate_kbps=200))
        ),
        segment_s=1.0,
        gop_s=1.0,
        threads=2,
    )
    gc.collect()
    before = (_alive(av.container.OutputContainer), _alive(HlsSegmenter))
    gc.disable()
    try:
        result = transcode(source, tmp_path / "out", config=config)
        after = (_alive(av.container.OutputContainer), _alive(HlsSegmenter))
    finally:
        gc.enable()
    assert [r.name for r in result.renditions] == ["180p", "90p", "audio"]  # three muxers were made
    assert after == before
