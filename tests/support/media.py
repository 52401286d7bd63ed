"""Tiny real media files for the test suite, made with PyAV.

Every ``make_*`` function writes one file at ``path`` and returns ``path``.
Clips are a second or two at 320x180 unless a variant needs otherwise, so the
whole factory is cheap on two cores.

Picture content moves: a diagonal gradient, a bright square that crosses the
frame and per-frame noise, so encoders have real work and "the poster is not
black/static" checks mean something. Audio is a tone with a different
frequency per channel (see :func:`channel_frequency`).

Conventions worth knowing:

* ``rotation`` is the *clockwise* rotation a player applies (like a phone's
  portrait recording, and like ``VideoInfo.rotation_deg``). It is stored as an
  mp4/mov display matrix through ``VideoStream.set_display_rotation``; PyAV's
  ``VideoFrame.rotation`` reads the matrix back *counter-clockwise*, so
  ``rotation=90`` reads back as ``frame.rotation == -90``
  (see :func:`clockwise_rotation`).
* ``interlaced=True`` sets ``AV_CODEC_FLAG_INTERLACED_DCT | _ME`` on the
  encoder (x264 then codes MBAFF) and ``field_order = AV_FIELD_TT``; decoded
  frames report ``interlaced_frame`` and the stream reports ``field_order``.
* ``audio_start_s > 0`` shifts the audio packets so the first one sits exactly
  at that time (compensating the encoder's priming delay), while video starts
  at 0.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.codec.context
import numpy as np
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.video.stream import VideoStream

__all__ = [
    "AV_FIELD_PROGRESSIVE",
    "AV_FIELD_TT",
    "Box",
    "channel_frequency",
    "clockwise_rotation",
    "make_audio_only",
    "make_clip",
    "make_concat_trap",
    "make_empty",
    "make_hls_trap",
    "make_huge_dimensions",
    "make_image_as_video",
    "make_many_streams",
    "make_random_bytes",
    "make_text",
    "make_truncated",
    "make_truncated_faststart",
    "mp4_top_level_boxes",
]

# libavcodec's enum AVFieldOrder
AV_FIELD_PROGRESSIVE = 1
AV_FIELD_TT = 2

_CONTAINER_ALIASES = {"mkv": "matroska", "ts": "mpegts", "m4a": "mp4", "mpg": "mpeg"}
_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}
_SUBSAMPLED = ("420", "422", "411", "410", "nv12", "nv21", "yuyv", "uyvy")


# --------------------------------------------------------------------------- helpers


def channel_frequency(channel: int, name: str = "") -> float:
    """Tone frequency of audio channel number ``channel`` (330 Hz, 440 Hz, 550 Hz, ...).

    An ``LFE`` channel gets 60 Hz instead (encoders low-pass it).
    """
    return 60.0 if name == "LFE" else 330.0 + 110.0 * channel


def clockwise_rotation(frame_rotation: int) -> int:
    """PyAV's counter-clockwise ``VideoFrame.rotation`` as a clockwise 0/90/180/270."""
    return (-frame_rotation) % 360


@dataclass(frozen=True, slots=True)
class Box:
    """A top-level ISO-BMFF box: four-character ``kind``, byte ``offset`` and ``size``."""

    kind: str
    offset: int
    size: int


def mp4_top_level_boxes(path: Path) -> list[Box]:
    """The top-level boxes of an mp4/mov file (``ftyp``, ``moov``, ``mdat``, ...).

    Stops at the first box that runs past the end of the file (that box is
    still listed, with its declared size).
    """
    data = path.read_bytes()
    boxes: list[Box] = []
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        if size == 1 and pos + 16 <= len(data):
            size = int.from_bytes(data[pos + 8 : pos + 16], "big")
        elif size == 0:
            size = len(data) - pos
        if size < 8:
            break
        boxes.append(Box(kind, pos, size))
        pos += size
    return boxes


