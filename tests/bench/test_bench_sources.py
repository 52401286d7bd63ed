"""bench.sources: the clips decode in full, at the spec, and each kind has the property it is used for."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from bench.sources import SampleSpec, main, make_sample

SPEC = SampleSpec(width=320, height=180, seconds=2.0, seed=1)


def _luma(path: Path) -> list[npt.NDArray[np.int16]]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="gray").astype(np.int16) for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample(tmp_path_factory.mktemp("sources") / "scene.mp4", SPEC)


def test_scene_is_h264_high_at_the_spec_with_stereo_48k_audio(scene: Path) -> None:
    with av.open(str(scene)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, video.codec_context.profile) == ("h264", "High")
        assert (video.codec_context.width, video.codec_context.height, video.average_rate) == (320, 180, Fraction(30))
        assert video.codec_context.pix_fmt == "yuv420p"
        assert (container.duration or 0) / av.time_base == pytest.approx(2.0, abs=1 / 30)
        samples = np.concatenate([f.to_ndarray() for f in container.decode(audio)], axis=1)
    assert audio.codec_context.sample_rate == 48_000 and samples.shape[0] == 2
    assert samples.shape[1] == pytest.approx(2.0 * 48_000, abs=2048)
    assert (np.sqrt((samples**2).mean(axis=1)) > 0.02).all() and np.abs(samples).max() < 1.0
    assert abs(np.corrcoef(samples[0], samples[1])[0, 1]) < 0.5  # two different channels


def test_scene_frames_are_textured_and_move_and_carry_grain(scene: Path) -> None:
    frames = _luma(scene)
    assert len(frames) == 60
    assert all(y.std() > 20 and y.mean() > 40 for y in frames)
    assert np.abs(frames[0] - frames[45]).mean() > 8  # the camera pans
    assert np.abs(frames[1] - frames[2]).mean() > 1  # grain changes every frame


def test_a_screen_recording_mostly_repeats_its_frames(tmp_path: Path) -> None:
    frames = _luma(make_sample(tmp_path / "screen.mp4", SampleSpec(width=320, height=180, seconds=3.0, kind="screen")))
    still = sum(np.abs(a - b).max() <= 2 for a, b in itertools.pairwise(frames))
    assert still >= 0.5 * (len(frames) - 1)  # the pointer moves 1 s of every 5; lines appear every 0.8 s
    assert np.abs(frames[0] - frames[-1]).max() > 50  # but the slide does change


def test_the_hdr_kinds_are_10_bit_bt2020_hlg_and_pq(tmp_path: Path) -> None:
    for kind, transfer in (("hlg", 18), ("pq", 16)):
        path = make_sample(tmp_path / f"{kind}.mp4", SampleSpec(width=192, height=108, seconds=0.5, kind=kind))
        with av.open(str(path)) as container:
            cc = container.streams.video[0].codec_context
            assert (cc.pix_fmt, cc.color_primaries, cc.color_trc, cc.colorspace) == ("yuv420p10le", 9, transfer, 9)
            frame = next(container.decode(video=0))
            assert 100 < frame.to_ndarray(format="gray16le").astype(np.int64).mean() / 64 < 900  # a picture, 10-bit


def test_the_seed_fixes_the_picture(tmp_path: Path) -> None:
    a, b, c = (
        _luma(make_sample(tmp_path / f"{n}.mp4", SampleSpec(width=192, height=108, seconds=0.3, seed=s)))
        for n, s in (("a", 7), ("b", 7), ("c", 8))
    )
    assert max(float(np.abs(x - y).mean()) for x, y in zip(a, b, strict=True)) < 1.5
    assert min(float(np.abs(x - y).mean()) for x, y in zip(a, c, strict=True)) > 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4", "c.mp4"]  # no partial files


@pytest.mark.parametrize(
    "bad",
    [
        {"width": 321},
        {"height": 64},
        {"fps": 0},
        {"seconds": 0.0},
        {"grain": -1.0},
        {"crf": 52},
        {"preset": "warp"},
        {"kind": "cartoon"},
    ],
)
def test_bad_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SampleSpec(**bad)  # type: ignore[arg-type]


def test_cli_writes_the_clip_without_audio_and_prints_path_size_duration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sub" / "cli.mp4"
    assert main([str(out), "--width", "192", "--height", "108", "--fps", "25", "--seconds", "0.4", "--no-audio"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(out)) and line.endswith("0.40 s")
    with av.open(str(out)) as container:
        assert not container.streams.audio and sum(1 for _ in container.decode(video=0)) == 10
