"""Audio: decoded once, resampled once to stereo 48 kHz, encoded once per plan.

Every video variant plays the same audio rendition (an ``EXT-X-MEDIA`` group),
so the audio is encoded and segmented once for the whole ladder, not once per
rung. The output timeline starts at the first video frame: audio that starts
later is preceded by silence, audio that starts earlier is trimmed, and gaps or
overlaps of more than ``_SYNC_TOLERANCE_S`` inside the stream are filled with
silence or dropped, so audio never drifts from the video. The timeline ends
where the longer stream ends: audio that stops before the video is followed by
silence (:meth:`AudioEncoder.finish`); audio that goes on is kept whole, the
video holding its last frame.

Between the resampler and the encoders, the 48 kHz stereo samples go through
:class:`~transcoder.loudness.LoudnessNormaliser` when the plan has a loudness
target: the same samples, delayed by its look-ahead, with a slow gain and a
true-peak limiter. Timing is counted on the resampler's side, so the
normaliser changes no timestamp and no sample count.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

from .errors import MediaError
from .loudness import LoudnessNormaliser
from .models import AudioPlan, LoudnessResult
from .segmenter import HlsSegmenter

_SYNC_TOLERANCE_S = Fraction(40, 1000)
_AAC_FRAME = 1024


class AudioEncoder:
    """Resamples decoded audio and encodes it for every :class:`AudioPlan`.

    ``segmenters`` maps plan name to that plan's segmenter (one rendition
    each). One owner thread.
    """

    def __init__(self, plans: tuple[AudioPlan, ...], segmenters: dict[str, HlsSegmenter]) -> None:
        if not plans:
            raise ValueError("AudioEncoder needs at least one plan")
        self.plans = plans
        self.rate = plans[0].sample_rate
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=self.rate, frame_size=_AAC_FRAME)
        self._streams: list[tuple[AudioPlan, HlsSegmenter, av.audio.stream.AudioStream]] = []
        for plan in plans:
            segmenter = segmenters[plan.name]
            stream = segmenter.container.add_stream("aac", rate=plan.sample_rate, layout="stereo")
            stream.bit_rate = plan.bitrate_kbps * 1000
            stream.codec_context.time_base = Fraction(1, plan.sample_rate)
            self._streams.append((plan, segmenter, stream))
        self.samples_out = 0  # at the output rate, silence included
        # The normaliser (None: off) and what it returned but was not yet
        # encoded: the AAC encoders take whole frames of _AAC_FRAME samples.
        target = plans[0].loudness_lufs
        self._normaliser = (
            LoudnessNormaliser(target_lufs=target, true_peak_dbtp=plans[0].true_peak_dbtp, rate=self.rate, channels=2)
            if target is not None
            else None
        )
        self._held: list[npt.NDArray[np.float32]] = []
        self._held_n = 0
        self._encoded_n = 0  # samples given to the encoders (behind samples_out by the look-ahead)
        self._input_pos: Fraction | None = None  # where the next input frame should start
        # Sample format, layout and rate of the input, for the closing silence.
        self._input_kind: tuple[str, str, int] = ("fltp", "stereo", self.rate)

    @property
    def encoded_s(self) -> float:
        return self.samples_out / self.rate

    def renditions(self) -> list[tuple[AudioPlan, HlsSegmenter]]:
        return [(plan, segmenter) for plan, segmenter, _stream in self._streams]

    @property
    def loudness(self) -> LoudnessResult | None:
        """Measured loudness before and after (after :meth:`finish`); None when normalisation is off."""
        return self._normaliser.result if self._normaliser is not None else None

    def push(self, frame: av.AudioFrame, time_s: Fraction) -> None:
        """Feed a decoded frame that starts at ``time_s`` on the output timeline."""
        duration = Fraction(frame.samples, frame.sample_rate)
        self._input_kind = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._input_pos is None:
            self._input_pos = Fraction(0)
        gap = time_s - self._input_pos
        if gap > _SYNC_TOLERANCE_S:
            self._silence(gap, self._input_kind)
            self._input_pos = time_s
        elif gap < -_SYNC_TOLERANCE_S:
            overlap = -gap
            if overlap >= duration:
                return  # entirely before the timeline (or a repeat): drop
            frame = _trim_start(frame, int(overlap * frame.sample_rate))
            time_s = self._input_pos
            duration = Fraction(frame.samples, frame.sample_rate)
        self._resample(frame)
        self._input_pos = max(self._input_pos, time_s) + duration

    def finish(self, end_s: Fraction | None = None, *, segments: int | None = None) -> None:
        """Fill the timeline to ``end_s`` with silence, flush, close the segmenters.

        ``end_s`` is where the output ends (seconds from the origin): audio
        that stopped earlier, or never came, is followed by silence up to it.
        ``segments`` is the video's segment count, which every audio rendition
        is given (see :meth:`HlsSegmenter.close`).
        """
        if end_s is not None:
            gap = end_s - (self._input_pos or Fraction(0))
            if gap > 0:
                self._silence(gap, self._input_kind)
                self._input_pos = end_s
        self._resample(None)
        if self._normaliser is not None:
            self._encode_normalised(self._normaliser.flush(), final=True)
        for _plan, segmenter, stream in self._streams:
            self._encode(stream, segmenter, None)
            segmenter.close(segments=segments)

    def _silence(self, seconds: Fraction, kind: tuple[str, str, int]) -> None:
        """Feed ``seconds`` of silence in the input's ``(format, layout, rate)``."""
        fmt, layout, rate = kind
        samples = round(seconds * rate)
        while samples > 0:
            n = min(samples, 4096)
            silent = av.AudioFrame(format=fmt, layout=layout, samples=n)
            silent.sample_rate = rate
            for plane in silent.planes:
                plane.update(bytes(plane.buffer_size))
            self._resample(silent)
            samples -= n

    def _resample(self, frame: av.AudioFrame | None) -> None:
        if frame is not None:
            frame.pts = None  # timing is ours: the resampler must not try to follow it
        try:
            out_frames = self._resampler.resample(frame)
        except av.FFmpegError as exc:
            raise MediaError("audio resampling failed", context={"at_s": round(self.encoded_s, 3)}) from exc
        for out in out_frames:
            if self._normaliser is not None:
                self.samples_out += out.samples
                self._encode_normalised(self._normaliser.push(out.to_ndarray().astype(np.float32, copy=False)))
                continue
            out.pts = self.samples_out
            out.time_base = Fraction(1, self.rate)
            self.samples_out += out.samples
            for _plan, segmenter, stream in self._streams:
                self._encode(stream, segmenter, out)

    def _encode_normalised(self, samples: npt.NDArray[np.float32], *, final: bool = False) -> None:
        """Encode ``samples`` (stereo, normalised) in whole AAC frames; ``final``: the rest too."""
        if samples.shape[1]:
            self._held.append(samples)
            self._held_n += samples.shape[1]
        if self._held_n < _AAC_FRAME and not (final and self._held_n):
            return
        joined = np.concatenate(self._held, axis=1) if len(self._held) > 1 else self._held[0]
        whole = joined.shape[1] if final else joined.shape[1] - joined.shape[1] % _AAC_FRAME
        for start in range(0, whole, _AAC_FRAME):
            chunk = np.ascontiguousarray(joined[:, start : start + _AAC_FRAME])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate = self.rate
            frame.pts = self._encoded_n
            frame.time_base = Fraction(1, self.rate)
            self._encoded_n += chunk.shape[1]
            for _plan, segmenter, stream in self._streams:
                self._encode(stream, segmenter, frame)
        self._held = [joined[:, whole:]] if whole < joined.shape[1] else []
        self._held_n = joined.shape[1] - whole

    def _encode(
        self, stream: av.audio.stream.AudioStream, segmenter: HlsSegmenter, frame: av.AudioFrame | None
    ) -> None:
        try:
            packets = stream.encode(frame)
        except av.FFmpegError as exc:
            raise MediaError("audio encoding failed", context={"at_s": round(self.encoded_s, 3)}) from exc
        for packet in packets:
            segmenter.mux(packet)


def _trim_start(frame: av.AudioFrame, samples: int) -> av.AudioFrame:
    """A copy of ``frame`` without its first ``samples`` samples."""
    array = frame.to_ndarray()
    planar = frame.format.is_planar
    kept = array[:, samples:] if planar else array[:, samples * len(frame.layout.channels) :]
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(kept), format=frame.format.name, layout=frame.layout.name)  # type: ignore[arg-type]
    out.sample_rate = frame.sample_rate
    return out
