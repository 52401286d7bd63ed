"""Synthetic source clips for ``make demo`` and the benches: as hard to encode as lecture footage.

Kinds (``--kind``):

* ``scene`` (default): a camera shot. A smooth landscape panned under the frame, soft discs
  moving at different speeds, film grain different on every frame, and a slide panel (pseudo
  text revealed line by line, a new slide every 5 s) composited crisp and grain-free;
* ``screen``: a screen recording: the slides fill the frame, a pointer glides for 1 s per slide
  and rests otherwise, so most frames repeat the previous one;
* ``inset``: ``screen`` with a talking-head window (the scene, at a fifth of the size);
* ``sdr10``, ``hlg``, ``pq``: the scene as 10-bit H.264 (High 10), in BT.709 SDR or graded to
  BT.2020 HLG / PQ (the SDR picture placed at BT.2408's 203 cd/m² reference white) through a
  3D LUT: the same pictures, so the engine's tone map is the only difference in cost.

Frames are drawn in YUV 4:2:0 (BT.709, limited range) with numpy; audio is stereo 48 kHz:
a chord per channel under a speech-like envelope.

    python -m bench.sources OUT.mp4 --seconds 10 [--kind screen] [--width 1280 --height 720]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np
import numpy.typing as npt

__all__ = ["KINDS", "SampleSpec", "main", "make_sample"]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]
KINDS = ("scene", "screen", "inset", "sdr10", "hlg", "pq")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
RATE = 48_000
SLIDE_S, LINE_S = 5.0, 0.8  # a new slide every 5 s, a new line of text every 0.8 s
_HDR_TAGS = {"sdr10": (1, 1, 1), "hlg": (9, 18, 9), "pq": (9, 16, 9)}  # primaries, transfer, matrix
_LUT_POINTS = 33


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleSpec:
    """What to make. ``grain``: the std-dev of the luma noise in 8-bit code values."""

    width: int = 1920
    height: int = 1080
    fps: int = 30
    seconds: float = 10.0
    grain: float = 6.0
    seed: int = 0
    crf: int = 16  # a high-quality source: the ladder is what is measured
    preset: str = "superfast"  # on this grainy content as small as veryfast, for half the CPU
    audio: bool = True
    kind: str = "scene"

    def __post_init__(self) -> None:
        checks = {
            f"kind must be one of {', '.join(KINDS)}": self.kind in KINDS,
            "width and height must be even and at least 128x96": self.width >= 128
            and self.height >= 96
            and self.width % 2 == 0
            and self.height % 2 == 0,
            "fps must be in 1..240": 1 <= self.fps <= 240,
            "seconds must give at least one frame and be at most 3600": 0 < self.seconds <= 3600
            and self.frame_count >= 1,
            "grain must be in 0..40": 0 <= self.grain <= 40,
            "crf must be in 0..51": 0 <= self.crf <= 51,
            f"preset must be one of {', '.join(PRESETS)}": self.preset in PRESETS,
        }
        for message, ok in checks.items():
            if not ok:
                raise ValueError(f"{message}: {self}")

    @property
    def frame_count(self) -> int:
        return round(self.seconds * self.fps)


def _yuv(rgb: F32) -> F32:
    """BT.709 limited-range Y'CbCr of 0..255 R'G'B' (last axis)."""
    m = np.array([[0.2126, 0.7152, 0.0722], [-0.1146, -0.3854, 0.5], [0.5, -0.4542, -0.0458]], dtype=np.float32)
    scaled = rgb / np.float32(255) @ m.T * np.array([219, 224, 224], np.float32)
    out: F32 = (scaled + np.array([16, 128, 128], np.float32)).astype(np.float32)
    return out


def _planes(rgb: F32) -> tuple[U8, U8, U8]:
    """R'G'B' (h, w, 3) -> Y, U, V planes (chroma 2x2-averaged)."""
    yuv = _yuv(rgb)
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    c = yuv[:h:2, :w:2, 1:] + yuv[1:h:2, :w:2, 1:] + yuv[:h:2, 1:w:2, 1:] + yuv[1:h:2, 1:w:2, 1:]
    u8 = [np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in (yuv[..., 0], c[..., 0] / 4, c[..., 1] / 4)]
    return u8[0], u8[1], u8[2]


