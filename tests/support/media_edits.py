"""Media for the edit-list tests: a clip whose frames say who they are, and trims of it.

:func:`make_marked_clip` writes a clip in which

* every frame carries its own index as a row of black/white blocks along the
  top (bit ``i`` of the index is block ``i``, least significant on the left),
  readable back after scaling and lossy coding with :func:`read_marker`;
* one frame, at ``flash_s``, is a white flash below the marker row
  (:func:`is_flash`), and
* the audio is silent until ``flash_s``, then a tone: the onset of the tone
  and the flash mark the same instant, so A/V sync can be measured in the
  output within a fraction of a frame.

:func:`trim` cuts such a clip without re-encoding (``ffmpeg -ss X -c copy``),
which writes an edit list hiding the frames between the keyframe before ``X``
and ``X``: they stay in the file and must be decoded but not shown.
:func:`cut_mdat` then cuts the bytes of a file whose index comes first, like
an interrupted upload.
"""

from __future__ import annotations

import struct
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
import numpy.typing as npt

from tests.support.media import mp4_top_level_boxes

__all__ = [
    "MARKER_BITS",
    "cut_mdat",
    "end_edit_early",
    "ffmpeg",
    "is_flash",
    "make_marked_clip",
    "read_marker",
    "trim",
]

MARKER_BITS = 8
_DARK, _BRIGHT, _GREY = 16, 235, 96
_TONE_HZ = 1000.0


def ffmpeg(*args: str) -> None:
    """Run the imageio-ffmpeg binary quietly; raise with its stderr on failure."""
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    done = subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-y", *args], capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")


def _luma(index: int, width: int, height: int, *, flash: bool) -> npt.NDArray[np.uint8]:
    img = np.full((height, width), _GREY, dtype=np.uint8)
    block_w, block_h = width // MARKER_BITS, height // 3
    for bit in range(MARKER_BITS):
        img[:block_h, bit * block_w : (bit + 1) * block_w] = _BRIGHT if index >> bit & 1 else _DARK
    if flash:
        img[block_h:, :] = _BRIGHT
    return img


def read_marker(frame: av.VideoFrame) -> int:
    """The frame index drawn by :func:`make_marked_clip`, read from the luma plane at any size."""
    luma = frame.to_ndarray(format="gray")
    height, width = luma.shape
    block_w, block_h = width / MARKER_BITS, height / 3
    value = 0
    for bit in range(MARKER_BITS):
        # The middle half of each block: away from edges that scaling and coding blur.
        x0, x1 = round((bit + 0.25) * block_w), round((bit + 0.75) * block_w)
        y0, y1 = round(0.25 * block_h), round(0.75 * block_h)
        if float(luma[y0:y1, x0:x1].mean()) > (_DARK + _BRIGHT) / 2:
            value |= 1 << bit
    return value


def is_flash(frame: av.VideoFrame) -> bool:
    """Whether ``frame`` is the white flash (the area below the marker row is bright)."""
    luma = frame.to_ndarray(format="gray")
    below = luma[luma.shape[0] // 2 :, :]
    return float(below.mean()) > (_GREY + _BRIGHT) / 2


def make_marked_clip(
    path: Path,
    *,
    seconds: float = 2.0,
    fps: int = 30,
    flash_s: float = 1.0,
    gop_frames: int = 30,
    width: int = 320,
    height: int = 180,
    audio_rate: int = 48000,
) -> Path:
    """An H.264 + AAC clip (mp4 or mov, from ``path``'s suffix) with markers, a flash and a tone.

    Keyframes every ``gop_frames`` frames exactly (no scene-cut keyframes), B-frames
    on, so a trim between keyframes needs hidden frames decoded. The flash is frame
    ``round(flash_s * fps)``; the tone starts at the same instant and lasts to the end.
    """
    flash_index = round(flash_s * fps)
    frames = round(seconds * fps)
    if not 0 < flash_index < frames:
        raise ValueError("flash_s must fall inside the clip")
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "mov" if path.suffix == ".mov" else "mp4"
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream(
            "libx264",
            rate=fps,
            options={"preset": "superfast", "x264-params": f"keyint={gop_frames}:min-keyint={gop_frames}:scenecut=0"},
        )
        assert isinstance(video, av.video.stream.VideoStream)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, fps)
        audio = out.add_stream("aac", rate=audio_rate, layout="stereo")
        assert isinstance(audio, av.audio.stream.AudioStream)
        total_samples = round(seconds * audio_rate)
        onset = round(flash_s * audio_rate)
        t = np.arange(total_samples, dtype=np.float64)
        wave = np.where(t >= onset, 0.3 * np.sin(2 * np.pi * _TONE_HZ * (t - onset) / audio_rate), 0.0)
        pcm = np.stack([wave, wave]).astype(np.float32)
        next_sample = 0
        for index in range(frames):
            gray = _luma(index, width, height, flash=index == flash_index)
            frame = av.VideoFrame.from_ndarray(gray, format="gray").reformat(format="yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            out.mux(video.encode(frame))
            # Keep the interleaving close: audio up to the end of this video frame.
            until = min(total_samples, round((index + 1) * audio_rate / fps))
            while next_sample + 1024 <= until or (index == frames - 1 and next_sample < total_samples):
                n = min(1024, total_samples - next_sample)
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(pcm[:, next_sample : next_sample + n]), format="fltp", layout="stereo"
                )
                chunk.sample_rate, chunk.pts, chunk.time_base = audio_rate, next_sample, Fraction(1, audio_rate)
                next_sample += n
                out.mux(audio.encode(chunk))
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    return path


