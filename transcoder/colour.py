"""The colour decision of a run: what the source is, what every rung becomes.

Pure: :func:`plan_colour` takes the probed :class:`~transcoder.models.VideoInfo`
and returns a :class:`ColourPlan`, made once per run. Every rung is BT.709,
limited ("tv") range, 8-bit 4:2:0, and says so in its VUI (and in the fMP4
``colr`` box). How a source gets there:

* BT.709 limited range (tagged, or untagged above 576 lines): nothing changes;
  frames go to the encoders as before, now tagged.
* Another SDR matrix (BT.601, FCC, SMPTE 240M; untagged SD is taken as BT.601)
  or full range (``yuvj*`` formats, ``full_range_flag=1``): the scaler that
  already runs converts the matrix and the range in the same swscale pass.
  SD primaries (SMPTE 170M / BT.470BG) are not converted to BT.709 primaries:
  the difference is small and it is what players and the ffmpeg CLI do.
* RGB pixel formats (QuickTime RLE, PNG, 4:4:4 RGB): the scaler converts
  with the BT.709 matrix (swscale's default would be BT.601).
* HLG or PQ (BT.2020, Display P3 or BT.709 primaries; others are read as
  BT.2020), or SDR BT.2020 / P3: a 3D LUT computed once per run
  (:mod:`transcoder.tonemap`) maps the source R'G'B' to SDR BT.709 R'G'B' in
  the decoder's filter graph; the scaler then sees BT.709 limited frames.
* The poster (JPEG: BT.601 full range) is converted from the same source
  values.

The names are FFmpeg's (``av_color_space_name`` and friends) so they read the
same as ``ffprobe``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from .models import VideoInfo

# libavutil/pixfmt.h: enum values are ABI, stable across FFmpeg versions.
MATRIX_NAMES = {
    0: "gbr",
    1: "bt709",
    2: "unknown",
    4: "fcc",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "ycgco",
    9: "bt2020nc",
    10: "bt2020c",
    11: "smpte2085",
    12: "chroma-derived-nc",
    13: "chroma-derived-c",
    14: "ictcp",
}
PRIMARIES_NAMES = {
    1: "bt709",
    2: "unknown",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "film",
    9: "bt2020",
    10: "smpte428",
    11: "smpte431",
    12: "smpte432",
    22: "ebu3213",
}
TRANSFER_NAMES = {
    1: "bt709",
    2: "unknown",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    9: "log100",
    10: "log316",
    11: "iec61966-2-4",
    12: "bt1361e",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    17: "smpte428",
    18: "arib-std-b67",
}
RANGE_NAMES = {0: "unknown", 1: "tv", 2: "pc"}

# What every rung is tagged with: AVCOL_PRI_BT709, AVCOL_TRC_BT709,
# AVCOL_SPC_BT709, AVCOL_RANGE_MPEG.
OUTPUT_PRIMARIES = 1
OUTPUT_TRANSFER = 1
OUTPUT_MATRIX = 1
OUTPUT_RANGE = 1
OUTPUT_DESCRIPTION = "bt709/bt709/bt709 tv"

# HDR10 masters are most often graded on 1000 cd/m2 displays, and HLG's
# nominal display peak is 1000 cd/m2: the peak when the stream does not say.
DEFAULT_PEAK_NITS = 1000.0

# Untagged video: BT.601 up to 576 lines (SD), BT.709 above (what players assume).
SD_MAX_LINES = 576

# Matrices swscale can convert from, with the name its Colorspace enum uses.
_SWS_MATRICES = {
    "bt709": "ITU709",
    "bt470bg": "ITU601",
    "smpte170m": "ITU601",
    "fcc": "FCC",
    "smpte240m": "SMPTE240M",
    "bt2020nc": "BT2020",
    "bt2020c": "BT2020",
}
# The same matrices as the scale filter's in_color_matrix names them.
_FILTER_MATRICES = {
    "bt709": "bt709",
    "bt470bg": "bt470",
    "smpte170m": "smpte170m",
    "fcc": "fcc",
    "smpte240m": "smpte240m",
    "bt2020nc": "bt2020",
    "bt2020c": "bt2020",
}
_HLG = "arib-std-b67"
_PQ = "smpte2084"
_SDR_TRANSFERS = {"bt709", "smpte170m", "bt470bg", "bt470m", "bt2020-10", "bt2020-12", "bt1361e", "iec61966-2-1"}
# Primaries the tone-map LUT can convert from (chromaticities in tonemap.py).
LUT_PRIMARIES = ("bt709", "bt2020", "smpte432")

_RGB_FORMATS = ("rgb", "bgr", "gbr", "argb", "abgr", "0rgb", "0bgr", "x2rgb", "x2bgr", "pal8")

ToneMap = Literal["none", "hlg", "pq", "gamut"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalerColour:
    """The colour conversion a scaler applies, in PyAV reformatter terms.

    ``src_colorspace`` is a :class:`av.video.reformatter.Colorspace` name and
    ``src_color_range`` a :class:`~av.video.reformatter.ColorRange` name; the
    destination is always BT.709, MPEG (limited) range.
    """

    src_colorspace: str
    src_color_range: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ColourPlan:
    """How the source's colour is read and turned into the rungs' BT.709 limited range.

    ``matrix``, ``primaries``, ``transfer`` and ``range`` are the source's
    values as read, with untagged ones replaced by the assumed defaults;
    ``assumed`` names the ones that were assumed. ``tone_map`` says which LUT
    the decoder graph applies ("none": no LUT).
    """

    matrix: str
    primaries: str
    transfer: str
    range: str  # "tv" or "pc"
    assumed: tuple[str, ...]
    tone_map: ToneMap
    peak_nits: float  # the source peak the tone map assumes (HDR only)
    rgb: bool = False  # an RGB pixel format (PNG, QuickTime RLE, 4:4:4 RGB): no source matrix

    @property
    def full_range(self) -> bool:
        return self.range == "pc"

    @property
    def scaler(self) -> ScalerColour | None:
        """What the scalers of rungs fed by the decoder convert; None: nothing (BT.709 limited).

        After a tone map the decoder graph already delivers BT.709 limited frames.
        """
        if self.tone_map != "none":
            return None
        if self.rgb:
            # swscale's default RGB -> YUV matrix is BT.601: ask for BT.709.
            return ScalerColour(src_colorspace="ITU709", src_color_range="JPEG")
        if self.matrix == "bt709" and not self.full_range:
            return None
        return ScalerColour(
            src_colorspace=_SWS_MATRICES.get(self.matrix, "ITU709"),
            src_color_range="JPEG" if self.full_range else "MPEG",
        )

    @property
    def filter_matrix(self) -> str:
        """The source matrix as the ``scale`` filter's ``in_color_matrix`` names it."""
        return _FILTER_MATRICES.get(self.matrix, "bt709")

    def describe(self) -> str:
        """One line for ``transcode --plan``: source as read/assumed -> output, and the tone map."""
        source = f"{self.matrix}/{self.primaries}/{self.transfer} {self.range}"
        if self.assumed:
            source += f" (assumed: {', '.join(self.assumed)})"
        if self.tone_map in ("hlg", "pq"):
            how = (
                f"tone map {self.tone_map.upper()} -> SDR (3D LUT in the decoder graph, BT.2390 EETF, "
                f"source peak {self.peak_nits:g} cd/m2, reference white 203 cd/m2 -> SDR white, "
                f"gamut {self.primaries} -> bt709)"
            )
        elif self.tone_map == "gamut":
            how = f"gamut {self.primaries} -> bt709 (3D LUT in the decoder graph, no tone map)"
        elif self.scaler is None:
            how = "no conversion, tagged"
        elif self.rgb:
            how = "RGB -> bt709 limited-range YUV (in the scaler), no tone map"
        else:
            parts = []
            if self.matrix != "bt709":
                parts.append(f"matrix {self.matrix} -> bt709")
            if self.full_range:
                parts.append("range pc -> tv")
            how = ", ".join(parts) + " (in the scaler), no tone map"
        return f"colour: {source} -> {OUTPUT_DESCRIPTION}: {how}"


