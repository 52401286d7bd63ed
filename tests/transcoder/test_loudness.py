"""Lecture loudness (issue 12, item 3): speech normalised to -16 LUFS, true peak <= -1 dBTP.

Sources are speech-like signals of known loudness (:mod:`tests.media_loudness`);
the output audio rendition is measured with FFmpeg's ``ebur128`` filter (the
imageio-ffmpeg binary), never with the engine's own meter, and decoded with
PyAV where samples matter.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import av
import m3u8
import numpy as np
import numpy.typing as npt
import pytest

import transcoder
from tests.support.media_loudness import make_speech_clip, measure, measure_samples, speech_like
from transcoder import ConfigError, EncoderSettings, LadderPolicy, RungSpec, TranscodeConfig, TranscodeResult
from transcoder.loudness import MAX_GAIN_DB, LoudnessNormaliser

TARGET = -16.0
TOLERANCE_LU = 1.0
MAX_TRUE_PEAK = -1.0
Samples = npt.NDArray[np.float32]


def config(loudness_lufs: float | None = TARGET) -> TranscodeConfig:
    ladder = LadderPolicy(
        rungs=(RungSpec(short_side=72, bitrate_kbps=100),), low_rung_below_short_side=64, loudness_lufs=loudness_lufs
    )
    return TranscodeConfig(ladder=ladder, encoder=EncoderSettings(preset="ultrafast"), poster=False)


def run(source: Path, out: Path, loudness_lufs: float | None = TARGET) -> TranscodeResult:
    return transcoder.transcode(source, out, config=config(loudness_lufs))


def audio_result(result: TranscodeResult) -> transcoder.RenditionResult:
    (audio,) = [r for r in result.renditions if r.kind == "audio"]
    return audio


def decoded_audio(out: Path) -> Samples:
    """The audio rendition's samples (channels x n), its segments end to end."""
    playlist = m3u8.load(str(out / "audio" / "index.m3u8"))
    data = b"".join((out / "audio" / s.uri).read_bytes() for s in playlist.segments)
    with av.open(io.BytesIO(data), mode="r") as container:
        frames = list(container.decode(audio=0))
    return np.concatenate([f.to_ndarray() for f in frames], axis=1).astype(np.float32)


def extinfs(out: Path, rendition: str) -> list[float]:
    return [float(s.duration) for s in m3u8.load(str(out / rendition / "index.m3u8")).segments]


@pytest.mark.parametrize(
    ("lufs", "channels", "seconds"),
    [(-35.0, 1, 8.0), (-35.0, 2, 6.0), (-23.0, 1, 5.0), (-23.0, 2, 4.0), (-12.0, 1, 4.0), (-12.0, 2, 7.0)],
)
def test_speech_reaches_the_target(tmp_path: Path, lufs: float, channels: int, seconds: float) -> None:
    source = make_speech_clip(tmp_path / "in.mp4", lufs=lufs, seconds=seconds, channels=channels, seed=channels)
    before = measure(source)
    assert abs(before.integrated_lufs - lufs) <= 0.3  # the source is what it claims

    result = run(source, tmp_path / "out")

    after = measure(tmp_path / "out" / "audio" / "index.m3u8")
    assert abs(after.integrated_lufs - TARGET) <= TOLERANCE_LU, after
    assert after.true_peak_dbtp <= MAX_TRUE_PEAK, after
    # The result reports what ebur128 measures, before and after.
    loudness = audio_result(result).loudness
    assert loudness is not None and loudness.input_lufs is not None and loudness.output_lufs is not None
    assert loudness.target_lufs == TARGET
    assert abs(loudness.input_lufs - before.integrated_lufs) <= 0.5
    assert abs(loudness.output_lufs - after.integrated_lufs) <= 0.5


