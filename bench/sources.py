"""Synthetic source clips for ``make demo`` and the benchmark suite.

A clip is made to look natural-ish and to be as hard to encode as real
lecture footage, not a flat test pattern:

* an aerial "landscape" (multi-octave smooth noise, colour-mapped and
  hill-shaded), computed once at twice the frame size and seen through a
  window that pans and slowly zooms;
* soft-edged objects moving at different speeds, one a spinning wheel;
* film grain (~2 px grains), different on every frame;
* a lecture-slide panel (pseudo-text, bar charts, code) that changes every
  few seconds and reveals its bullets one by one, composited last so it
  stays crisp and grain-free like a screen capture;
* stereo 48 kHz audio: a different chord per channel under a speech-like
  envelope, plus a little noise.

Two lecture kinds (``kind``) replace the landscape with the slides themselves:

* ``screen``: a screen recording, the slide deck filling the frame (a new
  slide every few seconds, bullets revealed one by one) and a pointer that
  moves for about a second per slide and rests otherwise: most frames repeat
  the previous one exactly;
* ``inset``: the same with a small talking-head window in a corner (the
  natural scene, grain and motion included, at a fifth of the frame size).

Frames are drawn directly in YUV 4:2:0 (BT.709, limited range) with numpy
slicing, so generating a clip costs little more than its x264 encode.

    python -m bench.sources sample/demo.mp4 --seconds 10
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.video.stream import VideoStream

from transcoder.config import X264_PRESETS

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]
RGB = tuple[float, float, float]

AUDIO_RATE: Final = 48_000
AUDIO_BITRATE: Final = 192_000
AAC_FRAME_SAMPLES: Final = 1024
SLIDE_SECONDS: Final = 5.0
BULLET_SECONDS: Final = 0.8
GRAIN_BANK: Final = 8  # grain fields, each cropped at a random offset per frame
CHROMA_GRAIN: Final = 0.3  # chroma grain std-dev relative to luma
GRAIN_PAD: Final = 32
GRAIN_SMOOTHING: Final = 2  # passes of a [1 2 1] blur over the white grain noise

KINDS: Final = ("scene", "screen", "inset")
POINTER_MOVES: Final = (1.6, 2.6)  # seconds into each slide while the pointer moves
INSET_SCALE: Final = 0.2  # the talking head's share of the frame's width and height

# Seeds of the independent random streams, so changing one part of the clip
# (say the audio) leaves the others identical for the same ``seed``.
_RNG_LANDSCAPE, _RNG_MOTION, _RNG_SLIDES, _RNG_GRAIN, _RNG_AUDIO = range(5)


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleSpec:
    """What to generate. ``grain`` is the std-dev of the luma noise in 8-bit code values."""

    width: int = 1920
    height: int = 1080
    fps: int = 30
    seconds: float = 10.0
    grain: float = 6.0
    seed: int = 0
    crf: int = 16  # a high-quality source: the ladder is what we measure
    # On this grainy content superfast gives the same size and PSNR as veryfast
    # for half the CPU (measured at 1080p, grain 6: 43 Mb/s, 39.8 dB both).
    preset: str = "superfast"
    audio: bool = True
    kind: str = "scene"  # "scene", or a lecture: "screen" or "inset" (see the module docstring)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.width < 128 or self.height < 96 or self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even and at least 128x96, got {self.width}x{self.height}")
        if not 1 <= self.fps <= 240:
            raise ValueError(f"fps must be in 1..240, got {self.fps}")
        if not 0 < self.seconds <= 3600 or round(self.seconds * self.fps) < 1:
            raise ValueError(f"seconds must give at least one frame and be at most 3600, got {self.seconds}")
        if not 0 <= self.grain <= 40:
            raise ValueError(f"grain must be in 0..40, got {self.grain}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"preset must be one of {', '.join(X264_PRESETS)}, got {self.preset!r}")

    @property
    def frame_count(self) -> int:
        return round(self.seconds * self.fps)

    @property
    def sample_count(self) -> int:
        """Audio samples per channel: exactly as long as the video."""
        return self.frame_count * AUDIO_RATE // self.fps


# --- colour ----------------------------------------------------------------


def _rgb_to_yuv(rgb: F32) -> tuple[F32, F32, F32]:
    """BT.709 limited range, on float arrays of 0..255 RGB (last axis)."""
    r, g, b = (rgb[..., k] / np.float32(255) for k in range(3))
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return (
        (16 + 219 * y).astype(np.float32),
        (128 + 224 * (b - y) / 1.8556).astype(np.float32),
        (128 + 224 * (r - y) / 1.5748).astype(np.float32),
    )


def _yuv_of(color: RGB) -> tuple[float, float, float]:
    y, u, v = _rgb_to_yuv(np.array(color, dtype=np.float32))
    return float(y), float(u), float(v)


def _to_u8(a: F32) -> U8:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _half(a: F32) -> F32:
    """2x2 box down-sampling (luma grid -> 4:2:0 chroma grid)."""
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    q = a[:h, :w]
    return ((q[0::2, 0::2] + q[1::2, 0::2] + q[0::2, 1::2] + q[1::2, 1::2]) * np.float32(0.25)).astype(np.float32)


def _yuv420_buffer(width: int, height: int) -> tuple[U8, U8, U8, U8]:
    """A packed yuv420p array, shape (height * 3 / 2, width), and views of its Y, U and V planes.

    Also fit for ``VideoFrame.from_numpy_buffer`` (no copy) when height is a multiple
    of 4: one spare row lies past the end, as SIMD code may read a little beyond the
    last pixel.
    """
    n, q = width * height, width * height // 4
    raw = np.empty(n + 2 * q + width, dtype=np.uint8)
    packed = raw[: n + 2 * q].reshape(height * 3 // 2, width)
    y = raw[:n].reshape(height, width)
    u = raw[n : n + q].reshape(height // 2, width // 2)
    v = raw[n + q : n + 2 * q].reshape(height // 2, width // 2)
    return packed, y, u, v


def _even(x: float) -> int:
    return round(x / 2) * 2


@dataclass(frozen=True, slots=True)
class _Planes:
    y: U8
    u: U8
    v: U8


def _planes_from_rgb(rgb: F32) -> _Planes:
    y, u, v = _rgb_to_yuv(rgb)
    return _Planes(_to_u8(y), _to_u8(_half(u)), _to_u8(_half(v)))


# --- landscape -------------------------------------------------------------


def _upscale(a: F32, width: int, height: int) -> F32:
    """Bicubic resize through swscale; only used for ~2x steps (huge ratios leave seams)."""
    lo, hi = float(a.min()), float(a.max())
    scale = (hi - lo) / 0.8 or 1.0
    unit = np.ascontiguousarray((a - np.float32(lo)) / np.float32(scale) + np.float32(0.1), dtype=np.float32)
    frame = av.VideoFrame.from_ndarray(unit, format="grayf32le")
    big = frame.reformat(width=width, height=height, interpolation="BICUBIC").to_ndarray()
    return ((big.astype(np.float32) - np.float32(0.1)) * np.float32(scale) + np.float32(lo)).astype(np.float32)


def _fractal_noise(rng: np.random.Generator, height: int, width: int) -> F32:
    """1/f-like smooth noise: octaves from ~2 cells per height down to 4 px, summed up a 2x pyramid."""
    levels = max(3, int(math.log2(height)))
    acc: F32 | None = None
    for k in range(levels, -1, -1):
        h, w = math.ceil(height / 2**k), math.ceil(width / 2**k)
        if acc is not None:
            acc = _upscale(acc, w, h)
        if k >= 2:
            octave = rng.standard_normal((h, w), dtype=np.float32) * np.float32((2**k / height) ** 0.85)
            acc = octave if acc is None else acc + octave
    assert acc is not None
    return acc


# Height (0..1) -> colour: water, sand, grass, forest, rock, snow.
_TERRAIN: Final[tuple[tuple[float, RGB], ...]] = (
    (0.00, (18, 38, 80)),
    (0.30, (40, 92, 135)),
    (0.335, (188, 172, 128)),
    (0.37, (104, 146, 64)),
    (0.52, (46, 96, 42)),
    (0.66, (74, 92, 52)),
    (0.74, (116, 104, 90)),
    (0.84, (156, 150, 144)),
    (0.91, (238, 240, 244)),
    (1.00, (250, 250, 252)),
)
_WATER_LEVEL: Final = 0.30


def _landscape(rng: np.random.Generator, height: int, width: int) -> _Planes:
    n = _fractal_noise(rng, height, width)
    lo, hi = np.percentile(n[::7, ::7], [2.0, 99.7])
    h = np.clip((n - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    del n
    # Hill shading: a light from the upper left on the (flattened-water) relief.
    terrain = np.maximum(h, np.float32(_WATER_LEVEL))
    gy, gx = np.gradient(terrain)
    relief = np.float32(0.35 * height)
    nx, ny = -gx * relief, -gy * relief
    light = np.array([-0.55, -0.6, 0.58], dtype=np.float32)
    light /= np.float32(np.linalg.norm(light))
    shade = (nx * light[0] + ny * light[1] + light[2]) / np.sqrt(nx * nx + ny * ny + 1)
    del gx, gy, nx, ny, terrain
    shade = np.clip(np.float32(0.25) + np.float32(1.3) * shade, 0.3, 1.3).astype(np.float32)

    stops = np.array([s for s, _ in _TERRAIN], dtype=np.float32)
    colors = np.array([c for _, c in _TERRAIN], dtype=np.float32)
    levels = np.linspace(0, 1, 1024, dtype=np.float32)
    lut = np.stack([np.interp(levels, stops, colors[:, k]) for k in range(3)], axis=-1).astype(np.float32)
    lut_y, lut_u, lut_v = _rgb_to_yuv(lut)

    idx = (h * 1023).astype(np.int16)
    y = np.float32(16) + (lut_y[idx] - np.float32(16)) * shade
    del idx, shade
    idx_c = (_half(h) * 1023).astype(np.int16)
    return _Planes(_to_u8(y), _to_u8(lut_u[idx_c]), _to_u8(lut_v[idx_c]))


# --- moving objects --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sprite:
    y: F32  # luma (h, w), h and w even
    u: float
    v: float
    alpha: F32  # (h, w)
    alpha_c: F32  # (h/2, w/2)


def _soft_disc(size: int, soft: float) -> tuple[F32, F32, F32]:
    """(alpha, dx, dy) of a disc filling a size x size box, edge ``soft`` px wide."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = (xx - c) / np.float32(c), (yy - c) / np.float32(c)
    r = np.sqrt(dx * dx + dy * dy) * np.float32(c)
    alpha = np.clip((np.float32(c - 1) - r) / np.float32(soft) + np.float32(0.5), 0, 1).astype(np.float32)
    return alpha, dx, dy