def plan_colour(
    *,
    matrix: str,
    primaries: str,
    transfer: str,
    range: str,
    pix_fmt: str,
    height: int,
    peak_nits: float = DEFAULT_PEAK_NITS,
) -> ColourPlan:
    """Decide the colour handling from the source's tags (FFmpeg names) and picture.

    Untagged or unusable values are assumed: the matrix and primaries from the
    height (BT.601 up to 576 lines, BT.709 above), the transfer BT.709 (or the
    SD one), the range full for ``yuvj*`` formats and limited otherwise.
    ``height`` is the coded (decoded) height, before rotation.
    """
    assumed: list[str] = []
    rgb = pix_fmt.startswith(_RGB_FORMATS)
    sd = height <= SD_MAX_LINES and not rgb  # RGB video is screen content: sRGB/BT.709 primaries
    if rgb:
        matrix, range = "gbr", "pc"  # RGB has no matrix and is full range
    elif matrix not in _SWS_MATRICES:
        # Untagged, or a matrix swscale cannot convert (YCgCo, ICtCp): use the
        # conventional default for the picture size.
        matrix = "smpte170m" if sd else "bt709"
        assumed.append("matrix")
    if range not in ("tv", "pc"):
        range = "pc" if pix_fmt.startswith("yuvj") else "tv"
        assumed.append("range")
    elif pix_fmt.startswith("yuvj"):
        range = "pc"  # the yuvj formats are full range whatever the tag says
    if primaries == "unknown" or primaries not in PRIMARIES_NAMES.values():
        primaries = "bt2020" if matrix in ("bt2020nc", "bt2020c") else ("smpte170m" if sd else "bt709")
        assumed.append("primaries")
    if transfer == "unknown" or transfer not in TRANSFER_NAMES.values():
        transfer = "smpte170m" if sd and primaries != "bt2020" else "bt709"
        assumed.append("transfer")
    tone_map: ToneMap = "none"
    lut_primaries = primaries if primaries in LUT_PRIMARIES else "bt2020"
    if transfer == _HLG:
        tone_map = "hlg"
    elif transfer == _PQ:
        tone_map = "pq"
    elif primaries in ("bt2020", "smpte432") and transfer in _SDR_TRANSFERS:
        tone_map = "gamut"
    if tone_map != "none" and primaries != lut_primaries:
        # HDR with primaries the LUT does not know: BT.2020 is what HDR means.
        primaries = lut_primaries
        assumed.append("primaries")
    return ColourPlan(
        matrix=matrix,
        primaries=primaries,
        transfer=transfer,
        range=range,
        assumed=tuple(assumed),
        tone_map=tone_map,
        # HLG is scene-referred: its OOTF is defined for a nominal 1000 cd/m2
        # display whatever the content; PQ carries absolute light levels.
        peak_nits=peak_nits if tone_map == "pq" else (DEFAULT_PEAK_NITS if tone_map == "hlg" else 0.0),
        rgb=rgb,
    )


