"""Per-rung scaling: one reused swscale context per rung, explicit filter.

``VideoFrame.reformat`` builds a new scaler context on every call and defaults
to bilinear; a reused :class:`~av.video.reformatter.VideoReformatter` with an
explicit interpolation costs less CPU and matches what was asked for. Each
rung owns its scaler (one owner thread), with one swscale thread: the rungs
already scale in parallel with each other.

The scaler is also where SDR colour is converted (:class:`ScalerColour`, from
the run's colour plan): a BT.601 matrix or full-range source becomes BT.709
limited range in the same swscale pass that scales it, never in a pass of its
own. BT.709 limited sources take exactly the path they took before.
"""

from __future__ import annotations

from typing import Any

import av
from av.video.reformatter import Interpolation, VideoReformatter

from .colour import ScalerColour

_INTERPOLATIONS = {
    "fast_bilinear": Interpolation.FAST_BILINEAR,
    "bilinear": Interpolation.BILINEAR,
    "bicubic": Interpolation.BICUBIC,
    "area": Interpolation.AREA,
    "lanczos": Interpolation.LANCZOS,
}
OUTPUT_PIX_FMT = "yuv420p"  # 8-bit 4:2:0: what every H.264 High profile player decodes


class Scaler:
    """Turns decoded frames into ``width`` x ``height`` yuv420p BT.709 limited-range frames.

    ``colour`` is how the input frames differ from BT.709 limited range (None:
    they do not). It is decided once per run from the probe, not per frame:
    swscale's defaults would read an untagged frame as BT.601 and an
    unspecified range as limited, so the source's values are passed
    explicitly. :meth:`scale` returns the input frame itself when there is
    nothing to do (output size and format, no colour conversion; no copy):
    callers must treat the result as shared.
    """

    def __init__(
        self, width: int, height: int, *, interpolation: str = "bicubic", colour: ScalerColour | None = None
    ) -> None:
        self.width = width
        self.height = height
        self.colour = colour
        self._interpolation = _INTERPOLATIONS[interpolation]
        self._reformatter = VideoReformatter()
        self._colour_args: dict[str, Any] = {}
        if colour is not None and colour.src_colorspace != "ITU709":
            # A matrix conversion goes through RGB inside swscale; without
            # accurate rounding it costs ~4.5 dB RGB PSNR (40.3 vs 45.0 dB on
            # a BT.601 SD test picture). 1080p: 3 -> 9 ms a frame, SD: a
            # fraction of that; range-only conversions gain nothing from it.
            self._interpolation |= Interpolation.ACCURATE_RND
        if colour is not None:
            self._colour_args = {
                "src_colorspace": colour.src_colorspace,
                "src_color_range": colour.src_color_range,
                "dst_colorspace": "ITU709",
                "dst_color_range": "MPEG",
            }

    def needs_work(self, frame: av.VideoFrame) -> bool:
        if self.colour is not None:
            return True
        return (frame.width, frame.height, frame.format.name) != (self.width, self.height, OUTPUT_PIX_FMT)

    def scale(self, frame: av.VideoFrame) -> av.VideoFrame:
        if not self.needs_work(frame):
            return frame
        return self._reformatter.reformat(
            frame,
            width=self.width,
            height=self.height,
            format=OUTPUT_PIX_FMT,
            interpolation=self._interpolation,
            threads=1,
            **self._colour_args,
        )
