"""The synthetic source clips: they decode in full and are not trivial to encode."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from bench.sources import SampleSpec, main, make_sample

SPEC = SampleSpec(width=320, height=180, fps=30, seconds=2.0, seed=1)


@dataclass(frozen=True, slots=True)
class Decoded:
    path: Path
    codec: str
    profile: str | None
    pix_fmt: str | None
    width: int
    height: int
    fps: Fraction | None
    duration_s: float
    luma: list[npt.NDArray[np.uint8]]
    chroma: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]]  # (U, V)
    audio_rate: int
    audio_channels: int
    audio: npt.NDArray[np.float32]  # (channels, samples)


def _decode(path: Path) -> Decoded:
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        luma: list[npt.NDArray[np.uint8]] = []
        chroma: list[tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]] = []
        chunks: list[npt.NDArray[np.float32]] = []
        for frame in container.decode(video, audio):
            if isinstance(frame, av.VideoFrame):
                yuv = np.asarray(frame.to_ndarray(format="yuv420p"), dtype=np.uint8)
                h, w = frame.height, frame.width
                luma.append(yuv[:h].copy())
                uv = yuv[h:].reshape(2, h // 2, w // 2)
                chroma.append((uv[0].copy(), uv[1].copy()))
            elif isinstance(frame, av.AudioFrame):
                chunks.append(np.asarray(frame.to_ndarray(), dtype=np.float32))
        return Decoded(
            path=path,
            codec=video.codec_context.name,
            profile=video.codec_context.profile,
            pix_fmt=video.codec_context.pix_fmt,
            width=video.codec_context.width,
            height=video.codec_context.height,
            fps=video.average_rate,
            duration_s=(container.duration or 0) / av.time_base,
            luma=luma,
            chroma=chroma,
            audio_rate=audio.codec_context.sample_rate,
            audio_channels=audio.codec_context.layout.nb_channels,
            audio=np.concatenate(chunks, axis=1),
        )


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Decoded:
    path = make_sample(tmp_path_factory.mktemp("sources") / "clip.mp4", SPEC)
    return _decode(path)


def test_video_stream_is_h264_high_yuv420p_at_the_spec_size_and_rate(clip: Decoded) -> None:
    assert clip.codec == "h264"
    assert clip.profile == "High"
    assert clip.pix_fmt == "yuv420p"
    assert (clip.width, clip.height) == (SPEC.width, SPEC.height)
    assert clip.fps == SPEC.fps


def test_every_frame_decodes_and_duration_is_exact(clip: Decoded) -> None:
    assert len(clip.luma) == SPEC.fps * SPEC.seconds
    assert clip.duration_s == pytest.approx(SPEC.seconds, abs=1 / SPEC.fps)


def test_frames_are_textured_and_never_black(clip: Decoded) -> None:
    for i, y in enumerate(clip.luma):
        assert y.std() > 20, f"frame {i} is flat"
        assert y.mean() > 40, f"frame {i} is black"


def test_chroma_edges_are_clean(clip: Decoded) -> None:
    # Chroma is smooth at the borders (about 1 apart): an edge row or column unlike its
    # neighbour means the planes were misaligned (a wrong plane offset once gave 20+).
    for i, planes in enumerate(clip.chroma):
        for name, plane in zip("UV", planes, strict=True):
            p = plane.astype(np.int16)
            for a, b in ((p[0], p[1]), (p[-1], p[-2]), (p[:, 0], p[:, 1]), (p[:, -1], p[:, -2])):
                assert np.median(np.abs(a - b)) < 6, f"frame {i}: {name} plane edge differs from its neighbour"


def test_picture_moves(clip: Decoded) -> None:
    first, later = clip.luma[0].astype(np.int16), clip.luma[30].astype(np.int16)
    assert np.abs(first - later).mean() > 8
    # Grain alone makes consecutive frames differ a little everywhere.
    assert np.abs(clip.luma[1].astype(np.int16) - clip.luma[2].astype(np.int16)).mean() > 1


def test_audio_is_stereo_48k_with_two_different_live_channels(clip: Decoded) -> None:
    assert clip.audio_rate == 48_000
    assert clip.audio_channels == 2
    left, right = clip.audio
    assert left.size == pytest.approx(SPEC.seconds * 48_000, abs=2048)
    rms = np.sqrt((clip.audio**2).mean(axis=1))
    assert (rms > 0.02).all(), rms
    assert np.abs(clip.audio).max() < 1.0
    assert abs(np.corrcoef(left, right)[0, 1]) < 0.5


def test_the_seed_fixes_the_picture(tmp_path: Path) -> None:
    # Not byte-for-byte: libx264 output here varies slightly from run to run for the same
    # input (lookahead/MB-tree), so compare decoded pictures, not file hashes.
    spec = SampleSpec(width=192, height=108, seconds=0.5, seed=7)
    a = _decode(make_sample(tmp_path / "a.mp4", spec)).luma
    b = _decode(make_sample(tmp_path / "b.mp4", spec)).luma
    c = _decode(make_sample(tmp_path / "c.mp4", SampleSpec(width=192, height=108, seconds=0.5, seed=8))).luma

    def diff(x: npt.NDArray[np.uint8], y: npt.NDArray[np.uint8]) -> float:
        return float(np.abs(x.astype(np.int16) - y.astype(np.int16)).mean())

    assert max(diff(x, y) for x, y in zip(a, b, strict=True)) < 1.5
    assert min(diff(x, y) for x, y in zip(a, c, strict=True)) > 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4", "c.mp4"]  # no partial files left


def test_without_audio_there_is_no_audio_stream(tmp_path: Path) -> None:
    path = make_sample(tmp_path / "mute.mp4", SampleSpec(width=192, height=108, seconds=0.5, audio=False))
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 0
        assert sum(1 for _ in container.decode(video=0)) == 15


@pytest.mark.parametrize(
    "kwargs",
    [{"width": 321}, {"height": 64}, {"fps": 0}, {"seconds": 0.0}, {"grain": -1.0}, {"crf": 52}, {"preset": "warp"}],
)
def test_bad_specs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SampleSpec(**kwargs)  # type: ignore[arg-type]


def test_cli_writes_the_clip_and_prints_path_size_duration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sub" / "cli.mp4"
    argv = [str(out), "--width", "192", "--height", "108", "--fps", "25", "--seconds", "0.4", "--grain", "3"]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(out))
    assert line.endswith("0.40 s")
    assert out.stat().st_size > 0