def trim(path: Path, src: Path, start_s: float, *, extra: tuple[str, ...] = ()) -> Path:
    """``ffmpeg -ss start_s -i src -c copy path``: a trim without re-encoding (an edit list)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg("-ss", f"{start_s:.3f}", "-i", str(src), "-c", "copy", *extra, str(path))
    return path


def _children(data: bytes | bytearray, start: int, end: int) -> list[tuple[str, int, int]]:
    """Boxes between ``start`` and ``end`` as ``(type, offset, size)`` (32-bit sizes only)."""
    boxes = []
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size < 8 or pos + size > end:
            raise ValueError(f"bad box at {pos}")
        boxes.append((kind.decode("latin-1"), pos, size))
        pos += size
    return boxes


def end_edit_early(path: Path, src: Path, show_s: float) -> Path:
    """``src`` with its video edit shortened to ``show_s`` seconds (a trim of the end, too).

    Rewrites the ``segment_duration`` of the video track's single-entry,
    version-0 ``elst`` in place, as QuickTime does when it trims both ends
    without re-encoding: the frames after the edit stay in the file, hidden.
    """
    data = bytearray(src.read_bytes())
    moov = next(b for b in _children(data, 0, len(data)) if b[0] == "moov")
    inside = _children(data, moov[1] + 8, moov[1] + moov[2])
    mvhd = next(b for b in inside if b[0] == "mvhd")
    (timescale,) = struct.unpack_from(">I", data, mvhd[1] + 8 + 4 + 8)  # version 0: after the two times
    for _, trak, trak_size in (b for b in inside if b[0] == "trak"):
        parts = {k: (o, n) for k, o, n in _children(data, trak + 8, trak + trak_size)}
        mdia = {k: (o, n) for k, o, n in _children(data, parts["mdia"][0] + 8, sum(parts["mdia"]))}
        if data[mdia["hdlr"][0] + 16 : mdia["hdlr"][0] + 20] != b"vide" or "edts" not in parts:
            continue
        edts = parts["edts"]
        _, elst, _ = next(b for b in _children(data, edts[0] + 8, sum(edts)) if b[0] == "elst")
        version, count = data[elst + 8], struct.unpack_from(">I", data, elst + 12)[0]
        if version != 0 or count != 1:
            raise ValueError(f"{src}: expected one version-0 edit, got version {version} with {count}")
        struct.pack_into(">I", data, elst + 16, round(show_s * timescale))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(data))
        return path
    raise ValueError(f"{src} has no edited video track")


def cut_mdat(path: Path, src: Path, keep_fraction: float) -> Path:
    """``src`` (index before data, ``-movflags +faststart``) with its ``mdat`` cut to ``keep_fraction``."""
    boxes = {b.kind: b for b in mp4_top_level_boxes(src)}
    if boxes["moov"].offset > boxes["mdat"].offset:
        raise ValueError(f"{src} has its index after the data; cutting it would lose the index")
    mdat = boxes["mdat"]
    cut = mdat.offset + 8 + int((mdat.size - 8) * keep_fraction)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(src.read_bytes()[:cut])
    return path
