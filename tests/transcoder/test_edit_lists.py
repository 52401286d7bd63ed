"""Edit lists (files trimmed without re-encoding) and real truncation told apart.

The source clip (``tests.support.media_edits.make_marked_clip``) is 2 s at 30 fps with a
keyframe every 30 frames; every frame shows its index as blocks, frame 30
(t = 1.0 s) is a white flash and the audio is silent until a tone starts at
1.0 s. ``ffmpeg -ss 0.5 -c copy`` keeps the whole first GOP and writes an edit
list hiding its first 15 frames: they must be decoded (the trim starts
mid-GOP) but never shown. So the output must start with frame 15, last 1.5 s,
and have the flash 0.5 s in, at the same time as the tone's onset.
"""

from __future__ import annotations

import dataclasses
import io
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

import transcoder
from tests.support.media import make_clip, make_truncated_faststart
from tests.support.media_edits import cut_mdat, end_edit_early, is_flash, make_marked_clip, read_marker, trim
from transcoder import EncoderSettings, InputError, SourceInfo, TranscodeConfig
from transcoder.decode import Decoder

FPS = 30
FRAME_S = 1 / FPS
TRIM_S = 0.5
FIRST_SHOWN = 15  # round(TRIM_S * FPS): the first frame the edit shows
SOURCE_FRAMES = 60
FLASH_SOURCE_S = 1.0  # the flash and the tone onset, in the untrimmed source
EDITED_S = 2.0 - TRIM_S


def config() -> TranscodeConfig:
    return TranscodeConfig(encoder=EncoderSettings(preset="ultrafast"), poster=False)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edits")


@pytest.fixture(scope="module")
def trimmed(media: Path) -> Callable[[str], Path]:
    """``trimmed(kind)``: the source trimmed at 0.5 s by ``ffmpeg -ss 0.5 -c copy``.

    kinds: ``mp4``, ``mov``, and ``faststart`` (an mp4 with its index first,
    so cutting its bytes keeps the index).
    """
    made: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in made:
            suffix = ".mov" if kind == "mov" else ".mp4"
            source = make_marked_clip(media / f"source-{kind}{suffix}")
            extra = ("-movflags", "+faststart") if kind == "faststart" else ()
            made[kind] = trim(media / f"trimmed-{kind}{suffix}", source, TRIM_S, extra=extra)
        return made[kind]

    return get


# ----------------------------------------------------------------------------- reading the output


@dataclasses.dataclass(frozen=True, slots=True)
class Output:
    frames: list[av.VideoFrame]  # the video rendition, decoded
    extinf_s: float  # the video playlist's total duration
    audio_start_s: float  # first audio sample, on the MPEG-TS clock
    audio: np.ndarray[Any, np.dtype[np.float64]]  # channel 0
    audio_rate: int


def _segments(out: Path, rendition: str) -> tuple[bytes, float]:
    lines = (out / rendition / "index.m3u8").read_text(encoding="utf-8").splitlines()
    uris = [line for line in lines if line and not line.startswith("#")]
    total = sum(float(line.split(":", 1)[1].rstrip(",")) for line in lines if line.startswith("#EXTINF:"))
    return b"".join((out / rendition / uri).read_bytes() for uri in uris), total


def read_output(out: Path, result: transcoder.TranscodeResult) -> Output:
    video = next(r for r in result.renditions if r.kind == "video")
    data, total = _segments(out, video.name)
    with av.open(io.BytesIO(data), mode="r", format="mpegts") as container:
        frames = list(container.decode(video=0))
    adata, _ = _segments(out, "audio")
    with av.open(io.BytesIO(adata), mode="r", format="mpegts") as container:
        aframes = list(container.decode(audio=0))
    assert aframes and aframes[0].time is not None
    samples = np.concatenate([f.to_ndarray() for f in aframes], axis=1).astype(np.float64)
    return Output(frames, total, float(aframes[0].time), samples[0], aframes[0].sample_rate)


def onset_s(output: Output) -> float:
    """Where the tone starts, on the MPEG-TS clock."""
    loud = np.flatnonzero(np.abs(output.audio) > 0.05)
    assert loud.size, "no tone in the output"
    return output.audio_start_s + float(loud[0]) / output.audio_rate


# ----------------------------------------------------------------------------- probing a trimmed file


