"""Loudness normalisation in one pass: EBU R128 measurement, a slow gain, a true-peak limiter.

The audio is measured as ITU-R BS.1770 / EBU R128 does it: K-weighting,
400 ms blocks every 100 ms, an absolute gate at -70 LUFS and a relative gate
10 LU below the mean of the blocks above it. The whole programme's loudness
is only known at its end, and the source is read once, so the gain follows a
*window*: the gated loudness of the last ``_HISTORY_S`` seconds plus
``_LOOKAHEAD_S`` seconds ahead (the audio is delayed by that much). On speech
of a steady level this is the programme's loudness; a lecture whose level
drifts (a microphone moved) is followed within ``_HISTORY_S`` seconds (the
relative gate hides a drop of more than 10 LU until the louder blocks have
left the window). The gain moves at most ``_SLEW_DB`` per 100 ms and is
bounded to [``MIN_GAIN_DB``, ``MAX_GAIN_DB``]. It is held while the window
holds nothing above the absolute gate (silence stays silence) or only sound
``_PAUSE_LU`` below the level the gain was set for (a pause in the lecture:
the room's noise is not pumped up to speech level).

A look-ahead limiter then keeps the 4x-oversampled (true) peak under the
ceiling: the gain needed by every sample is spread by a minimum over
``_LIMITER_S`` ahead and smoothed by two box filters whose combined length
fits in it, so the smoothed gain is never above what any peak needs. The
ceiling sits ``CODEC_HEADROOM_DB`` below the requested true peak because AAC
overshoots the peaks of what it is given.

Cost: two FFTs per channel per 100 ms for the K-weighting, a 12-tap
interpolation only where peaks come near the ceiling, a few vector passes per
100 ms; 2-5 ms of CPU per second of 48 kHz stereo (bench/NOTES.md). Pure numpy;
one owner thread.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from .models import LoudnessResult

Samples = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]

MAX_GAIN_DB = 20.0  # a quiet room's noise must not become a roar
MIN_GAIN_DB = -30.0
CODEC_HEADROOM_DB = 1.0

_ABSOLUTE_GATE_LUFS = -70.0
_RELATIVE_GATE_LU = -10.0
_BLOCK_HOPS = 4  # a 400 ms block is four 100 ms hops
_LOOKAHEAD_S = 3.0
_HISTORY_S = 10.0
_PAUSE_LU = 20.0
# The last blocks of speech leaving the window (a phrase's fading end) say
# little about its level: the gain moves only on at least 2 s of them.
_MIN_BLOCKS = 20
_SLEW_DB = 1.0  # per hop: silence to speech within 2 s, inside the look-ahead
_LIMITER_S = 0.02
_TP_TAPS = 12  # per phase of the 4x interpolator (BS.1770-4 uses 12 too)
_TP_BEFORE = _TP_TAPS // 2 - 1  # samples of context before the interpolated point
_TP_AFTER = _TP_TAPS // 2
# Below this factor under the ceiling a sample peak cannot become a true peak
# over it (inter-sample overshoot of real audio stays well under 6 dB), so the
# interpolation is skipped.
_TP_SKIP_MARGIN = 10 ** (6 / 20)


@dataclass(slots=True)
class _Hop:
    samples: Samples  # channels x hop, as received
    weighted_power: _F64  # per sample: sum over channels of the K-weighted signal squared
    complete: bool  # False for the zero-padded last hop


class LoudnessNormaliser:
    """Streams audio to ``target_lufs`` integrated, true peak <= ``true_peak_dbtp``.

    :meth:`push` takes ``channels x n`` float samples at ``rate`` and returns
    what is ready (delayed by ``_LOOKAHEAD_S``); :meth:`flush` returns the
    rest. The output has exactly as many samples as went in. :attr:`result`
    gives the measured input and output loudness once flushed. Memory:
    ``_LOOKAHEAD_S`` of samples plus 8 bytes per 100 ms of programme.
    """

    def __init__(self, *, target_lufs: float, true_peak_dbtp: float, rate: int, channels: int) -> None:
        self.target_lufs = target_lufs
        self._ceiling = 10 ** ((true_peak_dbtp - CODEC_HEADROOM_DB) / 20)
        self._channels = channels
        self._hop = rate // 10
        self._fft_size = 1 << (self._hop * 3 // 2).bit_length()  # 8192 at 48 kHz: 3393 taps
        self._k_fft = _k_weighting_fft(rate, self._fft_size - self._hop + 1, self._fft_size)
        self._k_history = np.zeros((channels, self._fft_size - self._hop))
        self._pending: list[Samples] = []
        self._pending_n = 0
        self._queue: deque[_Hop] = deque()
        self._lookahead_hops = round(_LOOKAHEAD_S * 10)
        self._history_hops = round(_HISTORY_S * 10)
        self._energy_in = array("d")  # per hop: K-weighted energy, channels summed
        self._energy_out = array("d")
        self._complete_hops = 0
        self._emitted_hops = 0
        self._gain_db: float | None = None
        self._measured = False  # the gain was set from a measurement
        self._gain_range: tuple[float, float] | None = None
        self._tail = np.zeros((channels, _TP_BEFORE), dtype=np.float32)  # last samples emitted
        self._limiter_n = max(2, round(_LIMITER_S * rate))
        self._box = self._limiter_n // 2  # two boxes: 2 * box - 1 <= limiter_n
        self._reduction_tail = np.ones(2 * self._box - 2)
        self._kernel = _interpolator()

    def push(self, samples: Samples) -> Samples:
        """Feed ``channels x n`` samples; return the samples that are ready (maybe none).

        Non-finite samples come out as zeros.
        """
        if samples.shape[0] != self._channels:
            raise ValueError(f"expected {self._channels} channels, got {samples.shape[0]}")
        if not np.isfinite(samples).all():
            # A broken decode's NaN or inf would poison the measurement (and
            # the K-weighting's history) for the whole window: silence it.
            samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
        self._pending.append(samples)
        self._pending_n += samples.shape[1]
        if self._pending_n >= self._hop:
            joined = np.concatenate(self._pending, axis=1)
            whole = joined.shape[1] - joined.shape[1] % self._hop
            for start in range(0, whole, self._hop):
                self._analyse(joined[:, start : start + self._hop], complete=True)
            self._pending = [joined[:, whole:]]
            self._pending_n = joined.shape[1] - whole
        out: list[Samples] = []
        while len(self._queue) > self._lookahead_hops:
            out.append(self._emit())
        return self._join(out)

    def flush(self) -> Samples:
        """Return everything still held (the end of the programme)."""
        out: list[Samples] = []
        left = self._pending_n
        if left:
            padded = np.zeros((self._channels, self._hop), dtype=np.float32)
            padded[:, :left] = np.concatenate(self._pending, axis=1)
            self._analyse(padded, complete=False)
            self._pending, self._pending_n = [], 0
        while self._queue:
            out.append(self._emit())
        if left:
            out[-1] = out[-1][:, :left]
        return self._join(out)

    @property
    def result(self) -> LoudnessResult:
        """The programme's loudness before and after (None where nothing passed the gates)."""
        low, high = self._gain_range or (0.0, 0.0)
        return LoudnessResult(
            target_lufs=self.target_lufs,
            input_lufs=_round(self._programme(self._energy_in)),
            output_lufs=_round(self._programme(self._energy_out)),
            gain_db_min=round(low, 2),
            gain_db_max=round(high, 2),
        )

    def _join(self, parts: list[Samples]) -> Samples:
        if not parts:
            return np.zeros((self._channels, 0), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def _analyse(self, samples: Samples, *, complete: bool) -> None:
        """K-weight one hop (overlap-save FFT), record its energy, queue it."""
        n = self._hop
        buffer = np.concatenate([self._k_history, samples], axis=1)
        weighted = np.fft.irfft(np.fft.rfft(buffer, axis=1) * self._k_fft, n=self._fft_size, axis=1)[:, -n:]
        self._k_history = buffer[:, n:]
        power = np.einsum("ij,ij->j", weighted, weighted)
        self._energy_in.append(float(power.sum()))
        if complete:
            self._complete_hops += 1
        self._queue.append(
            _Hop(samples=np.ascontiguousarray(samples, dtype=np.float32), weighted_power=power, complete=complete)
        )

    def _emit(self) -> Samples:
        """Apply the gain and the limiter to the oldest queued hop and return it."""
        hop = self._queue.popleft()
        index = self._emitted_hops
        self._emitted_hops += 1
        before = self._gain_db
        after = self._decide(index)
        start_gain = 10 ** ((after if before is None else before) / 20)
        end_gain = 10 ** (after / 20)
        n = self._hop
        gain = start_gain + (end_gain - start_gain) * (np.arange(1, n + 1) / n)
        ahead = self._queue[0].samples if self._queue else np.zeros_like(hop.samples)
        reduction = self._limit(hop.samples, ahead, gain, end_gain)
        if reduction is not None:
            gain = gain * reduction
        out = (hop.samples * gain).astype(np.float32)
        self._tail = hop.samples[:, -_TP_BEFORE:]
        self._energy_out.append(float(np.dot(hop.weighted_power, gain * gain)))
        return out

    def _decide(self, index: int) -> float:
        """The slow gain (dB) at the end of hop ``index``, from the window around it."""
        # Hops up to the look-ahead (fewer at the end): the same window
        # whatever sizes the samples were pushed in.
        last = min(len(self._energy_in), index + self._lookahead_hops + 1)
        first = max(0, index - self._history_hops)
        loudness, blocks = _gated(self._block_powers(first, last))
        previous = 0.0 if self._gain_db is None else self._gain_db
        if loudness is None:
            gain = previous  # silence: hold (unity until anything was heard)
        elif not self._measured:
            # The first sound: what went before was below the absolute gate,
            # so the gain may jump (ramped over one hop), no slew.
            gain = min(MAX_GAIN_DB, max(MIN_GAIN_DB, self.target_lufs - loudness))
            self._measured = True
        elif blocks < _MIN_BLOCKS or loudness < self.target_lufs - previous - _PAUSE_LU:
            gain = previous  # too little to go by, or a pause: hold
        else:
            wanted = min(MAX_GAIN_DB, max(MIN_GAIN_DB, self.target_lufs - loudness))
            gain = previous + min(_SLEW_DB, max(-_SLEW_DB, wanted - previous))
        self._gain_db = gain
        low, high = self._gain_range or (gain, gain)
        self._gain_range = (min(low, gain), max(high, gain))
        return gain

    def _block_powers(self, first: int, last: int) -> _F64:
        """Mean-square power of the 400 ms blocks ending in hops [first, last)."""
        lo = max(0, first - (_BLOCK_HOPS - 1))
        energies = np.frombuffer(self._energy_in, dtype=np.float64)[lo:last]
        if energies.size < _BLOCK_HOPS:
            return np.zeros(0)
        return np.convolve(energies, np.ones(_BLOCK_HOPS), mode="valid") / (_BLOCK_HOPS * self._hop)

    def _programme(self, energies: array[float]) -> float | None:
        """Gated loudness of the whole programme (complete blocks only)."""
        hops = np.frombuffer(energies, dtype=np.float64)[: self._complete_hops]
        if hops.size < _BLOCK_HOPS:
            return None
        return _gated(np.convolve(hops, np.ones(_BLOCK_HOPS), mode="valid") / (_BLOCK_HOPS * self._hop))[0]

    def _limit(self, samples: Samples, ahead: Samples, gain: _F64, end_gain: float) -> _F64 | None:
        """Per-sample gain reduction (<= 1) keeping true peaks under the ceiling; None if none is needed.

        The limiter looks ``limiter_n`` samples into the next hop, assumed to
        keep this hop's final gain (the slow gain moves by at most
        ``_SLEW_DB`` a hop, ~0.2% over the look-ahead).
        """
        span = self._limiter_n
        head = ahead[:, : span - 1 + _TP_AFTER]
        if head.shape[1] < span - 1 + _TP_AFTER:
            head = np.pad(head, ((0, 0), (0, span - 1 + _TP_AFTER - head.shape[1])))
        releasing = bool(self._reduction_tail.min() < 1.0)
        sample_peak = max(float(np.abs(samples).max()), float(np.abs(head).max()))
        if not releasing and sample_peak * float(gain.max()) * _TP_SKIP_MARGIN < self._ceiling:
            return None
        context = np.concatenate([self._tail, samples, head], axis=1).astype(np.float64)
        peaks = _true_peak_envelope(context, self._kernel)  # one per sample of hop + look-ahead
        gains = np.concatenate([gain, np.full(span - 1, end_gain)])
        level = peaks * gains
        needed = np.ones_like(level)
        np.divide(self._ceiling, level, out=needed, where=level > self._ceiling)
        held = _sliding_min(needed, span)  # n values
        if self._emitted_hops == 1:  # the programme's start: no past to ramp down in
            self._reduction_tail = np.full_like(self._reduction_tail, held[0])
        smoothed = np.concatenate([self._reduction_tail, held])
        self._reduction_tail = smoothed[-(2 * self._box - 2) :]
        return _box(_box(smoothed, self._box), self._box)


def _gated(powers: _F64) -> tuple[float | None, int]:
    """BS.1770 gated loudness (LUFS) of block powers and how many blocks passed both gates.

    None if no block passes the absolute gate.
    """
    above = powers[powers > 10 ** ((_ABSOLUTE_GATE_LUFS + 0.691) / 10)]
    if above.size == 0:
        return None, 0
    relative = above.mean() * 10 ** (_RELATIVE_GATE_LU / 10)
    kept = above[above > relative]
    return -0.691 + 10 * math.log10(float(kept.mean())), int(kept.size)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _box(values: _F64, width: int) -> _F64:
    """Causal moving average: ``len(values) - width + 1`` values."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    averaged: _F64 = (sums[width:] - sums[:-width]) / width
    return averaged


def _sliding_min(values: _F64, width: int) -> _F64:
    """``out[i] = min(values[i : i + width])``, in log2(width) vector passes."""
    out, span = values, 1
    while span * 2 <= width:
        out = np.minimum(out[:-span], out[span:])
        span *= 2
    rest = width - span
    if rest:
        out = np.minimum(out[:-rest], out[rest:])
    return out


def _true_peak_envelope(context: _F64, kernel: _F64) -> _F64:
    """Per sample: the largest magnitude at it and at the three 4x-oversampled points after it, over channels.

    ``context`` has ``_TP_BEFORE`` samples before and ``_TP_AFTER`` after
    the samples measured. Six short convolutions (2x faster here than one
    matrix product over a sliding-window view).
    """
    n = context.shape[1] - _TP_TAPS + 1
    peak = np.abs(context[:, _TP_BEFORE : _TP_BEFORE + n])
    for channel in range(context.shape[0]):
        for phase in range(kernel.shape[1]):
            between = np.abs(np.convolve(context[channel], kernel[::-1, phase], mode="valid"))
            np.maximum(peak[channel], between, out=peak[channel])
    envelope: _F64 = peak.max(axis=0)
    return envelope


@lru_cache(maxsize=1)
def _interpolator() -> _F64:
    """A 12-tap Hann-windowed sinc for each of the points 1/4, 2/4, 3/4 after a sample."""
    taps = np.arange(_TP_TAPS) - _TP_BEFORE  # sample offsets -5 .. 6
    columns = []
    for phase in (0.25, 0.5, 0.75):
        t = phase - taps
        window = 0.5 * (1 + np.cos(np.pi * t / (_TP_TAPS / 2 + 0.5)))
        columns.append(np.sinc(t) * window)
    kernel = np.stack(columns, axis=1)
    kernel.flags.writeable = False
    return kernel


@lru_cache(maxsize=4)
def _k_weighting_fft(rate: int, taps: int, fft_size: int) -> npt.NDArray[np.complex128]:
    """The rfft of the K-weighting filter's impulse response, cut to ``taps`` samples.

    The two BS.1770 biquads (a +4 dB shelf above ~1.7 kHz, a 38 Hz high
    pass), derived for any rate as libebur128 does. The high pass decays to
    ~1e-4 of its start by 3392 taps (at 48 kHz), well under what moves a
    loudness reading.
    """
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf_b = ((vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0)
    shelf_a = (2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0)
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1 + k / q + k * k
    high_b = (1.0, -2.0, 1.0)
    high_a = (2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0)
    response = _biquad(_biquad([1.0] + [0.0] * (taps - 1), shelf_b, shelf_a), high_b, high_a)
    spectrum: npt.NDArray[np.complex128] = np.fft.rfft(np.asarray(response), n=fft_size)
    spectrum.flags.writeable = False
    return spectrum


def _biquad(x: list[float], b: tuple[float, float, float], a: tuple[float, float]) -> list[float]:
    """Direct form I over a short list (run once per rate, for the impulse response)."""
    y: list[float] = []
    x1 = x2 = y1 = y2 = 0.0
    for x0 in x:
        y0 = b[0] * x0 + b[1] * x1 + b[2] * x2 - a[0] * y1 - a[1] * y2
        y.append(y0)
        x2, x1, y2, y1 = x1, x0, y1, y0
    return y
