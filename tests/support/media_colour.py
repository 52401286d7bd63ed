"""Test media for colour: SDR clips with a chosen matrix and range, HLG/PQ patterns.

Every clip shows :func:`sdr_picture`: a smooth, saturated hue sweep with a
brightness ramp and flat patches, moving slightly from frame to frame. The
pictures are made as 8-bit BT.709 R'G'B' (what an SDR master holds) and turned
into the clip's YUV by swscale (SDR) or by numpy (HLG/PQ, see
:func:`hdr_signal`), so a test knows the picture the clip stands for.

``matrix`` names are PyAV's reformatter Colorspace names ("ITU709", "ITU601",
"BT2020"); the stream tags are set on the encoder, which writes them into the
bitstream (H.264/HEVC VUI, JPEG's full range via the yuvj formats).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
import numpy.typing as npt
from av.video.reformatter import Colorspace, VideoReformatter

from transcoder import tonemap

U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]

# libavutil enum values for the tags (AVColorPrimaries, AVColorTransferCharacteristic, AVColorSpace).
_PRIMARIES = {"ITU709": 1, "ITU601": 6, "BT2020": 9}
_TRANSFER = {"ITU709": 1, "ITU601": 6, "hlg": 18, "pq": 16}
_MATRIX = {"ITU709": 1, "ITU601": 6, "BT2020": 9}
UNSPECIFIED = 2


def sdr_picture(width: int, height: int, index: int = 0) -> U8:
    """An 8-bit BT.709 R'G'B' picture (height, width, 3): hues across, saturation and brightness down.

    Smooth on purpose: the RGB PSNR of a good transcode is then limited by
    colour handling, not by the encoder's losses on noise.
    """
    x = (np.arange(width) / width + index * 0.01) % 1.0
    y = np.arange(height) / max(1, height - 1)
    hue = np.broadcast_to(x[None, :], (height, width))
    sat = np.broadcast_to(0.35 + 0.6 * (1 - y)[:, None], (height, width))
    val = np.broadcast_to(0.25 + 0.7 * y[:, None] ** 0.7, (height, width))
    rgb = _hsv_to_rgb(hue, sat, val)
    # Flat patches: grey, a deep blue and a skin tone.
    h3, w5 = height // 3, width // 5
    rgb[h3 : 2 * h3, w5 : 2 * w5] = (0.5, 0.5, 0.5)
    rgb[h3 : 2 * h3, 2 * w5 : 3 * w5] = (0.1, 0.15, 0.6)
    rgb[h3 : 2 * h3, 3 * w5 : 4 * w5] = (0.85, 0.65, 0.5)
    return np.round(rgb * 255).astype(np.uint8)


def _hsv_to_rgb(h: F64, s: F64, v: F64) -> F64:
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros((*h.shape, 3))
    for k, (r, g, b) in enumerate(choices):
        mask = i == k
        out[mask] = np.stack([r[mask], g[mask], b[mask]], axis=-1)
    return out


def saturation_and_brightness(rgb: U8) -> tuple[float, float]:
    """Mean HSV saturation and mean BT.709 luma (R'G'B' weights) of an 8-bit picture, both in [0, 1]."""
    a = rgb.astype(np.float64) / 255
    top, low = a.max(axis=-1), a.min(axis=-1)
    sat = np.where(top > 0, (top - low) / np.maximum(top, 1e-9), 0.0)
    luma = a @ np.array([0.2126, 0.7152, 0.0722])
    return float(sat.mean()), float(luma.mean())


def rgb_psnr(a: U8, b: U8) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def to_rgb(frame: av.VideoFrame, *, matrix: str | None = None, full_range: bool | None = None) -> U8:
    """``frame`` as 8-bit R'G'B', read with its own tags unless ``matrix``/``full_range`` override them.

    swscale reads an unspecified range as limited; an untagged matrix as BT.601.
    """
    src_range = frame.color_range if full_range is None else (2 if full_range else 1)
    rgb = VideoReformatter().reformat(
        frame,
        format="rgb24",
        src_colorspace=None if matrix is None else Colorspace[matrix],
        src_color_range=src_range,
        interpolation="BICUBIC",
    )
    return cast(U8, rgb.to_ndarray())


def _encoder(out: Any, codec: str, *, width: int, height: int, fps: int, pix_fmt: str) -> Any:
    stream = out.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.codec_context.time_base = Fraction(1, fps)
    if codec == "libx264":
        stream.codec_context.options = {"preset": "ultrafast", "crf": "12"}
    elif codec == "libx265":
        # No B-frames: with reordering, x265 dates the first packets from a delay it measures
        # over its first few frames, and a clip shorter than that gets uninitialised DTS values
        # (seen: -7334736719239538234), which the MP4 muxer refuses now and then ("not yet
        # implemented"). Without reordering DTS equals PTS. One thread keeps the bytes stable.
        params = "log-level=error:bframes=0:frame-threads=1:pools=none"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "14", "x265-params": params}
    elif codec == "mjpeg":
        stream.codec_context.options = {"q:v": "2"}
        stream.codec_context.qmin = stream.codec_context.qmax = 2
    return stream


def _tag(stream: Any, *, primaries: int, transfer: int, matrix: int, full_range: bool) -> None:
    cc = stream.codec_context
    cc.color_primaries, cc.color_trc, cc.colorspace = primaries, transfer, matrix
    cc.color_range = 2 if full_range else 1


