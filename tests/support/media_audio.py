"""Clips whose audio and video streams have different lengths, made with PyAV.

:func:`tests.support.media.make_clip` ends both streams together; a lecture recorded
on a camera that stopped while the microphone went on (or the converse) needs
them apart. The picture and the tone are the ones of :mod:`tests.support.media`, so the
same measuring helpers apply: the picture moves every frame (a held frame is
recognisable), the tone is 330 Hz left and 440 Hz right.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from tests.support.media import _picture, _tone

__all__ = ["make_av_clip"]

_RATE = 48000
_LAYOUT = "stereo"


def make_av_clip(
    path: Path,
    *,
    video_s: float,
    audio_s: float,
    width: int = 320,
    height: int = 180,
    fps: int = 30,
    container: str = "mp4",
) -> Path:
    """A clip with ``video_s`` seconds of H.264 video and ``audio_s`` seconds of AAC tone.

    Both streams start at 0. The video has ``round(video_s * fps)`` frames, the
    audio ``round(audio_s * 48000)`` samples from 0 (the encoder's priming is
    hidden by an edit list, as cameras write it). Packets are interleaved by
    time.
    """
    if video_s <= 0 or audio_s <= 0:
        raise ValueError("both streams need a positive length")
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = round(video_s * fps)
    samples = round(audio_s * _RATE)
    with av.open(str(path), "w", format=container) as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "superfast"})
        assert isinstance(video, VideoStream)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, fps)
        video.codec_context.gop_size = fps
        audio = out.add_stream("aac", rate=_RATE, layout=_LAYOUT, options={"aac_coder": "fast"})
        assert isinstance(audio, AudioStream)

        def mux_audio(packets: list[av.Packet[Any]]) -> None:
            # The priming packet keeps its negative pts: the mp4 muxer writes
            # an edit list, so the stream decodes to exactly ``samples``.
            for packet in packets:
                out.mux(packet)

        frame_index, sample = 0, 0
        while frame_index < frames or sample < samples:
            video_due = frame_index < frames and (sample >= samples or frame_index / fps <= sample / _RATE)
            if video_due:
                rgb = _picture(frame_index, width, height, moving=True)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
                frame.time_base = Fraction(1, fps)
                frame.pts = frame_index
                out.mux(video.encode(frame))
                frame_index += 1
            else:
                n = min(1024, samples - sample)
                aframe = av.AudioFrame.from_ndarray(_tone(sample, n, _RATE, _LAYOUT), format="fltp", layout=_LAYOUT)
                aframe.sample_rate = _RATE
                aframe.time_base = Fraction(1, _RATE)
                aframe.pts = sample
                mux_audio(audio.encode(aframe))
                sample += n
        out.mux(video.encode(None))
        mux_audio(audio.encode(None))
    return path
