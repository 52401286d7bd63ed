"""Holding a still picture for a long time without encoding it again and again.

When the audio outlasts the video, every rung shows its last frame until the
audio ends: possibly hours. Encoding that frame once per output slot costs
about a third of a CPU-second per held second on a 1080p ladder. A closed GOP
of one still picture is the same bytes wherever it sits on the timeline, so
:func:`encode_still_gop` encodes one GOP of it with a throwaway x264 context
set up like the rung's, and the rung repeats those packets with shifted
timestamps: one GOP's packets in memory, a few GOPs of x264 work in all.

The copies are spliced into the rung's stream only if they are
interchangeable with what the rung's own encoder would write: the same
parameter sets (SPS/PPS: size, profile, level, colour tags) and the same
decode delay (B-frame reordering). :func:`encode_still_gop` returns None
otherwise, and the rung encodes every held frame itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from av.video.frame import PictureType

from .bitstream import _annexb_nals

_NAL_SPS, _NAL_PPS = 7, 8
# Codec-context settings copied from the rung's encoder: everything that ends
# up in the parameter sets or shapes the GOP.
_COPIED = (
    "width",
    "height",
    "pix_fmt",
    "bit_rate",
    "flags",
    "color_primaries",
    "color_trc",
    "colorspace",
    "color_range",
)


@dataclass(frozen=True, slots=True)
class StillPacket:
    """One encoded packet of a still GOP; times in frames from the GOP's start."""

    data: bytes
    pts: int
    dts: int
    duration: int
    keyframe: bool


@dataclass(frozen=True, slots=True)
class StillGop:
    """A closed GOP of ``frames`` copies of one picture, in decoding order."""

    frames: int
    packets: tuple[StillPacket, ...]
    parameter_sets: bytes  # SPS and PPS NAL units, for comparing with the rung's
    dts_delay: int  # pts - dts of the first packet (B-frame reordering)


def parameter_sets(data: bytes) -> bytes:
    """The SPS and PPS NAL units of Annex-B ``data``, concatenated (empty if none)."""
    return b"".join(nal for nal in _annexb_nals(data) if nal and nal[0] & 0x1F in (_NAL_SPS, _NAL_PPS))


def encode_still_gop(
    frame: av.VideoFrame, frames: int, *, like: Any, options: dict[str, str], fps: Fraction
) -> StillGop | None:
    """Encode ``frames`` copies of ``frame`` as one closed GOP, like the codec context ``like``.

    ``frame`` is already scaled to the rung's size and format; its pixels are
    only read, its pts, time base and picture type are overwritten.
    ``options`` are the rung's x264 options. Returns None if the encoder yields
    no keyframe-first GOP of ``frames`` packets.

    Memory: one more x264 context for the duration of the call, about 80 MB
    at 1080p with its lookahead (measured: a 4-rung 1080p ladder's peak RSS
    went from 463 to 631 MB during a long hold, once, not growing with it).
    """
    cc: Any = av.CodecContext.create("libx264", "w")
    for name in _COPIED:
        value = getattr(like, name, None)
        if value is not None:
            setattr(cc, name, value)
    cc.time_base = 1 / fps
    cc.framerate = fps
    cc.thread_type = "FRAME"
    cc.thread_count = 1
    cc.options = dict(options)
    packets: list[Any] = []
    for index in range(frames):
        frame.pts = index
        frame.time_base = cc.time_base
        frame.pict_type = PictureType.I if index == 0 else PictureType.NONE
        packets += cc.encode(frame)
    packets += cc.encode(None)
    still = [
        StillPacket(bytes(p), int(p.pts), int(p.dts), int(p.duration or 1), bool(p.is_keyframe))
        for p in packets
        if p.pts is not None and p.dts is not None
    ]
    if len(still) != frames or not still[0].keyframe or sorted(p.pts for p in still) != list(range(frames)):
        return None
    sets = parameter_sets(bytes(cc.extradata or b"")) + parameter_sets(still[0].data)
    return StillGop(frames=frames, packets=tuple(still), parameter_sets=sets, dts_delay=still[0].pts - still[0].dts)