def _format_name(container: str) -> str:
    return _CONTAINER_ALIASES.get(container, container)


@functools.lru_cache(maxsize=8)
def _background(width: int, height: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    """A static diagonal gradient (int16 so noise can be added without wrapping)."""
    xs = np.linspace(0.0, 1.0, width)[None, :]
    ys = np.linspace(0.0, 1.0, height)[:, None]
    img = np.empty((height, width, 3), dtype=np.int16)
    img[..., 0] = (40 + 160 * xs + 0 * ys).astype(np.int16)
    img[..., 1] = (40 + 140 * ys + 0 * xs).astype(np.int16)
    img[..., 2] = (60 + 80 * (xs + ys) / 2).astype(np.int16)
    img.flags.writeable = False
    return img


def _picture(index: int, width: int, height: int, *, moving: bool) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """An rgb24 picture: gradient (scrolling when ``moving``), a bright square, per-frame noise."""
    img = _background(width, height)
    if moving:
        img = np.roll(img, index * 2, axis=1)
        # block noise (4x4), seeded by the frame index: changes every frame, cheap to encode
        rng = np.random.default_rng(index)
        noise = rng.integers(-6, 7, size=((height + 3) // 4, (width + 3) // 4, 1), dtype=np.int16)
        img = img + np.repeat(np.repeat(noise, 4, axis=0), 4, axis=1)[:height, :width]
    else:
        img = img.copy()
    side = max(2, min(width, height) // 4)
    span = max(1, width - side)
    x0 = (index * 4) % span if moving else span // 2
    y0 = max(0, (height - side) // 2)
    img[y0 : y0 + side, x0 : x0 + side, :] = 245
    return np.clip(img, 0, 255).astype(np.uint8)


def _tone(first_sample: int, samples: int, rate: int, layout: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    t = (np.arange(samples, dtype=np.float64) + first_sample) / rate
    names = [c.name for c in av.AudioLayout(layout).channels]
    rows = [0.25 * np.sin(2 * np.pi * channel_frequency(ch, name) * t) for ch, name in enumerate(names)]
    return np.stack(rows).astype(np.float32)


@dataclass(frozen=True, slots=True)
class _AudioSpec:
    codec: str
    channels: int
    layout: str
    rate: int
    start_s: float


@dataclass(frozen=True, slots=True)
class _VideoSpec:
    codec: str
    width: int
    height: int
    fps: Fraction
    pix_fmt: str
    rotation: int
    interlaced: bool
    vfr: bool
    sar: tuple[int, int] | None
    moving: bool
    options: dict[str, str]


def _audio_spec(codec: str, channels: int, layout: str | None, rate: int, start_s: float) -> _AudioSpec:
    if layout is None:
        if channels not in _DEFAULT_LAYOUTS:
            raise ValueError(f"no default layout for {channels} channels; pass audio_layout")
        layout = _DEFAULT_LAYOUTS[channels]
    n = len(av.AudioLayout(layout).channels)
    if n != channels:
        raise ValueError(f"layout {layout!r} has {n} channels, not {channels}")
    if start_s < 0:
        raise ValueError("audio_start_s must be >= 0")
    return _AudioSpec(codec, channels, layout, rate, start_s)


def _video_times(spec: _VideoSpec, seconds: float) -> list[Fraction]:
    """Presentation times of every video frame, in seconds."""
    period = 1 / spec.fps
    times: list[Fraction] = []
    t = Fraction(0)
    i = 0
    while t < Fraction(seconds).limit_denominator(1000) - Fraction(1, 10**6):
        times.append(t)
        # VFR: alternate 1/fps and 1.5/fps (1/30 and 1/20 s at 30 fps)
        t += period * (Fraction(3, 2) if spec.vfr and i % 2 else 1)
        i += 1
    return times


def _add_video(out: OutputContainer, spec: _VideoSpec) -> VideoStream:
    stream = out.add_stream(spec.codec, rate=spec.fps, options=dict(spec.options))
    if not isinstance(stream, VideoStream):
        raise ValueError(f"{spec.codec!r} is not a video encoder")
    stream.width = spec.width
    stream.height = spec.height
    stream.pix_fmt = spec.pix_fmt
    ctx = stream.codec_context
    ctx.gop_size = max(1, round(spec.fps))
    if spec.vfr:
        stream.time_base = Fraction(1, 90_000)
        ctx.time_base = Fraction(1, 90_000)
    else:
        ctx.time_base = 1 / spec.fps
    if spec.interlaced:
        flags = av.codec.context.Flags
        ctx.flags = ctx.flags | flags.interlaced_dct | flags.interlaced_me
        ctx.field_order = AV_FIELD_TT
    if spec.sar is not None:
        ctx.sample_aspect_ratio = Fraction(*spec.sar)
    if spec.rotation:
        # PyAV's degrees are counter-clockwise; ours are clockwise.
        stream.set_display_rotation(-spec.rotation)
    return stream


def _add_audio(out: OutputContainer, spec: _AudioSpec) -> AudioStream:
    options = {"aac_coder": "fast"} if spec.codec == "aac" else {}
    stream = out.add_stream(spec.codec, rate=spec.rate, layout=spec.layout, options=options)
    if not isinstance(stream, AudioStream):
        raise ValueError(f"{spec.codec!r} is not an audio encoder")
    return stream


class _AudioWriter:
    """Feeds one audio stream a tone, frame by frame, shifting packets to ``start_s``."""

    def __init__(self, out: OutputContainer, spec: _AudioSpec, end_s: float) -> None:
        self.out = out
        self.spec = spec
        self.stream = _add_audio(out, spec)
        self.first_sample = round(spec.start_s * spec.rate)
        self.last_sample = max(self.first_sample, round(end_s * spec.rate))
        self.next_sample = self.first_sample
        self._shift: int | None = None if spec.start_s > 0 else 0

    @property
    def frame_size(self) -> int:
        return self.stream.codec_context.frame_size or 1024

    @property
    def next_time(self) -> float:
        return self.next_sample / self.spec.rate

    @property
    def done(self) -> bool:
        return self.next_sample >= self.last_sample

    def write_next(self) -> None:
        n = min(self.frame_size, self.last_sample - self.next_sample)
        data = _tone(self.next_sample - self.first_sample, n, self.spec.rate, self.spec.layout)
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=self.spec.layout)
        frame.sample_rate = self.spec.rate
        frame.time_base = Fraction(1, self.spec.rate)
        frame.pts = self.next_sample
        self.next_sample += n
        self._mux(self.stream.encode(frame))

    def flush(self) -> None:
        self._mux(self.stream.encode(None))

    def _mux(self, packets: list[av.Packet[Any]]) -> None:
        for packet in packets:
            if packet.pts is None:
                continue
            if self._shift is None:
                # The encoder puts its priming delay before the first frame's pts;
                # shift so the stream's first packet is exactly at start_s.
                self._shift = round(self.spec.start_s / packet.time_base) - packet.pts
            packet.pts += self._shift
            if packet.dts is not None:
                packet.dts += self._shift
            self.out.mux(packet)


def _render(
    path: Path,
    *,
    video: _VideoSpec | None,
    audios: list[_AudioSpec],
    seconds: float,
    container: str,
    faststart: bool,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format=_format_name(container), options=options) as out:
        vstream = _add_video(out, video) if video is not None else None
        writers = [_AudioWriter(out, spec, seconds) for spec in audios]
        times = _video_times(video, seconds) if video is not None else []
        vi = 0
        while vi < len(times) or any(not w.done for w in writers):
            pending = [w for w in writers if not w.done]
            next_audio = min(pending, key=lambda w: w.next_time) if pending else None
            if vi < len(times) and (next_audio is None or float(times[vi]) <= next_audio.next_time):
                assert vstream is not None and video is not None
                _write_video_frame(out, vstream, video, vi, times[vi])
                vi += 1
            elif next_audio is not None:
                next_audio.write_next()
        if vstream is not None:
            out.mux(vstream.encode(None))
        for w in writers:
            w.flush()
    return path


def _write_video_frame(out: OutputContainer, stream: VideoStream, spec: _VideoSpec, index: int, t: Fraction) -> None:
    rgb = _picture(index, spec.width, spec.height, moving=spec.moving)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    if spec.pix_fmt != "rgb24":
        frame = frame.reformat(format=spec.pix_fmt)
    time_base = stream.codec_context.time_base
    assert time_base is not None
    frame.time_base = time_base
    frame.pts = round(t / time_base)
    out.mux(stream.encode(frame))


def _check_size(width: int, height: int, pix_fmt: str) -> None:
    if width < 2 or height < 2:
        raise ValueError("width and height must be >= 2")
    fmt = av.VideoFormat(pix_fmt)
    if (width % 2 or height % 2) and any(tag in fmt.name for tag in _SUBSAMPLED):
        raise ValueError(f"odd size {width}x{height} needs a non-subsampled pix_fmt such as yuv444p, not {pix_fmt}")


def _x264_options(codec: str, keyint: int | None = None) -> dict[str, str]:
    if codec != "libx264":
        return {}
    options = {"preset": "superfast"}  # keeps B-frames, unlike ultrafast
    if keyint is not None:
        options["x264-params"] = f"keyint={keyint}:min-keyint={keyint}:scenecut=0"
    return options


# --------------------------------------------------------------------------- real clips

ClipFactory = Callable[..., Path]
"""The ``clip`` fixture's type: ``clip(**make_clip_kwargs)`` returns a shared, read-only clip."""


def make_clip(
    path: Path,
    *,
    width: int = 320,
    height: int = 180,
    fps: Fraction | int = 30,
    seconds: float = 2.0,
    video_codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    container: str = "mp4",
    audio: bool = True,
    audio_channels: int = 2,
    audio_layout: str | None = None,
    audio_rate: int = 48000,
    audio_start_s: float = 0.0,
    rotation: int = 0,
    interlaced: bool = False,
    vfr: bool = False,
    sar: tuple[int, int] | None = None,
    moving: bool = True,
    audio_codec: str = "aac",
    faststart: bool = False,
    keyint: int | None = None,
) -> Path:
    """A real clip: ``video_codec`` video (+ ``audio_codec`` tone unless ``audio=False``).

    ``container`` is an FFmpeg muxer name (``mp4``, ``mov``, ``matroska``,
    ``mpegts``, ...; ``mkv``/``ts`` accepted). mp4/mov are written moov-at-end
    unless ``faststart``. ``vfr`` uses a 1/90000 time base with frame durations
    alternating 1/fps and 1.5/fps (average 0.8*fps). ``sar`` is the sample
    (pixel) aspect ratio, e.g. ``(4, 3)``. ``rotation`` is clockwise, one of
    0/90/180/270; mp4, mov and Matroska keep it, MPEG-TS drops it. Odd sizes
    need a non-subsampled ``pix_fmt`` (``yuv444p``).
    Audio runs from ``audio_start_s`` to ``seconds``. ``keyint`` (libx264): a keyframe every that
    many frames exactly, and none elsewhere.
    """
    if rotation not in (0, 90, 180, 270):
        raise ValueError("rotation must be 0, 90, 180 or 270")
    if not 0 < seconds <= 30:
        raise ValueError("seconds must be in (0, 30]")
    if audio and audio_start_s >= seconds:
        raise ValueError("audio_start_s must be before the end of the clip")
    _check_size(width, height, pix_fmt)
    video = _VideoSpec(
        codec=video_codec,
        width=width,
        height=height,
        fps=Fraction(fps),
        pix_fmt=pix_fmt,
        rotation=rotation,
        interlaced=interlaced,
        vfr=vfr,
        sar=sar,
        moving=moving,
        options=_x264_options(video_codec, keyint),
    )
    audios = [_audio_spec(audio_codec, audio_channels, audio_layout, audio_rate, audio_start_s)] if audio else []
    return _render(path, video=video, audios=audios, seconds=seconds, container=container, faststart=faststart)


def make_audio_only(
    path: Path,
    *,
    seconds: float = 2.0,
    channels: int = 2,
    layout: str | None = None,
    rate: int = 48000,
    codec: str = "aac",
    container: str = "mp4",
) -> Path:
    """An audio-only file (AAC stereo tone in an mp4/m4a by default), no video stream."""
    spec = _audio_spec(codec, channels, layout, rate, 0.0)
    return _render(path, video=None, audios=[spec], seconds=seconds, container=container, faststart=False)


def make_many_streams(path: Path, n: int = 40, *, seconds: float = 1.0, container: str = "matroska") -> Path:
    """One 320x180 video stream plus ``n`` tiny mono 16 kHz AAC streams (Matroska by default)."""
    video = _VideoSpec(
        codec="libx264",
        width=320,
        height=180,
        fps=Fraction(30),
        pix_fmt="yuv420p",
        rotation=0,
        interlaced=False,
        vfr=False,
        sar=None,
        moving=True,
        options={"preset": "ultrafast"},
    )
    audios = [_audio_spec("aac", 1, None, 16000, 0.0) for _ in range(n)]
    return _render(path, video=video, audios=audios, seconds=seconds, container=container, faststart=False)


def make_huge_dimensions(path: Path, *, width: int = 8200, height: int = 16, frames: int = 3) -> Path:
    """A valid, decodable H.264 mp4 whose picture is absurdly wide: 8200x16 by default.

    A file whose *headers* lie about its size cannot be made with an encoder;
    this is instead a legitimate clip that is large per the engine's limits
    (wider than the default ``Limits.max_width`` of 8192, yet only 131k
    pixels, so it is made in well under a second). Tests that need it rejected
    by pixel count or height configure ``Limits`` lower. Pass ``width=16,
    height=8200`` for the tall variant.
    """
    if width % 2 or height % 2:
        raise ValueError("width and height must be even")
    video = _VideoSpec(
        codec="libx264",
        width=width,
        height=height,
        fps=Fraction(30),
        pix_fmt="yuv420p",
        rotation=0,
        interlaced=False,
        vfr=False,
        sar=None,
        moving=True,
        options={"preset": "ultrafast"},
    )
    return _render(path, video=video, audios=[], seconds=frames / 30, container="mp4", faststart=False)


# --------------------------------------------------------------------------- hostile / broken inputs


def make_empty(path: Path) -> Path:
    """A zero-byte file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def make_random_bytes(path: Path, n: int = 64_000, seed: int = 1) -> Path:
    """``n`` pseudo-random bytes (deterministic for a given ``seed``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(n))
    return path


def make_text(path: Path) -> Path:
    """A plain UTF-8 text file (whatever the name says)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = "This is a plain text file, not a video. Nothing to transcode here.\n"
    path.write_text(line * 200, encoding="utf-8")
    return path


def make_image_as_video(path: Path, *, codec: str = "png", width: int = 320, height: int = 180) -> Path:
    """A single still image (PNG by default, or ``codec="mjpeg"`` for a JPEG) under ``path``.

    Typically called with an ``x.mp4`` name; FFmpeg probes it as
    ``png_pipe``/``jpeg_pipe`` with one video frame.
    """
    if codec not in ("png", "mjpeg"):
        raise ValueError("codec must be 'png' or 'mjpeg'")
    pix_fmt = "rgb24" if codec == "png" else "yuvj420p"
    ctx = av.CodecContext.create(codec, "w")
    if not isinstance(ctx, av.VideoCodecContext):
        raise TypeError(codec)
    ctx.width = width
    ctx.height = height
    ctx.pix_fmt = pix_fmt
    ctx.time_base = Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(_picture(0, width, height, moving=True), format="rgb24")
    if pix_fmt != "rgb24":
        frame = frame.reformat(format=pix_fmt)
    frame.pts = 0
    data = b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_truncated(path: Path, src: Path, keep_fraction: float = 0.5) -> Path:
    """The first ``keep_fraction`` of ``src``'s bytes.

    With a moov-at-end mp4 (``make_clip``'s default) the cut loses the index:
    the result cannot be opened ("moov atom not found").
    """
    if not 0 <= keep_fraction <= 1:
        raise ValueError("keep_fraction must be within [0, 1]")
    data = src.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


def make_truncated_faststart(path: Path, src: Path | None = None, keep_fraction: float = 0.5) -> Path:
    """A faststart mp4 whose ``moov`` survives but whose ``mdat`` is cut.

    ``keep_fraction`` is the part of the ``mdat`` payload kept. Without
    ``src`` a default faststart clip is made (in a temporary directory).
    The result opens and probes fine; decoding runs out of data part way.
    """
    if not 0 <= keep_fraction < 1:
        raise ValueError("keep_fraction must be within [0, 1)")
    if src is None:
        with tempfile.TemporaryDirectory() as tmp:
            source = make_clip(Path(tmp) / "faststart.mp4", faststart=True)
            return make_truncated_faststart(path, source, keep_fraction)
    boxes = {b.kind: b for b in mp4_top_level_boxes(src)}
    if "moov" not in boxes or "mdat" not in boxes or boxes["moov"].offset > boxes["mdat"].offset:
        raise ValueError(f"{src} is not a faststart mp4 (moov must precede mdat)")
    mdat = boxes["mdat"]
    cut = mdat.offset + 8 + int((mdat.size - 8) * keep_fraction)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(src.read_bytes()[:cut])
    return path


def _iter_hls_lines(canary_url: str, secret_file: Path) -> Iterator[str]:
    yield "#EXTM3U"
    yield "#EXT-X-VERSION:3"
    yield "#EXT-X-TARGETDURATION:1"
    yield "#EXT-X-MEDIA-SEQUENCE:0"
    yield "#EXTINF:1,"
    yield f"{canary_url.rstrip('/')}/seg.ts"
    yield "#EXTINF:1,"
    yield f"file://{secret_file.resolve()}"
    yield "#EXT-X-ENDLIST"


def make_hls_trap(path: Path, canary_url: str, secret_file: Path) -> Path:
    """A text HLS playlist (under e.g. a ``.mp4`` name) pointing at the canary and a local file.

    A demuxer that follows it fetches ``<canary_url>/seg.ts`` and reads
    ``file://<secret_file>``. FFmpeg 8 does not probe it as HLS under a
    non-playlist name, and with ``format="hls"`` its own protections (protocol
    whitelist, segment extension checks) still stop it; only with those
    switched off does it reach the canary.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(_iter_hls_lines(canary_url, secret_file)) + "\n", encoding="utf-8")
    return path


def make_concat_trap(path: Path, canary_url: str, secret_file: Path) -> Path:
    """An ffconcat script (under e.g. a ``.avi`` name) listing a local file, then the canary.

    FFmpeg probes it as ``concat`` whatever its name; its default ``safe=1``
    refuses the absolute path (EPERM). With ``safe=0`` and http allowed it
    opens ``secret_file`` and, once past it, ``<canary_url>/x.mp4``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = f"ffconcat version 1.0\nfile '{secret_file.resolve()}'\nfile '{canary_url.rstrip('/')}/x.mp4'\n"
    path.write_text(text, encoding="utf-8")
    return path