def test_peaks_above_the_ceiling_are_limited(tmp_path: Path) -> None:
    # Clicks 12 dB above the speech: +7 dB of gain takes them to ~+2 dBTP.
    source = make_speech_clip(tmp_path / "in.mp4", lufs=-23.0, seconds=6.0, clicks=True)
    assert measure(source).true_peak_dbtp + (TARGET - -23.0) > 0.0

    run(source, tmp_path / "out")

    after = measure(tmp_path / "out" / "audio" / "index.m3u8")
    assert after.true_peak_dbtp <= MAX_TRUE_PEAK, after
    assert abs(after.integrated_lufs - TARGET) <= TOLERANCE_LU, after


def test_every_audio_rendition_is_normalised(tmp_path: Path) -> None:
    # --cellular adds a 48 kb/s "audio-low" rendition, encoded from the same normalised samples.
    source = make_speech_clip(tmp_path / "in.mp4", lufs=-30.0, seconds=4.0, width=640, height=360, clicks=True)
    ladder = LadderPolicy(rungs=(RungSpec(short_side=360, bitrate_kbps=800),), cellular_rung=True, min_rung_saving=0.0)

    result = transcoder.transcode(
        source, tmp_path / "out", config=TranscodeConfig(ladder=ladder, encoder=EncoderSettings(preset="ultrafast"))
    )

    names = [r.name for r in result.renditions if r.kind == "audio"]
    assert names == ["audio", "audio-low"]
    for name in names:
        after = measure(tmp_path / "out" / name / "index.m3u8")
        assert abs(after.integrated_lufs - TARGET) <= TOLERANCE_LU, (name, after)
        assert after.true_peak_dbtp <= MAX_TRUE_PEAK, (name, after)


def test_off_leaves_the_level_alone(tmp_path: Path) -> None:
    source = make_speech_clip(tmp_path / "in.mp4", lufs=-23.0, seconds=5.0)

    result = run(source, tmp_path / "out", loudness_lufs=None)

    assert (
        abs(measure(tmp_path / "out" / "audio" / "index.m3u8").integrated_lufs - measure(source).integrated_lufs) <= 0.5
    )
    assert audio_result(result).loudness is None
    assert result.ladder.audio[0].loudness_lufs is None


def test_silence_stays_silence(tmp_path: Path) -> None:
    source = make_speech_clip(tmp_path / "in.mp4", lufs=None, seconds=4.0)

    result = run(source, tmp_path / "out")

    samples = decoded_audio(tmp_path / "out")
    assert samples.shape[1] >= 4 * 48000 - 1024
    assert float(np.abs(samples).max()) <= 1e-4
    loudness = audio_result(result).loudness
    assert loudness is not None
    assert loudness.input_lufs is None and loudness.output_lufs is None
    assert loudness.gain_db_min == loudness.gain_db_max == 0.0


def test_gain_is_bounded_on_near_silence(tmp_path: Path) -> None:
    # Speech at -60 LUFS (a room's hum level) gets +20 dB, not the +44 the target asks for.
    source = make_speech_clip(tmp_path / "in.mp4", lufs=-60.0, seconds=5.0)

    result = run(source, tmp_path / "out")

    after = measure(tmp_path / "out" / "audio" / "index.m3u8")
    assert after.integrated_lufs == pytest.approx(measure(source).integrated_lufs + MAX_GAIN_DB, abs=1.0)
    loudness = audio_result(result).loudness
    assert loudness is not None and loudness.gain_db_max == MAX_GAIN_DB


@pytest.mark.parametrize("seconds", [0.3, 1.5])
def test_very_short_audio(tmp_path: Path, seconds: float) -> None:
    # Shorter than one 400 ms block, and shorter than the 3 s look-ahead.
    source = make_speech_clip(tmp_path / "in.mp4", lufs=-30.0, seconds=seconds)

    result = run(source, tmp_path / "out")

    samples = decoded_audio(tmp_path / "out")
    assert abs(samples.shape[1] / 48000 - seconds) <= 1024 / 48000 + 0.1  # the video's length, whole frames
    after = measure(tmp_path / "out" / "audio" / "index.m3u8")
    assert after.true_peak_dbtp <= MAX_TRUE_PEAK
    loudness = audio_result(result).loudness
    assert loudness is not None and loudness.gain_db_max <= MAX_GAIN_DB


