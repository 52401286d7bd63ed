"""The poster image: a representative frame, chosen while decoding, as JPEG.

Candidates are taken at a few fixed points of the video (never the first
frame, which is often black or a fade-in); each is scored by its luma contrast
and rejected when nearly black, white or flat. Costs one downscale per
candidate, nothing per ordinary frame beyond a comparison.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
from av.video.reformatter import Interpolation

from .colour import ScalerColour

_CANDIDATE_POINTS = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75)
_MIN_MEAN, _MAX_MEAN, _MIN_STD = 16.0, 240.0, 6.0


class PosterPicker:
    """Keeps the best candidate frame; :meth:`jpeg` encodes it.

    ``width``/``height`` is the poster size (the display aspect of the video).
    """

    def __init__(self, duration_s: float, width: int, height: int, *, colour: ScalerColour | None = None) -> None:
        self.width = width
        self.height = height
        # JPEG is BT.601 full range: convert from the source's matrix and range
        # (``colour``; None: BT.709 limited), or HD posters shift colour.
        src = colour or ScalerColour(src_colorspace="ITU709", src_color_range="MPEG")
        self._colour_args: dict[str, Any] = {
            "src_colorspace": src.src_colorspace,
            "src_color_range": src.src_color_range,
            "dst_colorspace": "ITU601",
            "dst_color_range": "JPEG",
        }
        span = Fraction(duration_s).limit_denominator(1000)
        # A candidate is the first frame at or after each point.
        self.points = tuple(Fraction(p) * span for p in _CANDIDATE_POINTS)
        self._points = list(self.points)
        self._best: tuple[float, av.VideoFrame] | None = None
        self._fallback: av.VideoFrame | None = None

    def candidate(self, frame: av.VideoFrame) -> av.VideoFrame:
        """``frame`` at the poster's size, in JPEG's colour: what is scored and encoded."""
        return frame.reformat(
            width=self.width,
            height=self.height,
            format="yuvj420p",
            interpolation=Interpolation.BICUBIC,
            **self._colour_args,
        )

    def offer(self, frame: av.VideoFrame, time_s: Fraction) -> None:
        """Look at ``frame`` (shown at ``time_s``); frames come in time order."""
        if self._fallback is None or (self._points and time_s >= self._points[0]):
            candidate = self.candidate(frame)
            if self._fallback is None:
                self._fallback = candidate
                if not self._points or time_s < self._points[0]:
                    return
            while self._points and time_s >= self._points[0]:
                self._points.pop(0)
            score = poster_score(candidate)
            if score is not None and (self._best is None or score > self._best[0]):
                self._best = (score, candidate)

    def adopt(self, best: tuple[float, av.VideoFrame] | None, fallback: av.VideoFrame | None) -> None:
        """Take the choice made elsewhere (a chunked run's merged candidates) in place of :meth:`offer`'s."""
        self._best, self._fallback, self._points = best, fallback, []

    def jpeg(self) -> bytes | None:
        """The chosen frame as JPEG bytes (None if no frame was seen)."""
        frame = self._best[1] if self._best else self._fallback
        if frame is None:
            return None
        codec = av.CodecContext.create("mjpeg", "w")
        codec.width = frame.width
        codec.height = frame.height
        codec.pix_fmt = "yuvj420p"
        codec.time_base = Fraction(1, 25)
        # Fixed quantiser 3 (FF_QP2LAMBDA = 118): near-lossless, a few tens of kB.
        codec.qscale = True
        codec.global_quality = 3 * 118
        frame.pts = 0
        packets = codec.encode(frame) + codec.encode(None)
        return b"".join(bytes(p) for p in packets)


def poster_score(frame: av.VideoFrame) -> float | None:
    """A candidate's score (its luma contrast), or None when it is nearly black, white or flat."""
    luma = frame.to_ndarray()[: frame.height]  # planar 4:2:0: luma rows come first
    mean = float(luma.mean())
    std = float(luma.std())
    if not _MIN_MEAN <= mean <= _MAX_MEAN or std < _MIN_STD:
        return None
    return std