@pytest.mark.parametrize("kind", ["mp4", "mov"])
def test_probe_reports_the_edited_duration_and_the_shown_frames(trimmed: Callable[[str], Path], kind: str) -> None:
    info = transcoder.probe(trimmed(kind))
    assert info.duration_s == pytest.approx(EDITED_S, abs=FRAME_S)
    assert info.video.duration_s == pytest.approx(EDITED_S, abs=FRAME_S)
    # The whole first GOP is still in the file: the index lists it, the edit hides 15 frames.
    assert info.video.frame_count == SOURCE_FRAMES
    assert info.video.shown_frames == SOURCE_FRAMES - FIRST_SHOWN


def test_an_untrimmed_file_shows_every_frame(clip: Callable[..., Path]) -> None:
    info = transcoder.probe(clip(seconds=1.0))
    assert info.video.frame_count == 30
    assert info.video.shown_frames == 30


def test_a_container_without_a_sample_table_has_no_shown_count(clip: Callable[..., Path]) -> None:
    # Matroska's index lists only keyframes: counting it would undercount the frames.
    info = transcoder.probe(clip(seconds=1.0, container="mkv"))
    assert info.video.shown_frames is None


# ----------------------------------------------------------------------------- transcoding a trimmed file


@pytest.fixture(scope="module")
def transcoded(trimmed: Callable[[str], Path], media: Path) -> Callable[[str], Output]:
    done: dict[str, Output] = {}

    def get(kind: str) -> Output:
        if kind not in done:
            out = media / f"out-{kind}"
            result = transcoder.transcode(trimmed(kind), out, config=config())
            assert (out / result.master_uri).is_file()
            assert result.source.duration_s == pytest.approx(EDITED_S, abs=FRAME_S)
            done[kind] = read_output(out, result)
        return done[kind]

    return get


@pytest.mark.parametrize("kind", ["mp4", "mov"])
def test_the_output_starts_with_the_first_shown_frame_and_shows_no_hidden_one(
    transcoded: Callable[[str], Output], kind: str
) -> None:
    markers = [read_marker(frame) for frame in transcoded(kind).frames]
    # Every shown frame once, in order; none of the 15 hidden ones, none lost.
    assert markers == list(range(FIRST_SHOWN, SOURCE_FRAMES))


@pytest.mark.parametrize("kind", ["mp4", "mov"])
def test_the_output_lasts_the_edited_duration(transcoded: Callable[[str], Output], kind: str) -> None:
    output = transcoded(kind)
    assert output.extinf_s == pytest.approx(EDITED_S, abs=FRAME_S)
    first, last = output.frames[0].time, output.frames[-1].time
    assert first is not None and last is not None
    assert last - first + FRAME_S == pytest.approx(EDITED_S, abs=FRAME_S)


@pytest.mark.parametrize("kind", ["mp4", "mov"])
def test_audio_and_video_stay_in_sync(transcoded: Callable[[str], Output], kind: str) -> None:
    output = transcoded(kind)
    flashes = [frame.time for frame in output.frames if is_flash(frame)]
    assert len(flashes) == 1 and flashes[0] is not None
    first = output.frames[0].time
    assert first is not None
    # The flash is where the edit puts it: 0.5 s after the first shown frame ...
    assert flashes[0] - first == pytest.approx(FLASH_SOURCE_S - TRIM_S, abs=FRAME_S / 2)
    # ... and the tone starts with it. 5 ms, well under a frame: the trim point
    # falls inside an AAC frame (1024 samples, 21 ms), so the edit's skip
    # samples must be honoured too, not only its dropped packets.
    assert onset_s(output) == pytest.approx(flashes[0], abs=0.005)


def test_an_edit_that_also_hides_the_end(trimmed: Callable[[str], Path], media: Path) -> None:
    # Both ends trimmed (QuickTime style): the edit shows 1.0 s from 0.5 s,
    # frames 15..44; the 15 after it stay in the file, hidden like the first 15.
    path = end_edit_early(media / "both-ends.mp4", trimmed("mp4"), show_s=1.0)
    info = transcoder.probe(path)
    assert (info.video.frame_count, info.video.shown_frames) == (SOURCE_FRAMES, 30)
    assert info.video.duration_s == pytest.approx(1.0, abs=FRAME_S)
    out = media / "out-both-ends"
    output = read_output(out, transcoder.transcode(path, out, config=config()))
    markers = [read_marker(frame) for frame in output.frames]
    # Only the video's edit ends early: its audio goes on to 1.5 s, so the
    # last shown frame is held under it (audio that outlasts the video is kept).
    assert markers[:30] == list(range(FIRST_SHOWN, FIRST_SHOWN + 30))
    assert set(markers[30:]) <= {FIRST_SHOWN + 29}
    assert output.extinf_s == pytest.approx(1.5, abs=FRAME_S)