def test_timing_is_the_same_as_without(tmp_path: Path) -> None:
    """Same samples count, same segment lengths, no delay: only the level changes."""
    source = make_speech_clip(tmp_path / "in.mp4", lufs=-30.0, seconds=7.0)
    run(source, tmp_path / "on")
    run(source, tmp_path / "off", loudness_lufs=None)

    on, off = decoded_audio(tmp_path / "on"), decoded_audio(tmp_path / "off")
    assert on.shape == off.shape
    assert extinfs(tmp_path / "on", "audio") == extinfs(tmp_path / "off", "audio")
    assert extinfs(tmp_path / "on", "72p") == extinfs(tmp_path / "off", "72p")
    # The gain is steady on this source: the output is the input scaled, at lag 0.
    a, b = on[0].astype(np.float64), off[0].astype(np.float64)
    lags = range(-480, 481, 4)
    correlation = [float(np.dot(a[480:-480], np.roll(b, lag)[480:-480])) for lag in lags]
    assert list(lags)[int(np.argmax(correlation))] == 0
    gain_db = 20 * np.log10(np.sqrt(np.mean(a**2) / np.mean(b**2)))
    assert gain_db == pytest.approx(TARGET - -30.0, abs=1.0)


def test_level_changes_are_followed() -> None:
    """A lecture whose level drops by 15 dB half-way: both halves end near the target."""
    speech = speech_like(40.0, channels=2, seed=3)
    speech = speech * np.float32(10 ** ((-20.0 - measure_samples(speech).integrated_lufs) / 20))
    half = speech.shape[1] // 2
    speech[:, half:] *= np.float32(10 ** (-15 / 20))
    normaliser = LoudnessNormaliser(target_lufs=TARGET, true_peak_dbtp=MAX_TRUE_PEAK, rate=48000, channels=2)
    # Odd chunk sizes: the output must still come back whole, sample for sample.
    parts = [normaliser.push(speech[:, i : i + 1000]) for i in range(0, speech.shape[1], 1000)]
    out = np.concatenate([*parts, normaliser.flush()], axis=1)
    assert out.shape == speech.shape

    # The window looks 10 s back: the quiet half is followed within ~11 s.
    first, last = out[:, : 15 * 48000], out[:, -8 * 48000 :]
    assert measure_samples(first).integrated_lufs == pytest.approx(TARGET, abs=TOLERANCE_LU)
    assert measure_samples(last).integrated_lufs == pytest.approx(TARGET, abs=TOLERANCE_LU)
    assert measure_samples(out).true_peak_dbtp <= MAX_TRUE_PEAK
    result = normaliser.result
    assert result.input_lufs is not None
    assert result.gain_db_max - result.gain_db_min == pytest.approx(15.0, abs=1.5)


def test_pauses_are_not_pumped_up() -> None:
    """Speech, 16 s of a quiet room, speech: the room keeps the speech's gain."""
    rng = np.random.default_rng(4)
    speech = speech_like(8.0, channels=2, seed=4)
    speech = speech * np.float32(10 ** ((-26.0 - measure_samples(speech).integrated_lufs) / 20))
    room = rng.uniform(-1.0, 1.0, (2, 16 * 48000)).astype(np.float32)
    room *= np.float32(10 ** ((-60.0 - measure_samples(room).integrated_lufs) / 20))
    source = np.concatenate([speech, room, speech], axis=1)
    normaliser = LoudnessNormaliser(target_lufs=TARGET, true_peak_dbtp=MAX_TRUE_PEAK, rate=48000, channels=2)
    out = np.concatenate([normaliser.push(source), normaliser.flush()], axis=1)

    result = normaliser.result
    assert result.gain_db_max - result.gain_db_min <= 1.0, result
    pause = slice(12 * 48000, 20 * 48000)
    assert measure_samples(out[:, pause]).integrated_lufs == pytest.approx(-60.0 + (TARGET + 26.0), abs=1.0)
    assert measure_samples(out).integrated_lufs == pytest.approx(TARGET, abs=TOLERANCE_LU)