def _write(out: Any, stream: Any, frames: list[av.VideoFrame]) -> None:
    for i, frame in enumerate(frames):
        frame.pts = i
        frame.time_base = stream.codec_context.time_base
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def make_sdr_clip(
    path: Path,
    *,
    width: int,
    height: int,
    matrix: str,
    full_range: bool = False,
    tagged: bool = True,
    codec: str = "libx264",
    frames: int = 10,
    fps: int = 10,
) -> Path:
    """An SDR clip of :func:`sdr_picture` in ``matrix`` YUV, limited or full range.

    ``full_range`` with ``codec="mjpeg"`` gives a webcam-like yuvj420p MJPEG;
    with libx264 a yuv420p stream whose VUI says ``full_range_flag=1``.
    ``codec="qtrle"`` gives an RGB screen-recording-like clip (``matrix`` is unused).
    ``tagged=False`` leaves matrix, primaries and transfer unspecified (the
    range is still said, as JPEG always does).
    """
    pix_fmt = {"mjpeg": "yuvj420p", "qtrle": "rgb24", "libx264rgb": "rgb24"}.get(codec, "yuv420p")
    reformatter = VideoReformatter()
    with av.open(str(path), "w") as out:
        stream = _encoder(out, codec, width=width, height=height, fps=fps, pix_fmt=pix_fmt)
        if tagged:
            _tag(
                stream,
                primaries=_PRIMARIES[matrix],
                transfer=_TRANSFER[matrix],
                matrix=_MATRIX[matrix],
                full_range=full_range,
            )
        else:
            _tag(stream, primaries=UNSPECIFIED, transfer=UNSPECIFIED, matrix=UNSPECIFIED, full_range=full_range)
        pictures = []
        for i in range(frames):
            rgb = av.VideoFrame.from_ndarray(sdr_picture(width, height, i), format="rgb24")
            pictures.append(
                reformatter.reformat(
                    rgb,
                    format=pix_fmt,
                    dst_colorspace=Colorspace[matrix],
                    dst_color_range="JPEG" if full_range else "MPEG",
                    interpolation="BICUBIC",
                )
            )
        _write(out, stream, pictures)
    return path


def hdr_signal(rgb: U8, transfer: str) -> F64:
    """BT.2020 R'G'B' in [0, 1] (HLG or PQ) showing the SDR picture ``rgb`` as an HDR grade would.

    SDR R'G'B' -> display light with the BT.1886 EOTF (gamma 2.4), SDR white
    at 203 cd/m2 (BT.2408's HDR reference white) -> BT.709 to BT.2020
    primaries -> PQ: the ST 2084 inverse EOTF; HLG: the inverse of the
    BT.2100 OOTF for a 1000 cd/m2 display, then the HLG OETF.
    """
    light = (rgb.astype(np.float64) / 255) ** 2.4 * tonemap.REFERENCE_WHITE_NITS
    light = light @ tonemap.primaries_matrix("bt709", "bt2020").T
    light = np.clip(light, 0.0, None)
    if transfer == "pq":
        return tonemap.pq_inverse_eotf(light)
    display = light / tonemap.HLG_DISPLAY_PEAK_NITS
    yd = np.maximum(display @ tonemap.luminance_weights("bt2020"), 1e-12)[..., None]
    scene = display * yd ** ((1 - tonemap.HLG_GAMMA) / tonemap.HLG_GAMMA)
    return tonemap.hlg_oetf(scene)


# A 1000 cd/m2 P3-D65 mastering display, in x265's units (0.00002 xy, 0.0001 cd/m2).
MASTER_DISPLAY_1000 = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"


def make_hdr_clip(
    path: Path,
    *,
    transfer: str,
    width: int = 320,
    height: int = 180,
    codec: str = "libx265",
    frames: int = 10,
    max_cll: int | None = None,
    master_display: str | None = None,
) -> Path:
    """A 10-bit BT.2020 HLG or PQ clip (yuv420p10le, tagged) of :func:`sdr_picture`.

    HEVC like an iPhone's HLG, or H.264 High 10 with ``codec="libx264"``.
    ``max_cll`` (cd/m2) and ``master_display`` (x265 syntax) add HDR10 SEI
    (libx265 only); decoded frames carry them as side data.
    """
    reformatter = VideoReformatter()
    fps = 10
    with av.open(str(path), "w") as out:
        stream = _encoder(out, codec, width=width, height=height, fps=fps, pix_fmt="yuv420p10le")
        if codec == "libx265" and (max_cll or master_display):
            extra = ":hdr10=1"
            extra += f":max-cll={max_cll},{max_cll // 10}" if max_cll else ""
            extra += f":master-display={master_display}" if master_display else ""
            options = dict(stream.codec_context.options)
            options["x265-params"] += extra
            stream.codec_context.options = options
        _tag(stream, primaries=9, transfer=_TRANSFER[transfer], matrix=9, full_range=False)
        pictures = []
        for i in range(frames):
            signal = hdr_signal(sdr_picture(width, height, i), transfer)
            rgb48 = av.VideoFrame.from_ndarray(np.round(signal * 65535).astype(np.uint16), format="rgb48le")
            pictures.append(
                reformatter.reformat(
                    rgb48,
                    format="yuv420p10le",
                    dst_colorspace=Colorspace.BT2020,
                    dst_color_range="MPEG",
                    interpolation="BICUBIC",
                )
            )
        _write(out, stream, pictures)
    return path


__all__ = [
    "MASTER_DISPLAY_1000",
    "hdr_signal",
    "make_hdr_clip",
    "make_sdr_clip",
    "rgb_psnr",
    "saturation_and_brightness",
    "sdr_picture",
    "to_rgb",
]