def hdr_peak_nits(*, content_light: bytes | None, mastering: bytes | None) -> float | None:
    """The content's peak light level from HDR10 side data, in cd/m2 (None: not given).

    ``content_light`` is an ``AVContentLightMetadata`` (MaxCLL, MaxFALL as
    native unsigned ints); ``mastering`` an ``AVMasteringDisplayMetadata``
    (ten rationals, then has_primaries and has_luminance). MaxCLL, the
    brightest pixel of the content, is preferred to the mastering display's
    peak, which the content may never reach. Values outside 100-10000 cd/m2
    are ignored as nonsense.
    """
    if content_light is not None and len(content_light) >= 4:
        (max_cll,) = struct.unpack_from("=I", content_light)
        if 100 <= max_cll <= 10000:
            return float(max_cll)
    if mastering is not None and len(mastering) >= 88:
        num, den = struct.unpack_from("=ii", mastering, 72)
        (has_luminance,) = struct.unpack_from("=i", mastering, 84)
        if has_luminance and den > 0 and 100 <= num / den <= 10000:
            return float(num / den)
    return None


def colour_of(video: VideoInfo) -> ColourPlan:
    """:func:`plan_colour` for a probed video stream."""
    return plan_colour(
        matrix=video.colour_matrix,
        primaries=video.colour_primaries,
        transfer=video.colour_transfer,
        range=video.colour_range,
        pix_fmt=video.pix_fmt,
        height=video.coded_height,
        peak_nits=video.hdr_peak_nits or DEFAULT_PEAK_NITS,
    )


__all__ = [
    "MATRIX_NAMES",
    "OUTPUT_MATRIX",
    "OUTPUT_PRIMARIES",
    "OUTPUT_RANGE",
    "OUTPUT_TRANSFER",
    "PRIMARIES_NAMES",
    "RANGE_NAMES",
    "TRANSFER_NAMES",
    "ColourPlan",
    "ScalerColour",
    "colour_of",
    "hdr_peak_nits",
    "plan_colour",
]
