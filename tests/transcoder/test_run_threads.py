"""No thread outlives a run: the coordinator's stages release their FFmpeg objects on every path.

A run starts the stage threads (decoder, one per rung, audio) and, through
FFmpeg, x264's frame threads, the decoder's frame threads and others. They
must all have ended when ``transcode`` returns or raises, whatever happened:
PyAV joins a codec context's threads only when the context is freed, so a
reference left in a failed run's objects (or in its error's traceback) would
keep them alive. The garbage collector is off while these tests run: it must
not be what ends them.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import pytest

import transcoder
from tests.support.media import ClipFactory
from tests.support.media_damaged import make_zeroed_tail
from transcoder import (
    CancelledError,
    EncoderSettings,
    InputError,
    LadderPolicy,
    LocalDirectory,
    OutputError,
    RungSpec,
    TranscodeConfig,
    TranscodeError,
)
from transcoder.encode import RungEncoder, rung_segment_s
from transcoder.errors import MediaError
from transcoder.ladder import plan_ladder
from transcoder.segmenter import HlsSegmenter

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads the process's threads from /proc")

LADDER = LadderPolicy(
    rungs=(RungSpec(short_side=180, bitrate_kbps=400), RungSpec(short_side=144, bitrate_kbps=200)),
    min_rung_saving=0.0,
)
STAGE_THREADS = 4  # decoder, two rungs, audio
# Threads a thread that has been joined needs to leave /proc: seconds, bounded.
EXIT_GRACE_S = 10.0


def config() -> TranscodeConfig:
    # A budget of 4 cores: x264 and the decoder run frame threads, so a leak has threads to leak.
    # Half-second segments: the first ones are stored long before a failure late in the clip.
    return TranscodeConfig(
        ladder=LADDER, encoder=EncoderSettings(preset="ultrafast"), segment_s=0.5, gop_s=0.5, threads=4
    )


def threads_now() -> dict[int, str]:
    """The process's OS threads: id -> name."""
    found: dict[int, str] = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            found[int(task.name)] = (task / "comm").read_text().strip()
    return found


def threads_left(before: set[int]) -> dict[int, str]:
    """Threads not in ``before`` that are still there after at most ``EXIT_GRACE_S`` (at once when none are)."""
    deadline = time.monotonic() + EXIT_GRACE_S
    tick = threading.Event()  # never set: a bounded wait between looks
    while True:
        left = {tid: name for tid, name in threads_now().items() if tid not in before}
        if not left or time.monotonic() >= deadline:
            return left
        tick.wait(0.02)


@pytest.fixture
def no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class WatchingSink(LocalDirectory):
    """A local directory that counts the run's threads at every put, and fails or cancels the run at one."""

    def __init__(
        self,
        root: Path,
        *,
        before: set[int],
        fail_at: int = 0,
        cancel_at: int = 0,
        cancel: threading.Event | None = None,
    ) -> None:
        super().__init__(root)
        self.before = before
        self.fail_at = fail_at
        self.cancel_at = cancel_at
        self.cancel = cancel
        self.puts = 0
        self.most_threads = 0  # the most threads of the run seen at once
        self._count_lock = threading.Lock()

    def put(self, relpath: str, data: bytes) -> None:
        with self._count_lock:
            self.most_threads = max(self.most_threads, len(set(threads_now()) - self.before))
            self.puts += 1
            puts = self.puts
        if puts == self.fail_at:
            raise OutputError("disk full (test)", context={"path": relpath})
        if puts == self.cancel_at and self.cancel is not None:
            self.cancel.set()
        super().put(relpath, data)


@pytest.mark.parametrize("failure", ["failing-sink", "cancel", "corrupt-source"])
def test_no_thread_outlives_a_failed_run(clip: ClipFactory, tmp_path: Path, no_gc: None, failure: str) -> None:
    source = clip(width=320, height=180, seconds=3.0)
    expected: type[TranscodeError] = OutputError
    cancel = threading.Event()
    before = set(threads_now())
    sink = WatchingSink(tmp_path / "out", before=before)
    if failure == "failing-sink":
        sink.fail_at = 3
    elif failure == "cancel":
        sink.cancel_at, sink.cancel, expected = 2, cancel, CancelledError
    else:
        # Packets from 80% of the media data on are zeros: decoding fails near 2.4 s, and the
        # bounded queues keep every rung within 8 frames of the decoder, past several segments.
        source = make_zeroed_tail(tmp_path / "damaged.mp4", source, from_fraction=0.8)
        expected = InputError
    with pytest.raises(expected) as raised:
        transcoder.transcode(source, sink, config=config(), cancel=cancel)
    if failure == "corrupt-source":
        assert "corrupt" in str(raised.value)
    assert sink.puts >= 2  # the run failed mid-encode, after segments were stored ...
    assert sink.most_threads > STAGE_THREADS  # ... with FFmpeg's threads running besides the stages
    # The error is still held here, with its traceback: neither may keep a thread alive.
    assert threads_left(before) == {}
    assert raised.value.__traceback__ is not None


def test_no_thread_outlives_a_successful_run(clip: ClipFactory, tmp_path: Path, no_gc: None) -> None:
    source = clip(width=320, height=180, seconds=3.0)
    before = set(threads_now())
    sink = WatchingSink(tmp_path / "out", before=before)
    result = transcoder.transcode(source, sink, config=config())
    assert [r.name for r in result.renditions] == ["180p", "144p", "audio"]
    assert sink.most_threads > STAGE_THREADS
    assert threads_left(before) == {}
    assert (tmp_path / "out" / "master.m3u8").is_file()


def test_closing_an_unfinished_rung_encoder_ends_its_x264_threads(
    clip: ClipFactory, tmp_path: Path, no_gc: None
) -> None:
    source = clip(width=320, height=180, seconds=1.0)
    info = transcoder.probe(source)
    ladder = plan_ladder(info, LADDER, gop_s=0.5, segment_s=0.5)
    rung = ladder.rungs[0]
    out = tmp_path / "out"
    segmenter = HlsSegmenter(name=rung.name, sink=LocalDirectory(out), segment_s=rung_segment_s(ladder, rung))
    before = set(threads_now())
    encoder = RungEncoder(
        rung, ladder, segmenter=segmenter, preset="ultrafast", crf=23, threads=3, interpolation="bicubic"
    )
    with av.open(str(source)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            encoder.push(frame, Fraction(index, 30))
    assert len(set(threads_now()) - before) >= 3  # x264's frame threads, started by the first frame
    encoder.close()  # the run failed elsewhere: no finish
    # The encoder object is still referenced here; its x264 context is not.
    assert threads_left(before) == {}
    assert encoder.frames_out > 0 and encoder.codecs is not None  # what the coordinator reads stays readable
    # The muxer was abandoned: the segments it cut are stored (for the run's sink to remove).
    assert [path.name for path in sorted((out / rung.name).iterdir())][:1] == ["seg_00000.ts"]
    encoder.close()  # idempotent
    with pytest.raises(MediaError, match="closed"):
        encoder.finish(Fraction(1))
