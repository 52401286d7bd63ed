"""Hostile and broken inputs: refused with an InputError, nothing written, nothing leaked.

For every input both entry points are tried: ``probe`` (what an upload
handler calls first) and ``transcode`` (which must refuse on its own, before
or while decoding, and leave no master playlist). Files that refer to other
resources (an HLS playlist, an ffconcat script, an mp4 with an external data
reference) are run next to a loopback HTTP canary and a secret file: the
engine must neither reach the canary nor copy the secret into its output.
"""

from __future__ import annotations

import struct
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

import transcoder
from tests.support.canary import CanaryServer
from tests.support.media import (
    make_audio_only,
    make_clip,
    make_concat_trap,
    make_empty,
    make_hls_trap,
    make_huge_dimensions,
    make_image_as_video,
    make_many_streams,
    make_random_bytes,
    make_text,
    make_truncated,
    make_truncated_faststart,
)
from transcoder import (
    EncoderSettings,
    InputError,
    LimitExceededError,
    Limits,
    TranscodeConfig,
    UnsupportedInputError,
)

SECRET = "SECRET-5e1f0c9a-must-never-leave-this-file"

# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def secret_file(hostile_dir: Path) -> Path:
    path = hostile_dir / "secret.txt"
    path.write_text(SECRET + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def canary() -> Iterator[CanaryServer]:
    with CanaryServer() as server:
        yield server


def config_with(limits: Limits | None = None) -> TranscodeConfig:
    return TranscodeConfig(limits=limits or Limits(), encoder=EncoderSettings(preset="ultrafast"), poster=False)


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def assert_clear(error: InputError) -> None:
    """One readable line a person can act on; never retryable."""
    text = str(error)
    assert text and "\n" not in text
    assert "Traceback" not in text
    assert error.retryable is False


def assert_nothing_written(outdir: Path) -> None:
    assert not (outdir / "master.m3u8").exists()
    assert files_under(outdir) == []


def assert_refused(
    path: Path, outdir: Path, expected: type[InputError], match: str, limits: Limits | None = None
) -> None:
    """Both ``probe`` and ``transcode`` raise ``expected`` (message matching ``match``); no output."""
    with pytest.raises(expected, match=match) as probed:
        transcoder.probe(path, limits=limits or Limits())
    assert_clear(probed.value)
    with pytest.raises(expected, match=match) as ran:
        transcoder.transcode(path, outdir, config=config_with(limits))
    assert_clear(ran.value)
    assert_nothing_written(outdir)


# ----------------------------------------------------------------------------- not media at all

NOT_READABLE = "not a readable video file|not a supported video container"


@dataclass(frozen=True, slots=True)
class Case:
    make: Callable[[Path], Path]
    expected: type[InputError]
    match: str
    limits: Limits | None = None


def _truncated_moov_at_end(path: Path) -> Path:
    source = make_clip(path.with_name("whole-" + path.name), seconds=1.0)
    return make_truncated(path, source)


CASES: dict[str, Case] = {
    "empty": Case(lambda p: make_empty(p / "empty.mp4"), InputError, "input is empty"),
    "random-bytes": Case(lambda p: make_random_bytes(p / "random.mp4"), InputError, NOT_READABLE),
    "text": Case(lambda p: make_text(p / "notes.mp4"), InputError, NOT_READABLE),
    "png-as-mp4": Case(lambda p: make_image_as_video(p / "picture.mp4"), InputError, NOT_READABLE),
    "jpeg-as-mp4": Case(lambda p: make_image_as_video(p / "photo.mp4", codec="mjpeg"), InputError, NOT_READABLE),
    "truncated-moov-at-end": Case(lambda p: _truncated_moov_at_end(p / "cut.mp4"), InputError, NOT_READABLE),
    "audio-only": Case(
        lambda p: make_audio_only(p / "song.mp4", seconds=0.5), UnsupportedInputError, "no video stream"
    ),
    "huge-width": Case(
        lambda p: make_huge_dimensions(p / "wide.mp4"), LimitExceededError, "dimensions", Limits(max_width=4096)
    ),
    "huge-height-default-limits": Case(
        lambda p: make_huge_dimensions(p / "tall.mp4", width=16, height=8200), LimitExceededError, "dimensions"
    ),
    "many-streams": Case(
        lambda p: make_many_streams(p / "streams.mkv", n=20, seconds=0.5),
        LimitExceededError,
        "too many streams",
        Limits(max_streams=16),
    ),
    "too-long": Case(
        lambda p: make_clip(p / "long.mp4", seconds=2.0, audio=False),
        LimitExceededError,
        "too long",
        Limits(max_duration_s=1.0),
    ),
    "too-large": Case(
        lambda p: make_clip(p / "large.mp4", seconds=0.5, audio=False),
        LimitExceededError,
        "too large",
        Limits(max_input_bytes=1000),
    ),
    "frame-rate-too-high": Case(
        lambda p: make_clip(p / "fast.mp4", seconds=0.5, fps=60, audio=False),
        LimitExceededError,
        "frame rate",
        Limits(max_fps=50),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_refused(name: str, hostile_dir: Path, tmp_path: Path) -> None:
    case = CASES[name]
    folder = hostile_dir / name
    folder.mkdir()
    path = case.make(folder)
    assert_refused(path, tmp_path / "out", case.expected, case.match, case.limits)


def test_error_names_the_input(hostile_dir: Path) -> None:
    path = make_random_bytes(hostile_dir / "named.mp4")
    with pytest.raises(InputError) as caught:
        transcoder.probe(path)
    assert caught.value.context["path"] == str(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("codec", ["png", "mjpeg"])
def test_image_is_reported_as_an_unsupported_container(codec: str, hostile_dir: Path) -> None:
    path = make_image_as_video(hostile_dir / f"whitelist-{codec}.mp4", codec=codec)
    with pytest.raises(InputError, match="not a supported video container"):
        transcoder.probe(path)


def test_missing_file(hostile_dir: Path, tmp_path: Path) -> None:
    assert_refused(hostile_dir / "no-such-file.mp4", tmp_path / "out", InputError, "not found")
    assert not (tmp_path / "out").exists()


def test_directory(hostile_dir: Path, tmp_path: Path) -> None:
    folder = hostile_dir / "a-folder.mp4"
    folder.mkdir()
    assert_refused(folder, tmp_path / "out", InputError, "directory")


def test_truncated_faststart_is_refused_from_its_index(hostile_dir: Path, tmp_path: Path) -> None:
    path = make_truncated_faststart(hostile_dir / "cut-faststart.mp4")
    # The index survives and points past the end of the file: refused before decoding.
    assert_refused(path, tmp_path / "out", InputError, "truncated")


# ----------------------------------------------------------------------------- references to other resources


def test_canary_control_a_plain_request_is_recorded(canary: CanaryServer) -> None:
    before = len(canary.hits)
    with urllib.request.urlopen(f"{canary.url}/control", timeout=5) as response:
        assert response.status == 200
    hits = canary.hits[before:]
    assert [(h.method, h.path) for h in hits] == [("GET", "/control")]


@pytest.fixture
def trap_canary() -> Iterator[CanaryServer]:
    """A canary of its own per trap, so a hit is blamed on the right file."""
    with CanaryServer() as server:
        yield server


def assert_no_leak(outdir: Path, canary: CanaryServer) -> None:
    assert canary.hits == []
    for path in files_under(outdir):
        assert SECRET.encode() not in path.read_bytes(), path


TRAPS: dict[str, Callable[[Path, str, Path], Path]] = {
    "hls-as-mp4": lambda d, url, secret: make_hls_trap(d / "trap-hls.mp4", url, secret),
    "hls-as-m3u8": lambda d, url, secret: make_hls_trap(d / "trap-hls.m3u8", url, secret),
    "ffconcat-as-avi": lambda d, url, secret: make_concat_trap(d / "trap-concat.avi", url, secret),
}


@pytest.mark.parametrize("name", list(TRAPS))
def test_trap_is_refused_without_following_it(
    name: str, hostile_dir: Path, secret_file: Path, trap_canary: CanaryServer, tmp_path: Path
) -> None:
    path = TRAPS[name](hostile_dir, trap_canary.url, secret_file)
    assert trap_canary.url in path.read_text(encoding="utf-8")
    outdir = tmp_path / "out"
    assert_refused(path, outdir, InputError, NOT_READABLE)
    with path.open("rb") as f, pytest.raises(InputError):
        transcoder.probe(f)  # a file object whose name says .m3u8/.avi: same refusal
    assert_no_leak(outdir, trap_canary)


# An mp4 whose sample data lives in another file. FFmpeg's mov demuxer reads an
# external reference only from a Mac alias ("alis") data-reference entry (it
# does not follow "url " entries); it opens it with enable_drefs=1 and, for an
# absolute path, use_absolute_path=1. The trap below is live under those
# options; the engine must refuse it without touching the referenced file.

_DREF_PATH = ("moov", "trak", "mdia", "minf", "dinf")


def _boxes(data: bytes) -> Iterator[tuple[str, bytes]]:
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size < 8:
            raise ValueError("unexpected box size")
        yield kind.decode("latin-1"), data[pos + 8 : pos + size]
        pos += size


def _box(kind: str, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind.encode("latin-1")) + payload


def _alias_entry(target: Path) -> bytes:
    """A minimal Mac alias record as libavformat's mov_read_dref parses it: an absolute path (type 2)."""
    path = str(target.resolve()).encode()
    fixed = (
        bytes(10)  # skipped
        + bytes(1 + 27)  # volume name: length 0
        + bytes(12)  # skipped
        + bytes(1 + 63)  # file name: length 0
        + bytes(16)  # skipped
        + struct.pack(">HH", 0, 0)  # nlvl_from, nlvl_to: no relative path
        + bytes(16)  # skipped
    )
    record = struct.pack(">hH", 2, len(path)) + path + bytes(len(path) % 2) + struct.pack(">hH", -1, 0)
    return _box("alis", bytes(4) + fixed + record)  # version/flags 0: not self-contained


def _with_dref(kind: str, payload: bytes, entry: bytes) -> bytes:
    if kind == "dref":
        return _box("dref", bytes(4) + struct.pack(">I", 1) + entry)
    if kind in _DREF_PATH:
        return _box(kind, b"".join(_with_dref(k, p, entry) for k, p in _boxes(payload)))
    return _box(kind, payload)


def make_external_reference(path: Path, data_file: Path) -> Path:
    """``ftyp`` + the ``moov`` of ``data_file`` (moov-at-end mp4) with its data reference pointing at it.

    No ``mdat``: every sample offset in the index lies in ``data_file``.
    """
    top = dict(_boxes(data_file.read_bytes()))
    path.write_bytes(_box("ftyp", top["ftyp"]) + _with_dref("moov", top["moov"], _alias_entry(data_file)))
    return path


def test_external_data_reference_is_not_followed(hostile_dir: Path, tmp_path: Path) -> None:
    private = make_clip(hostile_dir / "private-clip.mp4", seconds=1.0, audio=False)
    path = make_external_reference(hostile_dir / "external-ref.mp4", private)
    # Control: the trap is live. With FFmpeg's external references on, it decodes the other file.
    with av.open(str(path), options={"enable_drefs": "1", "use_absolute_path": "1"}) as container:
        assert sum(1 for _ in container.decode(video=0)) == 30
    with av.open(str(path)) as container:  # FFmpeg's default leaves it unread ...
        assert sum(1 for _ in container.decode(video=0)) == 0
    # ... and the engine refuses the file: its own bytes hold no picture.
    outdir = tmp_path / "out"
    with pytest.raises(InputError) as probed:
        transcoder.probe(path)
    assert_clear(probed.value)
    with pytest.raises(InputError):
        transcoder.transcode(path, outdir, config=config_with())
    assert_nothing_written(outdir)
