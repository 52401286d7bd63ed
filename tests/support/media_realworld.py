"""Real-world upload shapes the engine already handles, made on the spot.

Each maker writes one small file and returns its path. Container features
PyAV cannot write (an attached cover picture, a byte-level concatenation of
two MPEG-TS recordings, timestamps near the 33-bit wrap) come from the
``imageio-ffmpeg`` binary, run with ``-c copy`` so the media itself is still
made by :mod:`tests.support.media`.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import av
import imageio_ffmpeg
import numpy as np
from av.audio.stream import AudioStream

from tests.support.media import make_clip

__all__ = [
    "TS_WRAP_S",
    "ffmpeg",
    "make_corrupt_middle",
    "make_cover_picture_clip",
    "make_resolution_change",
    "make_timestamp_bomb",
    "make_ts_wrap",
    "make_two_audio_tracks",
]

#: MPEG-TS timestamps are 33-bit 90 kHz counters: they wrap after this many seconds.
TS_WRAP_S = Fraction(2**33, 90_000)


def ffmpeg(*args: str) -> None:
    """Run the imageio-ffmpeg binary quietly; raise with its stderr on failure."""
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    done = subprocess.run([exe, "-nostdin", "-loglevel", "error", "-y", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {done.stderr.strip()}")


def make_two_audio_tracks(
    path: Path, *, frequencies: tuple[float, float], default_track: int, seconds: float = 1.0
) -> Path:
    """Video plus two mono sine tracks at ``frequencies``; only ``default_track`` (0 or 1) is marked default.

    The video is copied from a :func:`~tests.support.media.make_clip` clip without audio.
    """
    video = make_clip(path.with_name(path.stem + "-video.mp4"), seconds=seconds, audio=False)
    rate = 48_000
    with av.open(str(video)) as src, av.open(str(path), "w") as out:
        vin = src.streams.video[0]
        vout = out.add_stream_from_template(vin)
        tracks: list[AudioStream] = []
        for index in range(2):
            stream = out.add_stream("aac", rate=rate, layout="mono")
            assert isinstance(stream, AudioStream)
            stream.disposition = av.stream.Disposition.default if index == default_track else av.stream.Disposition(0)
            tracks.append(stream)
        for packet in src.demux(vin):
            if packet.dts is None:
                continue
            packet.stream = vout
            out.mux(packet)
        total = round(seconds * rate)
        for stream, frequency in zip(tracks, frequencies, strict=True):
            for start in range(0, total, 1024):
                n = min(1024, total - start)
                t = (np.arange(n) + start) / rate
                tone = (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)[None, :]
                frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                frame.sample_rate = rate
                frame.pts = start
                frame.time_base = Fraction(1, rate)
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
    return path


def make_cover_picture_clip(path: Path, *, cover_size: int = 600, seconds: float = 1.0) -> Path:
    """A clip with a square PNG cover picture besides its 320x180 video.

    In mp4 the cover is an attached picture (listed after the tracks); in
    Matroska (``.mkv``) it is a one-frame PNG track placed *before* the video,
    not marked default: a reader that takes the first video stream gets the
    cover.
    """
    clip = make_clip(path.with_name(path.stem + "-clip.mp4"), seconds=seconds)
    still = make_clip(
        path.with_name(path.stem + "-still.mp4"),
        width=cover_size,
        height=cover_size,
        seconds=0.1,
        audio=False,
        moving=False,
    )
    cover = path.with_name(path.stem + "-cover.png")
    ffmpeg("-i", str(still), "-frames:v", "1", str(cover))
    ffmpeg(
        "-i", str(cover), "-i", str(clip), "-map", "0", "-map", "1", "-c", "copy",
        "-disposition:v:0", "attached_pic", str(path),
    )  # fmt: skip
    return path


def make_resolution_change(
    path: Path, *, first: tuple[int, int], second: tuple[int, int], seconds: float = 1.0
) -> Path:
    """An MPEG-TS recording whose picture size changes from ``first`` to ``second`` halfway.

    Two clips, the second shifted to start where the first ends, concatenated
    byte for byte (as a capture device that renegotiates its size writes them).
    """
    parts: list[bytes] = []
    end_s = 0.0
    for index, (width, height) in enumerate((first, second)):
        clip = make_clip(path.with_name(f"{path.stem}-{index}.mp4"), width=width, height=height, seconds=seconds)
        part = path.with_name(f"{path.stem}-{index}.ts")
        ffmpeg("-i", str(clip), "-c", "copy", str(part))
        if index:
            # Shift the second part so its first frame follows the first
            # part's last one exactly (the muxer adds a start delay of its own).
            # The offset does not add up exactly (the muxer's start delay
            # changes with it), so correct it once by what was measured.
            offset_s = 0.0
            for _attempt in range(3):
                start_s, _ = _video_span_s(part)
                if abs(start_s - end_s) < 1e-3:
                    break
                offset_s += end_s - start_s
                ffmpeg("-i", str(clip), "-c", "copy", "-output_ts_offset", f"{offset_s:.6f}", str(part))
        parts.append(part.read_bytes())
        end_s = _video_span_s(part)[1]
    path.write_bytes(b"".join(parts))
    return path


def _video_span_s(path: Path) -> tuple[float, float]:
    """First presentation time and end of the last frame of a file's video, in seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [(p.pts, p.duration or 0) for p in container.demux(stream) if p.size and p.pts is not None]
        assert stream.time_base is not None
        start = min(pts for pts, _ in times)
        end = max(pts + duration for pts, duration in times)
        return float(start * stream.time_base), float(end * stream.time_base)


def make_ts_wrap(path: Path, *, seconds: float = 2.0, before_wrap_s: float = 0.5) -> Path:
    """An MPEG-TS clip whose timestamps wrap past 2**33 ticks ``before_wrap_s`` seconds in."""
    clip = make_clip(path.with_name(path.stem + "-clip.mp4"), seconds=seconds)
    offset = float(TS_WRAP_S) - before_wrap_s
    ffmpeg("-i", str(clip), "-c", "copy", "-output_ts_offset", f"{offset:.6f}", str(path))
    return path


def make_corrupt_middle(path: Path, src: Path, *, seed: int = 7, fraction: float = 0.02) -> Path:
    """``src`` with ``fraction`` of its bytes, in the middle third, replaced by random bytes.

    The container's index stays intact (for mp4 the moov box is not touched):
    only coded pictures and sound are damaged.
    """
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    start, stop = len(data) // 3, 2 * len(data) // 3
    count = max(1, min(int(len(data) * fraction), stop - start))
    at = int(rng.integers(start, stop - count + 1))
    data[at : at + count] = rng.integers(0, 256, size=count, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def make_timestamp_bomb(path: Path, *, hours: float = 7.0) -> Path:
    """Two small frames, the second stamped ``hours`` after the first: a tiny file declaring a huge duration."""
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for index, pts in enumerate((0, round(hours * 3600 * 1000))):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 40 * index, dtype=np.uint8), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
