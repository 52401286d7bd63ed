"""Upload shapes the engine already handles, kept handled.

Each test makes the shape on the spot (:mod:`tests.support.media_realworld`),
transcodes it and checks a property of the output, not only that it ran:
which audio track was taken (by its tone), the size and length of what was
encoded, the rung sizes across a mid-stream size change, a continuous timeline
across an MPEG-TS timestamp wrap, and a clean refusal of bombs and damaged
files.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import transcoder
from tests.support.media import make_clip, make_huge_dimensions
from tests.support.media_realworld import (
    make_corrupt_middle,
    make_cover_picture_clip,
    make_resolution_change,
    make_timestamp_bomb,
    make_ts_wrap,
    make_two_audio_tracks,
)
from tests.transcoder.test_transcode import Run, decoded_video, run, tone_share
from transcoder import InputError, LimitExceededError, Limits, TranscodeError

pytestmark = pytest.mark.slow

LOW, HIGH = 440.0, 1320.0


@pytest.mark.parametrize("container", ["mkv", "mp4"])
@pytest.mark.parametrize("default_track", [0, 1])
def test_the_audio_track_marked_default_is_the_one_transcoded(
    tmp_path: Path, container: str, default_track: int
) -> None:
    source = make_two_audio_tracks(
        tmp_path / f"two.{container}", frequencies=(LOW, HIGH), default_track=default_track, seconds=1.0
    )
    info = transcoder.probe(source)
    assert info.audio is not None and info.audio.index == 1 + default_track

    done = run(source, tmp_path / "out")
    audio = done.audio_samples()
    left = audio.samples[0]
    wanted, other = (LOW, HIGH) if default_track == 0 else (HIGH, LOW)
    assert tone_share(left, audio.rate, wanted) > 0.5
    assert tone_share(left, audio.rate, other) < 0.01


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_a_cover_picture_is_never_taken_as_the_video(tmp_path: Path, container: str) -> None:
    source = make_cover_picture_clip(tmp_path / f"cover.{container}", cover_size=600, seconds=1.0)
    info = transcoder.probe(source)
    assert (info.video.codec, info.video.display_width, info.video.display_height) == ("h264", 320, 180)

    done = run(source, tmp_path / "out")
    for rendition in done.videos:
        assert rendition.width is not None and rendition.height is not None
        assert rendition.width > rendition.height  # the 16:9 video, not the square cover
        frames = [f for p in done.segment_paths(rendition.name) for f in decoded_video(str(p))]
        assert len(frames) == 30  # one second at 30 fps: the moving video, not a still


def test_a_mid_stream_size_change_keeps_one_size_per_rung(tmp_path: Path) -> None:
    source = make_resolution_change(tmp_path / "resize.ts", first=(320, 180), second=(480, 270), seconds=1.0)
    done = run(source, tmp_path / "out")
    sizes_seen = set()
    for rendition in done.videos:
        frames = [f for p in done.segment_paths(rendition.name) for f in decoded_video(str(p))]
        assert {(f.width, f.height) for f in frames} == {(rendition.width, rendition.height)}
        assert len(frames) == 60  # both halves, at 30 fps
        sizes_seen.add((rendition.width, rendition.height))
    assert (320, 180) in sizes_seen  # the ladder is planned from the first size


def test_an_mpegts_timestamp_wrap_keeps_a_continuous_timeline(tmp_path: Path) -> None:
    source = make_ts_wrap(tmp_path / "wrap.ts", seconds=2.0, before_wrap_s=0.5)
    done = run(source, tmp_path / "out")
    assert abs(done.result.source.duration_s - 2.0) < 0.1
    for rendition in done.videos:
        frames = [f for p in done.segment_paths(rendition.name) for f in decoded_video(str(p))]
        assert len(frames) == 60
        pts = [f.pts for f in frames]
        assert all(b is not None and a is not None and b > a for a, b in itertools.pairwise(pts))
        assert abs(sum(done.extinfs(rendition.name)) - 2.0) < 0.05
    audio = done.audio_samples()
    assert abs(audio.samples.shape[1] / audio.rate - 2.0) < 0.05


@pytest.mark.parametrize("container", ["mp4", "ts"])
@pytest.mark.parametrize("damaged", [0.02, 0.1, 0.3])
def test_damage_in_the_middle_ends_in_a_full_ladder_or_one_clean_error(
    tmp_path: Path, container: str, damaged: float
) -> None:
    whole = make_clip(tmp_path / f"whole.{container}", seconds=2.0, container=container)
    source = make_corrupt_middle(tmp_path / f"damaged.{container}", whole, fraction=damaged)
    out = tmp_path / "out"
    try:
        done = run(source, out)
    except TranscodeError as error:
        # Light damage (a few broken packets) is concealed by the decoders;
        # only heavier damage may end the run, and then cleanly.
        assert damaged > 0.02, f"light damage was refused: {error}"
        text = str(error)
        assert text and "\n" not in text
        assert not (out / "master.m3u8").exists()
        assert not any(p.is_file() for p in out.rglob("*"))
        return
    _assert_full_ladder(done, seconds=2.0)


def _assert_full_ladder(done: Run, *, seconds: float) -> None:
    assert (done.out / "master.m3u8").exists()
    for rendition in done.videos:
        assert abs(sum(done.extinfs(rendition.name)) - seconds) < 0.1


def test_a_timestamp_bomb_is_refused_on_its_declared_duration(tmp_path: Path) -> None:
    source = make_timestamp_bomb(tmp_path / "bomb.mkv", hours=7.0)
    assert source.stat().st_size < 10_000
    with pytest.raises(LimitExceededError, match="too long") as refused:
        transcoder.probe(source)
    assert refused.value.retryable is False
    out = tmp_path / "out"
    with pytest.raises(LimitExceededError, match="too long"):
        transcoder.transcode(source, out)
    assert not any(p.is_file() for p in out.rglob("*")) if out.exists() else True


def test_a_declared_picture_size_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    source = make_huge_dimensions(tmp_path / "wide.mp4", width=8200, height=16, frames=3)
    with pytest.raises(LimitExceededError, match="dimensions"):
        transcoder.probe(source, limits=Limits(max_width=4096))
    with pytest.raises(InputError):
        transcoder.probe(source)  # 8200 is over the default limit too