def test_speech_after_silence_starts_at_the_target() -> None:
    """5 s of digital silence, then quiet speech: the gain is in place when the speech starts."""
    speech = speech_like(6.0, channels=2, seed=6)
    speech = speech * np.float32(10 ** ((-35.0 - measure_samples(speech).integrated_lufs) / 20))
    source = np.concatenate([np.zeros((2, 5 * 48000), dtype=np.float32), speech], axis=1)
    normaliser = LoudnessNormaliser(target_lufs=TARGET, true_peak_dbtp=MAX_TRUE_PEAK, rate=48000, channels=2)
    out = np.concatenate([normaliser.push(source), normaliser.flush()], axis=1)

    assert not out[:, : 5 * 48000].any()  # the silence stays silence
    first_phrase = out[:, 5 * 48000 : 7 * 48000]
    assert measure_samples(first_phrase).integrated_lufs == pytest.approx(TARGET, abs=TOLERANCE_LU)
    assert measure_samples(out).integrated_lufs == pytest.approx(TARGET, abs=TOLERANCE_LU)


def test_non_finite_samples_do_not_poison_the_gain() -> None:
    speech = speech_like(8.0, channels=2, seed=5)
    speech = speech * np.float32(10 ** ((-23.0 - measure_samples(speech).integrated_lufs) / 20))
    speech[:, 2 * 48000 : 2 * 48000 + 500] = np.nan
    speech[:, 5 * 48000] = np.inf
    normaliser = LoudnessNormaliser(target_lufs=TARGET, true_peak_dbtp=MAX_TRUE_PEAK, rate=48000, channels=2)
    out = np.concatenate([normaliser.push(speech[:, i : i + 1024]) for i in range(0, speech.shape[1], 1024)], axis=1)
    out = np.concatenate([out, normaliser.flush()], axis=1)

    assert out.shape == speech.shape and np.isfinite(out).all()
    assert measure_samples(out).integrated_lufs == pytest.approx(TARGET, abs=TOLERANCE_LU)


@pytest.mark.parametrize("bad", [-40.0, -3.0, float("nan")])
def test_the_target_is_checked(bad: float) -> None:
    with pytest.raises(ConfigError):
        LadderPolicy(loudness_lufs=bad)


def test_the_cli_shows_the_target_and_the_measurements(tmp_path: Path) -> None:
    source = make_speech_clip(tmp_path / "in.mp4", lufs=-23.0, seconds=4.0)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "transcoder", str(source), *args], capture_output=True, text=True)

    assert "loudness -16 LUFS, true peak <= -1 dBTP" in cli("--plan").stdout
    assert "loudness -20 LUFS" in cli("--plan", "--loudness-target", "-20").stdout
    assert "loudness as the source" in cli("--plan", "--loudness-target", "off").stdout
    planned = json.loads(cli("--plan", "--json", "--loudness-target", "-23").stdout)
    assert planned["ladder"]["audio"][0]["loudness_lufs"] == -23.0
    assert cli("--plan", "--loudness-target", "loud").returncode == 2
    assert cli("--plan", "--loudness-target", "-3").returncode == 2

    done = cli("-o", str(tmp_path / "out"), "-q", "--json", "--preset", "ultrafast")
    assert done.returncode == 0, done.stderr
    (audio,) = [r for r in json.loads(done.stdout)["renditions"] if r["kind"] == "audio"]
    assert audio["loudness"]["target_lufs"] == TARGET
    assert audio["loudness"]["input_lufs"] == pytest.approx(measure(source).integrated_lufs, abs=0.5)
    assert audio["loudness"]["output_lufs"] == pytest.approx(TARGET, abs=TOLERANCE_LU)
    table = cli("-o", str(tmp_path / "out2"), "-q", "--preset", "ultrafast").stdout
    assert re.search(r"loudness audio: -2[23]\.\d LUFS in, -1[5-7]\.\d LUFS out \(target -16\)", table), table