def _ball(size: int, color: RGB, soft: float) -> _Sprite:
    alpha, dx, dy = _soft_disc(size, soft)
    y0, u, v = _yuv_of(color)
    lit = np.clip(1.0 - 0.6 * ((dx + 0.35) ** 2 + (dy + 0.35) ** 2), 0.35, 1.0)
    y = (np.float32(16) + (np.float32(y0 + 40) - 16) * lit).astype(np.float32)
    return _Sprite(y, u, v, alpha, _half(alpha))


def _box(w: int, h: int, color: RGB, soft: float) -> _Sprite:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    edge = np.minimum(np.minimum(xx, w - 1 - xx), np.minimum(yy, h - 1 - yy))
    alpha = np.clip(edge / np.float32(soft), 0, 1).astype(np.float32)
    y0, u, v = _yuv_of(color)
    # A darker window strip and a stripe so the box has some inner detail.
    y = np.full((h, w), y0, dtype=np.float32)
    y[h // 5 : h // 2, w // 8 : w * 7 // 8] = y0 * 0.45
    y[h * 2 // 3 : h * 3 // 4, :] = min(235.0, y0 * 1.35)
    return _Sprite(y, u, v, alpha, _half(alpha))


@dataclass(frozen=True, slots=True)
class _Wheel:
    """A disc with ``spokes`` sectors, rim and hub; its luma is drawn per frame."""

    size: int
    spokes: int
    theta: F32
    sharp: F32
    fixed: F32  # 1 on rim and hub
    fixed_y: F32
    sprite: _Sprite  # alpha and chroma; its y is unused

    @staticmethod
    def make(size: int, color: RGB, soft: float, spokes: int = 6) -> _Wheel:
        alpha, dx, dy = _soft_disc(size, soft)
        r = np.sqrt(dx * dx + dy * dy)
        theta = np.arctan2(dy, dx).astype(np.float32)
        sharp = np.maximum(r * np.float32(size / 2 / spokes), np.float32(0.5)).astype(np.float32)
        rim = np.clip((r - np.float32(0.82)) * np.float32(size / 2), 0, 1)
        hub = np.clip((np.float32(0.16) - r) * np.float32(size / 2), 0, 1)
        fixed = np.maximum(rim, hub).astype(np.float32)
        fixed_y = np.where(r > 0.5, np.float32(40), np.float32(210)).astype(np.float32)
        _, u, v = _yuv_of(color)
        sprite = _Sprite(np.zeros_like(alpha), u, v, alpha, _half(alpha))
        return _Wheel(size, spokes, theta, sharp, fixed, fixed_y, sprite)

    def luma(self, angle: float) -> F32:
        s: F32 = np.sin(self.theta * np.float32(self.spokes) - np.float32(angle))
        spokes: F32 = np.float32(125) + np.float32(95) * np.clip(s * self.sharp, -1, 1)
        out: F32 = spokes + (self.fixed_y - spokes) * self.fixed
        return out


def _blend(plane: U8, x: int, y: int, value: F32 | float, alpha: F32) -> None:
    h, w = alpha.shape
    region = plane[y : y + h, x : x + w]
    f = region.astype(np.float32)
    f += (value - f) * alpha
    f += np.float32(0.5)
    np.copyto(region, f, casting="unsafe")


def _bounce(start: float, speed: float, t: float) -> float:
    """Position in [0, 1] of a point moving at ``speed`` (units/s) between two walls."""
    p = (start + speed * t) % 2.0
    return 2.0 - p if p > 1.0 else p


# --- slides ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Font:
    height: int
    width: int
    stroke: int
    glyphs: tuple[Mask, ...]

    @staticmethod
    def make(rng: np.random.Generator, height: int, width: int, stroke: int, count: int = 48) -> _Font:
        """Pseudo-letters: random sets of strokes on a 7-segment-like skeleton."""
        h, w, s = max(5, height), max(3, width), max(1, stroke)
        mid = (h - s) // 2
        segments = (
            (slice(0, s), slice(0, w)),  # top
            (slice(mid, mid + s), slice(0, w)),  # middle
            (slice(h - s, h), slice(0, w)),  # bottom
            (slice(0, mid + s), slice(0, s)),  # upper left
            (slice(mid, h), slice(0, s)),  # lower left
            (slice(0, mid + s), slice(w - s, w)),  # upper right
            (slice(mid, h), slice(w - s, w)),  # lower right
            (slice(0, h), slice((w - s) // 2, (w + s) // 2)),  # centre stem
        )
        glyphs: list[Mask] = []
        for _ in range(count):
            g = np.zeros((h, w), dtype=np.bool_)
            for k in rng.choice(len(segments), size=int(rng.integers(2, 5)), replace=False):
                g[segments[int(k)]] = True
            if rng.random() < 0.3:  # x-height letter: drop the top part
                g[: h // 3] = False
            glyphs.append(g)
        return _Font(h, w, s, tuple(glyphs))

    def line(self, canvas: F32, x: int, y: int, width: int, color: RGB, rng: np.random.Generator) -> None:
        """Words of pseudo-text from (x, y) until ``width`` pixels are used."""
        ink = np.array(color, dtype=np.float32)
        gap = max(1, self.stroke)
        end = min(canvas.shape[1], x + width)
        while True:
            n = int(rng.integers(2, 10))
            if x + n * (self.width + gap) > end:
                break
            for _ in range(n):
                cell = canvas[y : y + self.height, x : x + self.width]
                cell[self.glyphs[int(rng.integers(len(self.glyphs)))]] = ink
                x += self.width + gap
            x += self.width


_PAPER: Final[RGB] = (246.0, 246.0, 240.0)
_HEADER: Final[RGB] = (28.0, 58.0, 108.0)
_INK: Final[RGB] = (30.0, 30.0, 36.0)
_ACCENTS: Final[tuple[RGB, ...]] = (
    (220.0, 110.0, 30.0),
    (40.0, 130.0, 200.0),
    (60.0, 160.0, 80.0),
    (190.0, 50.0, 60.0),
)
_CODE_BG: Final[RGB] = (32.0, 34.0, 42.0)
_CODE_INK: Final[tuple[RGB, ...]] = (
    (220.0, 220.0, 210.0),
    (240.0, 190.0, 90.0),
    (130.0, 200.0, 240.0),
    (170.0, 220.0, 120.0),
)


@dataclass(frozen=True, slots=True)
class _Slide:
    planes: _Planes
    base: _Planes  # the slide before its items: title band, border, footer
    reveal_rows: tuple[int, ...]  # even rows at which each successive item starts


class _Deck:
    """Slides of a lecture: bullets, a bar chart or code, under a title band."""

    def __init__(self, rng: np.random.Generator, width: int, height: int, count: int) -> None:
        self.width, self.height = width, height
        s = height / 540  # the panel is about half the frame height
        self.title = _Font.make(rng, round(30 * s), round(18 * s), round(4 * s))
        self.body = _Font.make(rng, round(19 * s), round(11 * s), round(2.4 * s))
        self.small = _Font.make(rng, round(14 * s), round(8 * s), round(1.8 * s))
        self.header_h = _even(62 * s)
        kinds = ("bullets", "chart", "bullets", "code")
        self.slides = tuple(self._slide(rng, kinds[i % len(kinds)], i + 1) for i in range(count))

    def _slide(self, rng: np.random.Generator, kind: str, number: int) -> _Slide:
        w, h = self.width, self.height
        c = np.empty((h, w, 3), dtype=np.float32)
        c[:] = _PAPER
        c[: self.header_h] = _HEADER
        border = max(1, round(h / 270))
        frame_grey = (150.0, 150.0, 150.0)
        c[:border] = c[-border:] = frame_grey
        c[:, :border] = c[:, -border:] = frame_grey
        margin = _even(0.06 * w)
        self.title.line(c, margin, (self.header_h - self.title.height) // 2, int(w * 0.7), (250, 250, 250), rng)
        footer_y = h - self.small.height - 2 * border - 4
        self.small.line(c, margin, footer_y, int(w * 0.3), (120, 120, 130), rng)
        top, bottom = self.header_h + _even(0.05 * h), footer_y - _even(0.04 * h)
        skeleton = _planes_from_rgb(c)
        accent = _ACCENTS[number % len(_ACCENTS)]
        reveal: list[int] = []
        if kind == "bullets":
            y = top
            step = int(self.body.height * 1.7)
            while y + step <= bottom:
                reveal.append(y // 2 * 2)
                indent = margin if rng.random() < 0.7 else margin + 3 * self.body.width
                dot = max(2, self.body.height // 3)
                dy = y + (self.body.height - dot) // 2
                c[dy : dy + dot, indent : indent + dot] = accent
                for _ in range(int(rng.integers(1, 3))):
                    if y + step > bottom:
                        break
                    x = indent + 2 * self.body.width
                    self.body.line(c, x, y, int((w - margin - x) * (0.55 + 0.45 * rng.random())), _INK, rng)
                    y += step
                y += step // 3
        elif kind == "chart":
            x0, x1, base = margin + 2 * self.small.width, w - margin, bottom - self.small.height - 6
            c[base : base + border + 1, x0:x1] = _INK
            c[top:base, x0 : x0 + border + 1] = _INK
            bars = int(rng.integers(5, 9))
            slot = (x1 - x0) // bars
            for b in range(bars):
                bx = x0 + b * slot + slot // 4
                bh = int((base - top) * (0.2 + 0.75 * rng.random()))
                color = accent if b % 2 == 0 else (120.0, 130.0, 145.0)
                c[base - bh : base, bx : bx + slot // 2] = color
                self.small.line(c, bx, base + 4, slot, _INK, rng)
            reveal.append(top)
        else:  # code
            pad = min(6, margin)
            c[top - 4 : bottom, margin - pad : w - margin + pad] = _CODE_BG
            y, indent = top + 2, 0
            step = int(self.small.height * 1.6)
            while y + step <= bottom:
                indent = max(0, min(4, indent + int(rng.integers(-1, 2))))
                x = margin + indent * 2 * self.small.width
                ink = _CODE_INK[int(rng.integers(len(_CODE_INK)))]
                self.small.line(c, x, y, int((w - margin - x) * (0.3 + 0.7 * rng.random())), ink, rng)
                y += step
            reveal.append(top - 4)
        return _Slide(_planes_from_rgb(c), skeleton, tuple(reveal))

    def draw(self, y: U8, u: U8, v: U8, x0: int, y0: int, t: float) -> None:
        """Paste the slide showing at ``t`` seconds, items revealed one by one."""
        slide = self.slides[int(t // SLIDE_SECONDS) % len(self.slides)]
        shown = 1 + int((t % SLIDE_SECONDS) // BULLET_SECONDS)
        cut = slide.reveal_rows[shown] if shown < len(slide.reveal_rows) else self.height
        h, w = self.height, self.width
        full, base = slide.planes, slide.base
        y[y0 : y0 + cut, x0 : x0 + w] = full.y[:cut]
        y[y0 + cut : y0 + h, x0 : x0 + w] = base.y[cut:]
        cy, cx, cc = y0 // 2, x0 // 2, cut // 2
        for dst, src, rest in ((u, full.u, base.u), (v, full.v, base.v)):
            dst[cy : cy + cc, cx : cx + w // 2] = src[:cc]
            dst[cy + cc : cy + h // 2, cx : cx + w // 2] = rest[cc:]


# --- grain -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Grain:
    """A bank of film-grain fields, each split in (lift, drop) so it adds with uint8 saturation.

    Every frame takes a random field at a random offset: fresh-looking grain at
    the cost of a few uint8 passes instead of a Gaussian draw per pixel.
    """

    fields: tuple[tuple[U8, U8], ...]

    @staticmethod
    def make(rng: np.random.Generator, height: int, width: int, std: float) -> _Grain | None:
        if std <= 0:
            return None
        fields = []
        for _ in range(GRAIN_BANK):
            n = _grain_field(rng, height + GRAIN_PAD, width + GRAIN_PAD, std)
            fields.append((np.clip(n, 0, 255).astype(np.uint8), np.clip(-n, 0, 255).astype(np.uint8)))
        return _Grain(tuple(fields))

    def apply(self, plane: U8, rng: np.random.Generator, scratch: U8) -> None:
        h, w = plane.shape
        k, oy, ox = (int(x) for x in rng.integers(0, (len(self.fields), GRAIN_PAD, GRAIN_PAD)))
        lift, drop = (f[oy : oy + h, ox : ox + w] for f in self.fields[k])
        room = scratch[:h, :w]
        np.subtract(255, plane, out=room)
        np.minimum(room, lift, out=room)
        plane += room
        np.minimum(plane, drop, out=room)
        plane -= room


def _grain_field(rng: np.random.Generator, h: int, w: int, std: float) -> npt.NDArray[np.int16]:
    """Gaussian noise of std-dev ``std``, softened by a binomial blur so the grains are ~2 px, as on film."""
    p = GRAIN_SMOOTHING
    n = rng.standard_normal((h + 2 * p, w + 2 * p), dtype=np.float32)
    for _ in range(p):
        n = (n[:-2] + 2 * n[1:-1] + n[2:]).astype(np.float32)
        n = (n[:, :-2] + 2 * n[:, 1:-1] + n[:, 2:]).astype(np.float32)
    n *= np.float32(std / float(n[::3, ::3].std()))
    return np.rint(n).astype(np.int16)


# --- the scene -------------------------------------------------------------


class _Scene:
    """Everything precomputed once; :meth:`frame` draws frame ``i`` as a packed yuv420p array."""

    def __init__(self, spec: SampleSpec) -> None:
        w, h = spec.width, spec.height
        self.spec = spec
        self.land = _landscape(np.random.default_rng((spec.seed, _RNG_LANDSCAPE)), 2 * h, 2 * w)

        rng = np.random.default_rng((spec.seed, _RNG_MOTION))
        self.phase = rng.uniform(0, 2 * math.pi, size=4)
        soft = max(1.5, h / 360)
        self.ball = _ball(_even(0.13 * h), (205.0, 45.0, 40.0), soft)
        self.box = _box(_even(0.2 * h), _even(0.11 * h), (235.0, 200.0, 60.0), soft)
        self.wheel = _Wheel.make(_even(0.22 * h), (120.0, 150.0, 200.0), soft)
        # Per object (ball, box, wheel): start (x, y) and speed (x, y), in fractions of the travel per second.
        self.paths = rng.uniform(0, 1, size=(3, 2)), np.array([[0.23, 0.17], [-0.11, 0.02], [0.07, -0.09]])

        srng = np.random.default_rng((spec.seed, _RNG_SLIDES))
        self.panel_x, self.panel_y = _even(0.55 * w), _even(0.06 * h)
        count = max(1, math.ceil(spec.seconds / SLIDE_SECONDS))
        self.deck = _Deck(srng, _even(0.42 * w), _even(0.52 * h), min(count, 16))

        grng = np.random.default_rng((spec.seed, _RNG_GRAIN))
        self.grain_y = _Grain.make(grng, h, w, spec.grain)
        self.grain_c = _Grain.make(grng, h // 2, w // 2, spec.grain * CHROMA_GRAIN)
        self.scratch = np.empty((h, w), dtype=np.uint8)

    def _background(self, t: float) -> tuple[U8, U8, U8, U8]:
        """The landscape through a window that pans and zooms: a fresh :func:`_yuv420_buffer`."""
        w, h = self.spec.width, self.spec.height
        p = self.phase
        zoom = 1.12 + 0.1 * math.sin(2 * math.pi * t / 37.0 + p[0])  # window size / frame size
        # from_numpy_buffer takes a yuv420p height to be a multiple of 4 (it rounds down).
        cw, ch = _even(w * zoom), round(h * zoom / 4) * 4
        span_x, span_y = (2 * w - cw) / 2, (2 * h - ch) / 2
        x0 = int(span_x + 0.95 * span_x * math.sin(2 * math.pi * t / 41.0 + p[1]))
        y0 = int(span_y + 0.95 * span_y * math.sin(2 * math.pi * t / 29.0 + p[2]))
        crop, crop_y, crop_u, crop_v = _yuv420_buffer(cw, ch)
        ux, uy = x0 // 2, y0 // 2
        crop_y[:] = self.land.y[y0 : y0 + ch, x0 : x0 + cw]
        crop_u[:] = self.land.u[uy : uy + ch // 2, ux : ux + cw // 2]
        crop_v[:] = self.land.v[uy : uy + ch // 2, ux : ux + cw // 2]
        scaled = av.VideoFrame.from_numpy_buffer(crop, format="yuv420p").reformat(
            width=w, height=h, interpolation="BILINEAR"
        )
        out = _yuv420_buffer(w, h)
        for dst, plane in zip(out[1:], scaled.planes, strict=True):
            rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(-1, plane.line_size)
            dst[:] = rows[: dst.shape[0], : dst.shape[1]]
        return out

    def _sprite(self, planes: tuple[U8, U8, U8], sprite: _Sprite, luma: F32, x: int, y: int) -> None:
        py, pu, pv = planes
        _blend(py, x, y, luma, sprite.alpha)
        _blend(pu, x // 2, y // 2, sprite.u, sprite.alpha_c)
        _blend(pv, x // 2, y // 2, sprite.v, sprite.alpha_c)

    def frame(self, i: int) -> U8:
        spec = self.spec
        w, h = spec.width, spec.height
        t = i / spec.fps
        buf, y, u, v = self._background(t)
        planes = (y, u, v)

        starts, speeds = self.paths
        sprites = (
            (self.ball, self.ball.y),
            (self.box, self.box.y),
            (self.wheel.sprite, self.wheel.luma(2.4 * t + float(self.phase[3]))),
        )
        for k, (sprite, luma) in enumerate(sprites):
            sh, sw = sprite.alpha.shape
            px = _even(_bounce(starts[k, 0], speeds[k, 0], t) * (w - sw - 2))
            py = _even(_bounce(starts[k, 1], speeds[k, 1], t) * (h - sh - 2))
            self._sprite(planes, sprite, luma, px, py)

        pick = np.random.default_rng((spec.seed, _RNG_GRAIN, i))  # frame i is the same in any order
        if self.grain_y is not None:
            self.grain_y.apply(y, pick, self.scratch)
        if self.grain_c is not None:
            self.grain_c.apply(u, pick, self.scratch)
            self.grain_c.apply(v, pick, self.scratch)
        # The slides go on last: screen content composited digitally, crisp and grain-free.
        self.deck.draw(y, u, v, self.panel_x, self.panel_y, t)
        return buf


# --- lectures ----------------------------------------------------------------


def _pointer(height: int) -> _Sprite:
    """An arrow pointer, white with a dark rim, ``height`` pixels tall."""
    h, w = _even(height), _even(height * 0.7)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    inside = (xx <= yy * np.float32(0.66)) & (yy < h * 0.85)
    rim = inside & ((xx >= yy * np.float32(0.66) - 2) | (xx < 2) | (yy >= h * 0.85 - 2))
    alpha = inside.astype(np.float32)
    luma = np.where(rim, np.float32(20), np.float32(235)).astype(np.float32)
    return _Sprite(luma, 128.0, 128.0, alpha, _half(alpha))


class _Lecture:
    """A screen recording of slides (``kind="screen"``), optionally with a talking head (``"inset"``)."""

    def __init__(self, spec: SampleSpec) -> None:
        w, h = spec.width, spec.height
        self.spec = spec
        count = max(1, math.ceil(spec.seconds / SLIDE_SECONDS))
        self.deck = _Deck(np.random.default_rng((spec.seed, _RNG_SLIDES)), w, h, min(count, 16))
        self.pointer = _pointer(max(8, h // 28))
        self.inset: _Scene | None = None
        if spec.kind == "inset":
            iw, ih = max(128, _even(w * INSET_SCALE)), max(96, round(h * INSET_SCALE / 4) * 4)
            self.inset = _Scene(dataclasses.replace(spec, kind="scene", width=iw, height=ih, audio=False))
            self.inset_xy = (w - iw - _even(0.02 * w), h - ih - _even(0.03 * h))

    def _pointer_xy(self, t: float) -> tuple[int, int]:
        """Rests, then glides to a new spot during POINTER_MOVES of each slide."""
        k, into = int(t // SLIDE_SECONDS), t % SLIDE_SECONDS
        a, b = POINTER_MOVES
        f = min(1.0, max(0.0, (into - a) / (b - a)))
        f = f * f * (3 - 2 * f)
        start = np.random.default_rng((self.spec.seed, _RNG_MOTION, k)).uniform(0.15, 0.8, 2)
        end = np.random.default_rng((self.spec.seed, _RNG_MOTION, k + 1)).uniform(0.15, 0.8, 2)
        x, y = start + (end - start) * f
        return _even(x * self.spec.width), _even(y * self.spec.height)

    def frame(self, i: int) -> U8:
        spec = self.spec
        t = i / spec.fps
        buf, y, u, v = _yuv420_buffer(spec.width, spec.height)
        self.deck.draw(y, u, v, 0, 0, t)
        px, py = self._pointer_xy(t)
        p = self.pointer
        _blend(y, px, py, p.y, p.alpha)
        _blend(u, px // 2, py // 2, p.u, p.alpha_c)
        _blend(v, px // 2, py // 2, p.v, p.alpha_c)
        if self.inset is not None:
            small = self.inset.frame(i)
            iw, ih = self.inset.spec.width, self.inset.spec.height
            x0, y0 = self.inset_xy
            y[y0 : y0 + ih, x0 : x0 + iw] = small[:ih]
            chroma = small[ih:].reshape(-1)
            q = iw * ih // 4
            u[y0 // 2 : (y0 + ih) // 2, x0 // 2 : (x0 + iw) // 2] = chroma[:q].reshape(ih // 2, iw // 2)
            v[y0 // 2 : (y0 + ih) // 2, x0 // 2 : (x0 + iw) // 2] = chroma[q:].reshape(ih // 2, iw // 2)
        return buf


# --- audio -----------------------------------------------------------------


def _speech_envelope(rng: np.random.Generator, seconds: float, rate: int = 200) -> F64:
    """Syllable-rate bumps grouped in phrases with pauses, sampled at ``rate`` Hz."""
    n = int(seconds * rate) + 2
    env = np.zeros(n, dtype=np.float64)
    pos = 0.1 * rng.random()
    while pos < seconds:
        for _ in range(int(rng.integers(5, 15))):  # a phrase
            dur = rng.uniform(0.12, 0.3)
            a, b = int(pos * rate), min(n, int((pos + dur) * rate))
            if a >= n:
                break
            bump = np.sin(np.linspace(0, math.pi, max(1, b - a))) ** 2
            env[a:b] = np.maximum(env[a:b], rng.uniform(0.45, 1.0) * bump[: b - a])
            pos += dur * rng.uniform(0.8, 1.05)
        pos += rng.uniform(0.25, 0.7)  # pause
    return np.maximum(env, 0.06)


def _audio(spec: SampleSpec) -> F32:
    """(2, n) float32 in [-1, 1]: a chord per channel, speech-like dynamics, a little noise."""
    rng = np.random.default_rng((spec.seed, _RNG_AUDIO))
    n = spec.sample_count
    t = np.arange(n, dtype=np.float64) / AUDIO_RATE
    chords = ((220.00, 329.63, 554.37), (277.18, 440.00, 659.26))  # A major, spread over two channels
    out = np.empty((2, n), dtype=np.float32)
    ctrl_t = np.arange(int(spec.seconds * 200) + 2) / 200
    for ch, chord in enumerate(chords):
        tone = np.zeros(n, dtype=np.float64)
        for k, f in enumerate(chord):
            vibrato = (f * 0.003 / 5.0) * np.sin(2 * math.pi * 5.0 * t + rng.uniform(0, 2 * math.pi))
            phase = 2 * math.pi * f * t + 2 * math.pi * vibrato + rng.uniform(0, 2 * math.pi)
            tone += (0.9 - 0.2 * k) * (np.sin(phase) + 0.25 * np.sin(2 * phase))
        env = np.interp(t, ctrl_t, _speech_envelope(rng, spec.seconds))
        x = 0.18 * tone * env + 0.004 * rng.standard_normal(n)
        out[ch] = x
    fade = min(n // 2, AUDIO_RATE // 50)
    if fade:
        ramp = np.linspace(0, 1, fade, dtype=np.float32)
        out[:, :fade] *= ramp
        out[:, n - fade :] *= ramp[::-1]
    peak = float(np.abs(out).max()) or 1.0
    out *= np.float32(0.7 / peak)
    return out


# --- encoding --------------------------------------------------------------


class _AudioFeed:
    """Hands out AAC-sized frames (1024 samples, the last one shorter) with pts in samples."""

    def __init__(self, samples: F32) -> None:
        self.samples = samples
        self.pos = 0

    def until(self, sample: int) -> Iterator[av.AudioFrame]:
        """Frames up to at least ``sample`` (a frame may run past it), as far as the samples go."""
        total = self.samples.shape[1]
        while self.pos < min(sample, total):
            end = min(self.pos + AAC_FRAME_SAMPLES, total)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(self.samples[:, self.pos : end]), format="fltp", layout="stereo"
            )
            frame.sample_rate = AUDIO_RATE
            frame.pts = self.pos
            frame.time_base = Fraction(1, AUDIO_RATE)
            self.pos = end
            yield frame


def _add_video(container: OutputContainer, spec: SampleSpec) -> VideoStream:
    stream = container.add_stream(
        "libx264", rate=spec.fps, options={"crf": str(spec.crf), "preset": spec.preset, "profile": "high"}
    )
    cc = stream.codec_context
    cc.width, cc.height, cc.pix_fmt = spec.width, spec.height, "yuv420p"
    cc.time_base = Fraction(1, spec.fps)
    cc.gop_size = 2 * spec.fps
    cc.thread_type = "FRAME"
    cc.thread_count = 0
    cc.colorspace = cc.color_primaries = cc.color_trc = 1  # BT.709
    cc.color_range = 1  # limited ("MPEG")
    return stream


def _add_audio(container: OutputContainer) -> AudioStream:
    stream = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
    stream.codec_context.bit_rate = AUDIO_BITRATE
    stream.codec_context.time_base = Fraction(1, AUDIO_RATE)
    return stream


def make_sample(path: Path, spec: SampleSpec = SampleSpec()) -> Path:
    """Write the clip ``spec`` describes to ``path`` (MP4: H.264 High + AAC) and return ``path``.

    The file appears only when complete (written beside it, then renamed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    scene = _Scene(spec) if spec.kind == "scene" else _Lecture(spec)
    samples = _audio(spec) if spec.audio else None
    try:
        with av.open(str(partial), mode="w", format="mp4", container_options={"movflags": "+faststart"}) as out:
            video = _add_video(out, spec)
            audio = _add_audio(out) if samples is not None else None
            feed = _AudioFeed(samples) if samples is not None else None
            for i in range(spec.frame_count):
                frame = av.VideoFrame.from_ndarray(scene.frame(i), format="yuv420p")
                frame.pts = i
                frame.time_base = Fraction(1, spec.fps)
                out.mux(video.encode(frame))
                if audio is not None and feed is not None:
                    # Keep the audio level with the video so the muxer interleaves as it goes.
                    for aframe in feed.until((i + 1) * AUDIO_RATE // spec.fps):
                        out.mux(audio.encode(aframe))
            out.mux(video.encode(None))
            if audio is not None and feed is not None:
                for aframe in feed.until(spec.sample_count):
                    out.mux(audio.encode(aframe))
                out.mux(audio.encode(None))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _probe_duration(path: Path) -> float:
    with av.open(str(path)) as container:
        return (container.duration or 0) / av.time_base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sources", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("out", type=Path, help="output .mp4 path")
    d = SampleSpec()
    parser.add_argument("--seconds", type=float, default=d.seconds)
    parser.add_argument("--width", type=int, default=d.width)
    parser.add_argument("--height", type=int, default=d.height)
    parser.add_argument("--fps", type=int, default=d.fps)
    parser.add_argument("--grain", type=float, default=d.grain, help="std-dev of the luma noise (8-bit code values)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--crf", type=int, default=d.crf)
    parser.add_argument("--preset", default=d.preset, choices=X264_PRESETS)
    parser.add_argument("--no-audio", dest="audio", action="store_false")
    parser.add_argument("--kind", default=d.kind, choices=KINDS, help="scene, screen recording, or slides+inset")
    args = parser.parse_args(argv)
    try:
        spec = SampleSpec(
            width=args.width,
            height=args.height,
            fps=args.fps,
            seconds=args.seconds,
            grain=args.grain,
            seed=args.seed,
            crf=args.crf,
            preset=args.preset,
            audio=args.audio,
            kind=args.kind,
        )
    except ValueError as exc:
        parser.error(str(exc))
    path = make_sample(args.out, spec)
    size = path.stat().st_size
    print(f"{path}  {size / 1e6:.1f} MB  {_probe_duration(path):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
