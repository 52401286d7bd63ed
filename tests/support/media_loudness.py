"""Speech-like clips of known loudness, and an EBU R128 meter that is not the engine's.

:func:`speech_like` makes a signal with the shape of a lecture: voiced
syllables (a harmonic series on a gliding pitch) and unvoiced ones (noise),
four to five a second, grouped into phrases with pauses of true silence
between them. :func:`make_speech_clip` scales it to a given integrated
loudness, as FFmpeg's ``ebur128`` filter measures it, and writes it with a
tiny H.264 picture. :func:`measure` reads any file or playlist FFmpeg opens
and returns what the ``ebur128`` filter reports (the imageio-ffmpeg binary,
never the engine's own meter).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import imageio_ffmpeg
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

__all__ = ["Loudness", "make_speech_clip", "measure", "measure_samples", "speech_like"]

RATE = 48000
Samples = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Loudness:
    """FFmpeg's ebur128 summary: integrated loudness (LUFS) and true peak (dBTP)."""

    integrated_lufs: float
    true_peak_dbtp: float


def speech_like(seconds: float, *, channels: int = 1, seed: int = 0) -> Samples:
    """``channels`` x samples of speech-like float audio at 48 kHz, peak 0.5.

    Phrases of 0.8-2 s separated by 0.25-0.6 s of digital silence; inside a
    phrase, syllables of 0.12-0.3 s with raised-cosine envelopes, most voiced
    (harmonics of a pitch gliding between 100 and 220 Hz, falling 1.5 dB per
    octave), some unvoiced (white noise). Stereo gets a slightly different
    mix per channel, as two microphones would.
    """
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    out = np.zeros(n, dtype=np.float64)
    t = 0.15  # a short lead-in of silence
    while t < seconds:
        phrase_end = min(seconds, t + rng.uniform(0.8, 2.0))
        while t < phrase_end:
            length = rng.uniform(0.12, 0.3)
            a, b = round(t * RATE), min(n, round((t + length) * RATE))
            if b - a < 16:
                break
            out[a:b] += _syllable(b - a, rng) * rng.uniform(0.85, 1.0)
            t += length + rng.uniform(0.0, 0.06)
        t = phrase_end + rng.uniform(0.25, 0.6)
    rows = [out]
    if channels == 2:
        rows = [out, 0.85 * out + 0.15 * np.roll(out, 240)]
    elif channels != 1:
        raise ValueError("mono or stereo only")
    signal = np.stack(rows)
    scaled: Samples = (signal * (0.5 / np.abs(signal).max())).astype(np.float32)
    return scaled


def _syllable(samples: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    # A flat-topped envelope and Schroeder phases keep the crest factor low
    # enough for -12 LUFS to fit under -1 dBFS (speech itself is peakier).
    envelope = np.clip(3.0 * np.sin(np.linspace(0.0, np.pi, samples)), 0.0, 1.0)
    if rng.random() < 0.2:  # unvoiced: a fricative's noise
        return envelope * rng.uniform(-1.0, 1.0, samples)
    f0 = np.linspace(rng.uniform(100, 220), rng.uniform(100, 220), samples)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voiced = np.zeros(samples)
    harmonics = [k for k in range(1, 30) if k * f0.max() <= 4000]
    for k in harmonics:
        voiced += np.sin(k * phase + np.pi * k * (k - 1) / len(harmonics)) / k**0.25
    return envelope * voiced


def measure_samples(samples: Samples) -> Loudness:
    """The ebur128 summary of ``channels`` x samples of float audio at 48 kHz."""
    raw = np.ascontiguousarray(samples.T, dtype="<f4").tobytes()
    args = ["-f", "f32le", "-ar", str(RATE), "-ac", str(samples.shape[0]), "-i", "pipe:0"]
    return _ebur128(args, stdin=raw)


def measure(path: Path) -> Loudness:
    """The ebur128 summary of the first audio stream of ``path`` (a file or an HLS playlist)."""
    return _ebur128(["-i", str(path), "-map", "0:a:0"])


def _ebur128(input_args: list[str], stdin: bytes | None = None) -> Loudness:
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    cmd = [ffmpeg, "-hide_banner", "-nostats", *input_args, "-af", "ebur128=peak=true", "-f", "null", "-"]
    done = subprocess.run(cmd, input=stdin, capture_output=True, check=True)
    log = done.stderr.decode(errors="replace")
    summary = log[log.rindex("Summary:") :]
    integrated = re.search(r"I:\s+(-?[\d.]+|-inf) LUFS", summary)
    peak = re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary)
    if integrated is None or peak is None:
        raise AssertionError(f"no ebur128 summary in:\n{summary}")
    return Loudness(float(integrated.group(1)), float(peak.group(1)))