# ----------------------------------------------------------------------------- real truncation


def test_a_cut_file_is_refused_from_its_index(media: Path) -> None:
    path = make_truncated_faststart(media / "cut.mp4")  # a plain clip, half its mdat gone
    for source in (path, io.BytesIO(path.read_bytes())):  # a path, or a file object: its size is one seek away
        with pytest.raises(InputError, match="input is truncated") as caught:
            transcoder.probe(source)
        context = caught.value.context
        assert context["size_bytes"] == path.stat().st_size
        assert context["indexed_end_bytes"] > context["size_bytes"]
        assert context["stream"] == "video" and 0 < context["missing_samples"] < context["indexed_samples"]


def _run_decoder(source: Any, info: SourceInfo) -> list[int]:
    """Run a :class:`Decoder` alone; return the markers of the frames it handed on."""
    seen: list[int] = []

    def on_video(frame: av.VideoFrame, _time: Fraction) -> None:
        seen.append(read_marker(frame))

    Decoder(source, info, threads=1, on_video=on_video, on_audio=None, cancel=threading.Event()).run()
    return seen


def test_a_trimmed_and_cut_file_is_refused_before_decoding(trimmed: Callable[[str], Path], media: Path) -> None:
    path = cut_mdat(media / "trimmed-cut.mp4", trimmed("faststart"), keep_fraction=0.6)
    with pytest.raises(InputError, match="input is truncated") as caught:
        transcoder.probe(path)
    # Refused from the index (the probe checks it before decoding a frame).
    assert caught.value.context["indexed_end_bytes"] > caught.value.context["size_bytes"] == path.stat().st_size
    out = media / "out-trimmed-cut"
    with pytest.raises(InputError, match="input is truncated") as ran:
        transcoder.transcode(path, out, config=config())
    assert "indexed_end_bytes" in ran.value.context and ran.value.retryable is False
    assert not (out / "master.m3u8").exists()


def test_without_the_index_check_the_decoder_still_counts_the_shown_frames(
    trimmed: Callable[[str], Path], media: Path
) -> None:
    # As if the index check had not run: the whole file's description (the
    # same index: 60 frames, 45 shown) with the cut file's bytes. The
    # decoder's count is the last line, and it expects the 45 shown frames.
    whole = trimmed("faststart")
    path = cut_mdat(media / "trimmed-cut-2.mp4", whole, keep_fraction=0.6)
    with pytest.raises(InputError, match="input is truncated") as caught:
        _run_decoder(path, transcoder.probe(whole))
    context = caught.value.context
    assert (context["indexed_frames"], context["shown_frames"]) == (SOURCE_FRAMES, SOURCE_FRAMES - FIRST_SHOWN)
    assert 0 < context["decoded_frames"] < SOURCE_FRAMES - FIRST_SHOWN


def test_the_whole_trimmed_file_passes_the_decoders_count(trimmed: Callable[[str], Path]) -> None:
    path = trimmed("faststart")
    markers = _run_decoder(path, transcoder.probe(path))
    assert markers == list(range(FIRST_SHOWN, SOURCE_FRAMES))


def test_a_file_cut_after_its_last_sample_is_accepted(media: Path) -> None:
    # Bytes after the last indexed sample (a trailing box, padding) are not media:
    # losing them is no truncation.
    source = make_clip(media / "padded.mp4", seconds=1.0, faststart=True)
    padded = media / "padded-tail.mp4"
    padded.write_bytes(source.read_bytes() + b"\0\0\0\x10free" + b"\0" * 8)
    assert transcoder.probe(padded).video.shown_frames == 30
    cut = media / "padded-cut.mp4"
    cut.write_bytes(padded.read_bytes()[:-8])
    assert transcoder.probe(cut).video.shown_frames == 30  # accepted: no sample was lost