def _smooth_noise(rng: np.random.Generator, h: int, w: int) -> F32:
    """Octaves of random values on coarse grids, bilinearly upsampled and summed: hills and valleys."""
    total = np.zeros((h, w), np.float32)
    for cells in (3, 6, 12, 24, 48, 96, 192, 384):
        grid = rng.standard_normal((cells + 1, cells * w // h + 2)).astype(np.float32)
        ys = np.linspace(0, cells, h, endpoint=False, dtype=np.float32)
        xs = np.linspace(0, cells * w / h, w, endpoint=False, dtype=np.float32)
        y0, x0 = ys.astype(int), xs.astype(int)
        fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
        fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)  # smoothstep: no creases along the grid
        top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
        bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
        total += (top * (1 - fy) + bottom * fy) / np.float32(cells**0.8)
    return total


def _grain(rng: np.random.Generator, h: int, w: int, std: float) -> npt.NDArray[np.int16]:
    """Film grain: white noise softened twice by a [1 2 1] blur each way (grains of ~2 px), at ``std``."""
    n = rng.standard_normal((h + 4, w + 4)).astype(np.float32)
    for _ in range(2):
        n = n[:-2] + 2 * n[1:-1] + n[2:]
        n = n[:, :-2] + 2 * n[:, 1:-1] + n[:, 2:]
    grain: npt.NDArray[np.int16] = np.rint(n * np.float32(std / (n.std() or 1))).astype(np.int16)
    return grain


class _Slides:
    """A deck of slides (title bar and lines of pseudo-words), each line revealed in turn."""

    def __init__(self, rng: np.random.Generator, w: int, h: int, count: int) -> None:
        self.w, self.h, self.slides = w, h, []
        line_h = max(4, h // 16)
        for _ in range(count):
            paper = rng.uniform(225, 250, 3).astype(np.float32)
            rgb = np.broadcast_to(paper, (h, w, 3)).copy()
            rgb[: line_h * 2, :] = rng.uniform(30, 120, 3)  # title bar
            ink = rng.uniform(10, 70, 3)
            tops = list(range(line_h * 3, h - line_h, line_h * 3 // 2))
            for top in tops:
                x = w // 12
                while x < w * (0.5 + 0.4 * rng.random()):
                    word = int(rng.integers(w // 40, w // 9))
                    rgb[top + line_h // 4 : top + line_h * 3 // 4, x : x + word] = ink
                    x += word + w // 60
            self.slides.append((_planes(rgb), tops))

    def draw(self, y: U8, u: U8, v: U8, x0: int, y0: int, t: float) -> None:
        (sy, su, sv), tops = self.slides[int(t // SLIDE_S) % len(self.slides)]
        shown = 1 + int((t % SLIDE_S) / LINE_S)
        cut = min(self.h, tops[shown] if shown < len(tops) else self.h) // 2 * 2  # rows below: not yet revealed
        y[y0 : y0 + cut, x0 : x0 + self.w] = sy[:cut]
        y[y0 + cut : y0 + self.h, x0 : x0 + self.w] = sy[cut:, :1]  # the paper's colour (column 0 is plain)
        for dst, src in ((u, su), (v, sv)):
            dst[y0 // 2 : (y0 + cut) // 2, x0 // 2 : (x0 + self.w) // 2] = src[: cut // 2]
            dst[(y0 + cut) // 2 : (y0 + self.h) // 2, x0 // 2 : (x0 + self.w) // 2] = src[cut // 2 :, :1]


class _Picture:
    """Draws frame ``i`` of ``spec`` as a packed yuv420p array (height * 3 / 2, width)."""

    def __init__(self, spec: SampleSpec) -> None:
        self.spec, w, h = spec, spec.width, spec.height
        rng = np.random.default_rng(spec.seed)
        screen, count = spec.kind in ("screen", "inset"), max(1, min(12, int(spec.seconds // SLIDE_S) + 1))
        self.slides = _Slides(rng, w if screen else w * 2 // 5 // 2 * 2, h if screen else h // 4 * 2, count)
        self.inset: _Picture | None = None
        if screen:
            if spec.kind == "inset":
                small = replace(spec, kind="scene", width=max(128, w // 5 // 2 * 2), height=max(96, h // 5 // 2 * 2))
                self.inset = _Picture(small)
            return
        hills = _smooth_noise(rng, 2 * h, 2 * w)
        hills = (hills - hills.min()) / (np.ptp(hills) or 1)
        colours = np.array([(30, 60, 120), (190, 175, 130), (70, 130, 60), (40, 90, 40), (130, 120, 110), (245,) * 3])
        stops = np.linspace(0, 1, len(colours))
        rgb = np.stack([np.interp(hills, stops, colours[:, k]) for k in range(3)], axis=-1).astype(np.float32)
        gy, gx = np.gradient(hills)  # hill shading, lit from the upper left: the relief's fine detail
        shade = np.clip(0.9 - (gx + gy) * np.float32(0.25 * h), 0.4, 1.4)[..., None]
        self.land = _planes(np.minimum(rgb * shade, 255))
        self.discs = []  # (start, speed, colour, size), in fractions of the frame per second
        for _ in range(3):
            colour, size = (
                _yuv(rng.uniform(40, 240, 3).astype(np.float32)),
                max(4, h // int(rng.integers(6, 12)) // 2 * 2),
            )
            self.discs.append((rng.uniform(0, 1, 2), rng.uniform(-0.25, 0.25, 2), colour, size))
        pad = 16
        self.grain = [_grain(rng, h + pad, w + pad, spec.grain) for _ in range(4)]

    def frame(self, i: int) -> U8:
        s, t = self.spec, i / self.spec.fps
        w, h = s.width, s.height
        buf = np.empty((h * 3 // 2, w), np.uint8)
        y, (u, v) = buf[:h], buf[h:].reshape(2, h // 2, w // 2)
        if self.inset is not None or s.kind == "screen":
            self.slides.draw(y, u, v, 0, 0, t)
            px, py = self._pointer(t)
            y[py : py + h // 30, px : px + h // 60] = 235
            if self.inset is not None:
                small, ih, iw = self.inset.frame(i), self.inset.spec.height, self.inset.spec.width
                x0, y0 = w - iw - w // 50 // 2 * 2, h - ih - h // 30 // 2 * 2
                y[y0 : y0 + ih, x0 : x0 + iw] = small[:ih]
                chroma = small[ih:].reshape(2, ih // 2, iw // 2)
                u[y0 // 2 : (y0 + ih) // 2, x0 // 2 : (x0 + iw) // 2] = chroma[0]
                v[y0 // 2 : (y0 + ih) // 2, x0 // 2 : (x0 + iw) // 2] = chroma[1]
            return buf
        # The landscape through a window that pans and slowly zooms: resampled every frame, as a camera
        # move is (a whole-pixel pan would be predicted exactly and leave the encoder too little to do).
        zoom = 1.2 + 0.15 * np.sin(t / 6.0)
        cw, ch = int(w * zoom) // 4 * 4, int(h * zoom) // 4 * 4
        x0 = int((2 * w - cw - 2) * (0.5 + 0.5 * np.sin(t / 7.0))) // 2 * 2
        y0 = int((2 * h - ch - 2) * (0.5 + 0.5 * np.sin(t / 5.0 + 1))) // 2 * 2
        crop = [
            src[y0 // k : (y0 + ch) // k, x0 // k : (x0 + cw) // k].reshape(-1, cw)
            for src, k in zip(self.land, (1, 2, 2), strict=True)
        ]
        window = av.VideoFrame.from_ndarray(np.concatenate(crop), format="yuv420p")
        buf[:] = window.reformat(width=w, height=h, interpolation="BILINEAR").to_ndarray()
        for start, speed, colour, size in self.discs:
            pos = np.abs((start + speed * t) % 2 - 1)  # bouncing between the edges
            dx, dy = int(pos[0] * (w - size)) // 2 * 2, int(pos[1] * (h - size)) // 2 * 2
            yy, xx = np.ogrid[:size, :size]
            inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 2) ** 2
            y[dy : dy + size, dx : dx + size][inside] = int(colour[0])
            for plane, c in ((u, colour[1]), (v, colour[2])):
                plane[dy // 2 : (dy + size) // 2, dx // 2 : (dx + size) // 2][inside[::2, ::2]] = int(c)
        if s.grain > 0:
            rng = np.random.default_rng((s.seed, i))  # frame i is the same in any order
            field, oy, ox = (int(n) for n in rng.integers(0, (len(self.grain), 16, 16)))
            y[:] = np.clip(y + self.grain[field][oy : oy + h, ox : ox + w], 0, 255)
        self.slides.draw(y, u, v, w - self.slides.w - w // 20 // 2 * 2, h // 16 // 2 * 2, t)
        return buf

    def _pointer(self, t: float) -> tuple[int, int]:
        """Rests, then glides to a new spot during the second second of each slide."""
        k, f = int(t // SLIDE_S), min(1.0, max(0.0, t % SLIDE_S - 1.0))
        a, b = (np.random.default_rng((self.spec.seed, n)).uniform(0.1, 0.8, 2) for n in (k, k + 1))
        x, y = a + (b - a) * f * f * (3 - 2 * f)
        return int(x * self.spec.width), int(y * self.spec.height)


def _audio(spec: SampleSpec) -> npt.NDArray[np.float32]:
    """(2, n) in [-1, 1]: a different chord per channel, syllable-rate bumps grouped in phrases."""
    rng = np.random.default_rng((spec.seed, 1))
    n = spec.frame_count * RATE // spec.fps
    t = np.arange(n) / RATE
    syllables = np.sin(np.pi * t * rng.uniform(3.5, 5.0)) ** 2
    phrases = (np.sin(2 * np.pi * t / rng.uniform(2.5, 4.0)) > -0.3).astype(float)
    out = np.empty((2, n), np.float32)
    for ch, chord in enumerate(((220.0, 329.63, 554.37), (277.18, 440.0, 659.26))):
        tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) for f in chord)
        out[ch] = 0.2 * tone * (0.1 + syllables * phrases) + 0.004 * rng.standard_normal(n)
    return out * np.float32(0.7 / (np.abs(out).max() or 1))


def _grade_lut(kind: str, path: Path) -> None:
    """A 3D LUT (.cube) from SDR BT.709 R'G'B' to the BT.2020 HLG or PQ R'G'B' of the same picture."""
    axis = np.linspace(0.0, 1.0, _LUT_POINTS)
    b, g, r = np.meshgrid(axis, axis, axis, indexing="ij")
    light = np.stack([r, g, b], axis=-1) ** 2.4 * 203.0  # BT.1886 display light, reference white 203 cd/m²
    to2020 = np.array([[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]])
    light = light @ to2020.T
    if kind == "pq":  # SMPTE ST 2084 inverse EOTF
        m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
        yp = (light / 10000.0) ** m1
        signal = ((c1 + c2 * yp) / (1 + c3 * yp)) ** m2
    else:  # BT.2100 HLG: inverse OOTF for a 1000 cd/m² display (gamma 1.2), then the OETF
        display = light / 1000.0
        yd = np.maximum(display @ np.array([0.2627, 0.6780, 0.0593]), 1e-12)[..., None]
        e = display * yd ** (-0.2 / 1.2)
        a, bb, c = 0.17883277, 0.28466892, 0.55991073
        signal = np.where(e <= 1 / 12, np.sqrt(3 * e), a * np.log(np.maximum(12 * e - bb, 1e-12)) + c)
    rows = "\n".join(" ".join(f"{x:.6f}" for x in p) for p in np.clip(signal, 0, 1).reshape(-1, 3))
    path.write_text(f"LUT_3D_SIZE {_LUT_POINTS}\n{rows}\n")


def _grader(kind: str, spec: SampleSpec, cube: Path) -> av.filter.Graph:
    graph = av.filter.Graph()
    node = graph.add_buffer(
        width=spec.width, height=spec.height, format=av.VideoFormat("yuv420p"), time_base=Fraction(1, spec.fps)
    )
    chain = [("scale", "in_color_matrix=bt709:in_range=tv:out_color_matrix=bt709:out_range=tv")]
    if kind != "sdr10":
        chain = [
            ("scale", "in_color_matrix=bt709:in_range=tv"),
            ("format", "gbrp16le"),
            ("lut3d", f"file={cube}:interp=tetrahedral"),
            ("scale", "out_color_matrix=bt2020:out_range=tv"),
        ]
    for name, args in [*chain, ("format", "yuv420p10le"), ("buffersink", None)]:
        nxt = graph.add(name, args)
        node.link_to(nxt)
        node = nxt
    graph.configure()
    return graph


def make_sample(path: Path, spec: SampleSpec = SampleSpec()) -> Path:
    """Write the clip ``spec`` describes to ``path`` (MP4, H.264 + AAC); it appears only when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    picture, ten_bit = _Picture(spec), spec.kind in _HDR_TAGS
    try:
        with tempfile.TemporaryDirectory() as tmp, av.open(str(partial), "w", format="mp4") as out:
            video = out.add_stream("libx264", rate=spec.fps, options={"crf": str(spec.crf), "preset": spec.preset})
            cc = video.codec_context
            cc.width, cc.height, cc.pix_fmt = spec.width, spec.height, "yuv420p10le" if ten_bit else "yuv420p"
            cc.time_base, cc.gop_size, cc.thread_type = Fraction(1, spec.fps), 2 * spec.fps, "FRAME"
            cc.color_primaries, cc.color_trc, cc.colorspace = _HDR_TAGS.get(spec.kind, (1, 1, 1))
            cc.color_range = 1  # limited
            grader = None
            if ten_bit:
                if spec.kind != "sdr10":
                    _grade_lut(spec.kind, Path(tmp) / "grade.cube")
                grader = _grader(spec.kind, spec, Path(tmp) / "grade.cube")
            samples = _audio(spec) if spec.audio else None
            audio = out.add_stream("aac", rate=RATE, layout="stereo") if samples is not None else None
            sent = 0
            for i in range(spec.frame_count):
                frame = av.VideoFrame.from_ndarray(picture.frame(i), format="yuv420p")
                frame.pts, frame.time_base = i, Fraction(1, spec.fps)
                if grader is not None:
                    grader.vpush(frame)
                    frame = grader.vpull()
                    frame.pts, frame.time_base = i, Fraction(1, spec.fps)
                out.mux(video.encode(frame))
                # Audio kept level with the video, so the muxer interleaves as it goes.
                while (
                    audio is not None
                    and samples is not None
                    and sent < min((i + 1) * RATE // spec.fps, samples.shape[1])
                ):
                    chunk = np.ascontiguousarray(samples[:, sent : sent + 1024])
                    aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                    aframe.sample_rate, aframe.pts, aframe.time_base = RATE, sent, Fraction(1, RATE)
                    out.mux(audio.encode(aframe))
                    sent += chunk.shape[1]
            out.mux(video.encode(None))
            if audio is not None:
                out.mux(audio.encode(None))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sources", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output .mp4 path")
    d = SampleSpec()
    for name in ("seconds", "width", "height", "fps", "grain", "seed", "crf"):
        parser.add_argument(f"--{name}", type=type(getattr(d, name)), default=getattr(d, name))
    parser.add_argument("--preset", default=d.preset, choices=PRESETS)
    parser.add_argument("--kind", default=d.kind, choices=KINDS)
    parser.add_argument("--no-audio", dest="audio", action="store_false")
    args = parser.parse_args(argv)
    try:
        spec = SampleSpec(**{k: v for k, v in vars(args).items() if k != "out"})
    except ValueError as exc:
        parser.error(str(exc))
    path = make_sample(args.out, spec)
    with av.open(str(path)) as container:
        seconds = (container.duration or 0) / av.time_base
    print(f"{path}  {path.stat().st_size / 1e6:.1f} MB  {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