def make_speech_clip(
    path: Path,
    *,
    lufs: float | None,
    seconds: float = 5.0,
    channels: int = 2,
    seed: int = 0,
    clicks: bool = False,
    width: int = 128,
    height: int = 72,
    fps: int = 10,
) -> Path:
    """A clip of ``seconds`` of tiny video and speech-like AAC audio at ``lufs``.

    ``lufs`` is the integrated loudness of the audio before AAC encoding, as
    ebur128 measures it; None makes the audio digital silence. ``clicks``
    adds a one-sample click every 0.37 s, 12 dB above the speech's peaks (a
    crest factor no gain can pass without a limiter). Measure the
    written file with :func:`measure` where the exact value matters (AAC moves
    it by a few hundredths of a LU). Clips under 4 s are cut from a 4 s signal
    at that loudness. Raises ValueError if that loudness would
    need peaks above -1 dBFS.
    """
    samples = np.zeros((channels, round(seconds * RATE)), dtype=np.float32)
    if lufs is not None:
        # Levelled on at least 4 s, then cut: a clip shorter than a 400 ms
        # block has no loudness of its own.
        speech = speech_like(max(seconds, 4.0), channels=channels, seed=seed)
        if clicks:
            speech = speech * np.float32(10 ** (-12 / 20))
            speech[:, 9000 :: round(0.37 * RATE)] = 0.5 * (-1) ** np.arange(speech[0, 9000 :: round(0.37 * RATE)].size)
        gain = 10 ** ((lufs - measure_samples(speech).integrated_lufs) / 20)
        samples = (speech * gain).astype(np.float32)[:, : samples.shape[1]]
        if np.abs(samples).max() > 10 ** (-1 / 20):
            raise ValueError(f"{lufs} LUFS needs peaks above -1 dBFS")
    _write(path, samples, width=width, height=height, fps=fps)
    return path


def _write(path: Path, samples: Samples, *, width: int, height: int, fps: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    total = samples.shape[1]
    frames = round(total / RATE * fps)
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        assert isinstance(video, VideoStream)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, fps)
        audio = out.add_stream("aac", rate=RATE, layout=layout)
        assert isinstance(audio, AudioStream)
        audio.bit_rate = 192_000

        def mux(packets: list[av.Packet[Any]]) -> None:
            for packet in packets:
                out.mux(packet)

        index, sample = 0, 0
        while index < frames or sample < total:
            if index < frames and (sample >= total or index / fps <= sample / RATE):
                level = 40 + (index * 7) % 160
                picture = np.full((height, width, 3), level, dtype=np.uint8)
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="yuv420p")
                frame.pts = index
                frame.time_base = Fraction(1, fps)
                mux(video.encode(frame))
                index += 1
            else:
                n = min(1024, total - sample)
                chunk = np.ascontiguousarray(samples[:, sample : sample + n])
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
                aframe.sample_rate = RATE
                aframe.pts = sample
                aframe.time_base = Fraction(1, RATE)
                mux(audio.encode(aframe))
                sample += n
        mux(video.encode(None))
        mux(audio.encode(None))
