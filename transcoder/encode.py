"""Per-rung video encoding: constant frame rate, scaling, libx264, segmenting.

A :class:`RungEncoder` owns everything of one rung (scaler, x264 context,
``hls`` muxer) and is driven by one thread. It receives every decoded source
frame with its time and decides itself which output slots the frame fills, so
rungs with different frame rates share one decode.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from fractions import Fraction

import av
from av.video.frame import PictureType
from av.video.stream import VideoStream

from .bitstream import avc_codecs_tag
from .colour import OUTPUT_MATRIX, OUTPUT_PRIMARIES, OUTPUT_RANGE, OUTPUT_TRANSFER, ScalerColour
from .errors import CancelledError, MediaError
from .hold import StillGop, encode_still_gop, parameter_sets
from .models import Ladder, Rung
from .scale import Scaler
from .segmenter import HlsSegmenter, exact_segment_s
from .still import STILL_X264_PARAMS

# Applied before opening x264. Scene-cut keyframes off and min-keyint = keyint:
# every rung then has IDRs exactly every GOP, at the same timestamps, so
# segments line up across variants (players switch only at such points).
_X264_PARAMS = "keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0"
# Where an encoder that starts mid-timeline (a chunk, a resumed run) starts
# its VBV buffer, as a fraction of bufsize. x264's default, 0.9, suits a
# stream's start; mid-stream, a rung that VBV constrains sits lower: x264 plans
# to keep the buffer at least half full (clip_qscale in encoder/ratecontrol.c,
# "Try to get the buffer at least 50% filled"). Starting at 0.9 spent the
# difference on the chunk's first segment: +12% bytes there, +2.2% overall
# with a seam every 20 s. Measured on the bench's 60 s 1080p scene source
# against a serial run (bench/NOTES.md): 0.5 starved that segment (-0.67 dB
# PSNR-Y), 0.65 matched it (bytes +1%, -0.08 to -0.12 dB; all rungs +0.67%).
MID_STREAM_VBV_INIT = 0.65


def x264_options(rung: Rung, *, gop_frames: int, preset: str, crf: int, still: bool = False) -> dict[str, str]:
    """The exact libx264 options of ``rung`` (shown by ``transcode --plan``).

    ``still``: the source is still (slides, a screen recording: the index
    gate of :mod:`transcoder.prediction`); :data:`~transcoder.still.STILL_X264_PARAMS`
    are added. Without it the options are the preset's, as the ffmpeg CLI
    would be given them.
    """
    params = _X264_PARAMS.format(gop=gop_frames)
    if still:
        params += ":" + STILL_X264_PARAMS
    return {
        "preset": preset,
        "profile": rung.profile,
        "level": rung.level,
        "crf": str(crf),
        "maxrate": str(rung.maxrate_kbps * 1000),
        "bufsize": str(rung.bufsize_kbps * 1000),
        "x264-params": params,
        "forced-idr": "1",
    }


def codec_options(
    rung: Rung, *, gop_frames: int, preset: str, crf: int, lookahead_thread: bool, still: bool = False
) -> dict[str, str]:
    """:func:`x264_options` plus the threading choices of the plan that are x264 parameters.

    ``lookahead_thread=False`` adds ``sync-lookahead=0`` (ThreadPlan.x264_lookahead_thread):
    a threading choice like the frame-thread count, not a coding one.
    """
    options = x264_options(rung, gop_frames=gop_frames, preset=preset, crf=crf, still=still)
    if not lookahead_thread:
        options["x264-params"] += ":sync-lookahead=0"
    return options


class CfrSlots:
    """Maps source frame times to the output slots of a constant frame rate.

    Each output slot ``n`` (at ``n / fps`` seconds) shows the source frame
    nearest in time (ties go to the earlier one): a variable-rate source
    becomes constant-rate without drifting, a 60 fps source feeds a 30 fps
    rung every other frame. Times are exact fractions: no float drift.
    """

    def __init__(self, fps: Fraction) -> None:
        self.fps = fps
        self.next_slot = 0
        self._half = Fraction(1, 2) / fps

    def slots_before(self, time_s: Fraction) -> int:
        """How many pending slots the previous frame fills, given the next frame's time."""
        count = 0
        while self.next_slot / self.fps + self._half <= time_s:
            self.next_slot += 1
            count += 1
        return count

    def slots_until_end(self, end_s: Fraction) -> int:
        """Slots the last frame fills so the output lasts ``end_s`` seconds.

        The last frame gets no slot of its own when it lies between two output
        slots (a 60 fps source's last frame in a 30 fps rung); an output has
        at least one frame.
        """
        total = max(self.next_slot, frames_until(end_s, self.fps))
        count = total - self.next_slot
        self.next_slot = total
        return count


def frames_until(end_s: Fraction, fps: Fraction) -> int:
    """Frames an output at ``fps`` has when the timeline ends at ``end_s`` (at least one)."""
    return max(1, round(end_s * fps))


def segments_until(end_s: Fraction, fps: Fraction, segment_s: float) -> int:
    """Segments a rendition at ``fps`` cut every ``segment_s`` has when the timeline ends at ``end_s``.

    ``segment_s`` is a whole number of frames (:func:`rung_segment_s`): the
    muxer cuts at each keyframe on a multiple of it, so a rendition with ``n``
    frames has ``ceil(n / frames per segment)`` segments.
    """
    per_segment = max(1, round(Fraction(segment_s) * fps))
    return -(-frames_until(end_s, fps) // per_segment)


# A held last frame is encoded again and again; look at the cancel flag this
# often (frames) so a long hold stops promptly.
_HOLD_CANCEL_CHECK = 64
# Holds shorter than this many GOPs are encoded frame by frame: copying a
# still GOP (transcoder.hold) pays only when it replaces many encodes.
_HOLD_COPY_MIN_GOPS = 4


class RungEncoder:
    """Scales, encodes and segments one rung. One owner thread.

    Owns the x264 context and ``segmenter`` (whose muxer it feeds): call
    :meth:`close` on every path, success or failure, from the owner thread.
    """

    def __init__(
        self,
        rung: Rung,
        ladder: Ladder,
        *,
        segmenter: HlsSegmenter,
        preset: str,
        crf: int,
        threads: int,
        interpolation: str,
        lookahead_thread: bool = True,
        colour: ScalerColour | None = None,
        on_picture: Callable[[av.VideoFrame, Fraction, bool], None] | None = None,
        still: bool = False,
        start_slot: int = 0,
        end_slot: int | None = None,
    ) -> None:
        self.rung = rung
        # Resuming (transcoder.checkpoint): slots before this one are stored
        # already. They are counted but not encoded (nor scaled, unless
        # ``on_picture`` wants them), and x264 starts with an IDR here, a
        # segment boundary, so the segments from here on are whole.
        self.start_slot = start_slot
        # A chunk (transcoder.chunks) ends at a segment boundary: slots from
        # here on are another chunk's (None: the rendition's end).
        self.end_slot = end_slot
        # Called in the owner thread with each output picture (scaled, or the
        # last one reused: then True) and its first slot's time, before it is
        # encoded; a frame tap such as the chapter detector (transcoder.chapters).
        self._on_picture = on_picture
        self.gop_frames = ladder.gop_frames(rung)
        self.segmenter = segmenter
        # ``colour``: how the decoded frames differ from BT.709 limited range
        # (None: they do not).
        self.scaler = Scaler(rung.width, rung.height, interpolation=interpolation, colour=colour)
        self.slots = CfrSlots(rung.fps)
        self.codecs: str | None = None
        self.frames_out = 0  # slots filled, skipped ones (before start_slot) included
        self.reused_frames = 0  # source frames that reused the last scaled frame
        self._pending: av.VideoFrame | None = None
        self._pending_same = False
        # The frame scaled last, while every source frame since equalled its
        # predecessor (None once one did not): a repeat can reuse it.
        self._last_scaled: av.VideoFrame | None = None
        stream = segmenter.container.add_stream("libx264", rate=rung.fps)
        stream.width = rung.width
        stream.height = rung.height
        stream.pix_fmt = "yuv420p"
        cc = stream.codec_context
        cc.time_base = 1 / rung.fps
        cc.framerate = rung.fps
        # PyAV's default is SLICE threading (sliced_threads=1 in x264's SEI):
        # less efficient and it costs bitrate. Frame threads, counted by the plan.
        cc.thread_type = "FRAME"
        cc.thread_count = threads
        cc.bit_rate = rung.bitrate_kbps * 1000
        # Every rung is BT.709 limited range (the scaler or the decoder's tone
        # map made it so): say it in the SPS VUI (and the muxers' colr box),
        # or players guess, and some guess BT.601.
        cc.color_primaries = OUTPUT_PRIMARIES
        cc.color_trc = OUTPUT_TRANSFER
        cc.colorspace = OUTPUT_MATRIX
        cc.color_range = OUTPUT_RANGE
        self._options = codec_options(
            rung,
            gop_frames=self.gop_frames,
            preset=preset,
            crf=crf,
            lookahead_thread=lookahead_thread,
            still=still,  # a still source's settings (x264_options)
        )
        options = dict(self._options)
        if start_slot > 0 and rung.maxrate_kbps:
            # Not in self._options: still GOPs (transcoder.hold) are short
            # streams of their own, encoded alike in every run.
            options["x264-params"] += f":vbv-init={MID_STREAM_VBV_INIT}"
        cc.options = options
        self._stream: VideoStream | None = stream
        self._muxer_closed = False
        self._time_base = cc.time_base
        # What a still GOP must match to be spliced in (see _hold): taken from
        # this encoder's first packet and first keyframe.
        self._dts_delay: int | None = None
        self._parameter_sets: bytes | None = None

    @property
    def encoded_frames(self) -> int:
        """Slots this encoder filled itself (copies of a still GOP included), not an earlier run."""
        return max(0, self.frames_out - self.start_slot)

    @property
    def encoded_s(self) -> float:
        return self.frames_out / float(self.rung.fps)

    def push(self, frame: av.VideoFrame, time_s: Fraction, same: bool = False) -> None:
        """Feed the next source frame, shown from ``time_s`` (seconds from the start).

        ``same``: the frame's pictures equal the previous frame's (a still
        slide); the rung then reuses its last scaled frame instead of scaling
        again.
        """
        if self._pending is not None:
            repeat = self.slots.slots_before(time_s)
            self._emit(self._pending, repeat, self._pending_same)
        self._pending_same = same or frame is self._pending
        self._pending = frame

    def finish(self, end_s: Fraction, *, cancel: threading.Event | None = None) -> None:
        """Fill the output up to ``end_s``, flush the encoder and close the muxer.

        ``end_s`` may lie far past the last frame (audio that outlasts the
        video): the last frame is held, scaled once and repeated for every
        remaining slot (long holds as copies of one encoded GOP, see
        :meth:`_hold`), so memory does not grow with the hold. ``cancel``
        stops a long hold (:class:`CancelledError`).
        """
        flushed = False
        if self._pending is not None:
            flushed = self._hold(self._pending, self.slots.slots_until_end(end_s), self._pending_same, cancel)
            self._pending = None
        self._last_scaled = None
        if not flushed:
            self._encode(None)
        self._muxer_closed = True  # even if closing fails: the muxer cannot be closed twice
        self.segmenter.close()

    def close(self) -> None:
        """Release the x264 context and the muxer; idempotent, never raises.

        After :meth:`finish` the muxer is closed already; otherwise (this rung
        or another stage failed, or the run was cancelled) it is abandoned. PyAV
        frees a codec context, joining x264's threads, only when its last
        reference goes: the muxer drops its own when it closes and this drops
        the encoder's, so the threads end here and not whenever the garbage
        collector frees a failed run's objects. Counters, :attr:`codecs` and
        the segmenter's measurements stay readable.
        """
        if not self._muxer_closed:
            self._muxer_closed = True
            self.segmenter.abandon()
        self._stream = None
        self._pending = None
        self._last_scaled = None

    def _open_stream(self) -> VideoStream:
        if self._stream is None:
            raise MediaError("the rung's encoder is closed", context={"rung": self.rung.name})
        return self._stream

    def _hold(self, source: av.VideoFrame, count: int, same: bool, cancel: threading.Event | None) -> bool:
        """Show ``source`` for ``count`` more slots; True if the encoder was flushed.

        A long hold is cut at GOP boundaries: the encoder encodes up to the
        first boundary (and on until it has put out its first packet), is
        flushed there, and the remaining whole GOPs are copies of one still
        GOP, the last partial one a shorter still GOP: closed GOPs of the same
        picture, the same parameter sets and the same decode delay, so the
        stream reads as if the encoder had gone on. Anything that does not
        match falls back to encoding every slot.
        """
        if self.frames_out < self.start_slot:
            # Resumed inside the hold: the slots before the start are stored already.
            skipped = min(count, self.start_slot - self.frames_out)
            self._emit(source, skipped, same, cancel=cancel)
            count, same = count - skipped, True
        gop = self.gop_frames
        if gop < 2 or count < _HOLD_COPY_MIN_GOPS * gop:
            self._emit(source, count, same, cancel=cancel)
            return False
        done = min(count, (-self.frames_out) % gop)
        self._emit(source, done, same, cancel=cancel)
        # From here on ``source`` is what was scaled last: emits reuse it.
        while self._dts_delay is None and count - done >= _HOLD_COPY_MIN_GOPS * gop:
            self._emit(source, gop, True, cancel=cancel)  # x264's lookahead still holds every frame
            done += gop
        copies, rest = divmod(count - done, gop)
        if copies >= _HOLD_COPY_MIN_GOPS - 1 and self._dts_delay is not None:
            picture = self._last_scaled if self._last_scaled is not None else self.scaler.scale(source)
            fps = self.rung.fps
            like = self._open_stream().codec_context
            still = encode_still_gop(picture, gop, like=like, options=self._options, fps=fps)
            tail = encode_still_gop(picture, rest, like=like, options=self._options, fps=fps) if rest else None
            if self._interchangeable(still) and (rest == 0 or self._interchangeable(tail)):
                assert still is not None
                self._encode(None)
                for _ in range(copies):
                    if cancel is not None and cancel.is_set():
                        raise CancelledError("stopped while holding the last frame", context={"rung": self.rung.name})
                    self._splice(still)
                if tail is not None:
                    self._splice(tail)
                return True
        self._emit(source, count - done, True, cancel=cancel)
        return False

    def _interchangeable(self, still: StillGop | None) -> bool:
        return (
            still is not None
            and still.dts_delay == self._dts_delay
            and bool(still.parameter_sets)
            and still.parameter_sets == self._parameter_sets
        )

    def _splice(self, still: StillGop) -> None:
        """Mux a copy of ``still`` at the next slot (a GOP boundary)."""
        start = self.frames_out
        for p in still.packets:
            packet = av.Packet(p.data)
            packet.pts = start + p.pts
            packet.dts = start + p.dts
            packet.duration = p.duration
            packet.is_keyframe = p.keyframe
            packet.time_base = self._time_base
            packet.stream = self._open_stream()
            self.segmenter.mux(packet)
        self.frames_out += still.frames

    def _emit(self, source: av.VideoFrame, repeat: int, same: bool, *, cancel: threading.Event | None = None) -> None:
        if not same:
            self._last_scaled = None  # the picture changed since the last scaled frame
        if repeat <= 0:
            return
        if self._on_picture is None and self.frames_out < self.start_slot:
            # Stored by an earlier run: nothing to scale or encode.
            skipped = min(repeat, self.start_slot - self.frames_out)
            self.frames_out += skipped
            repeat -= skipped
            if repeat == 0:
                return
        reused = self._last_scaled is not None
        if self._last_scaled is not None:
            # Equal to what was scaled last: the same output picture. Encoding
            # only reads it (pts and picture type are set again below).
            frame = self._last_scaled
            self.reused_frames += 1
        else:
            frame = self.scaler.scale(source)
            self._last_scaled = frame
        if self._on_picture is not None:
            self._on_picture(frame, Fraction(self.frames_out) / self.rung.fps, reused)
        for index in range(repeat):
            if cancel is not None and index % _HOLD_CANCEL_CHECK == 0 and cancel.is_set():
                raise CancelledError("stopped while holding the last frame", context={"rung": self.rung.name})
            slot = self.frames_out
            if self.end_slot is not None and slot >= self.end_slot:
                return  # the next chunk's
            if slot < self.start_slot:
                self.frames_out += 1  # the picture went to on_picture only
                continue
            if slot == self.start_slot and index > 0 and self._on_picture is not None:
                # Shown from before the start into it: offered again at the
                # start, where a chunk's own pictures begin (transcoder.viewer).
                # A chunk decoded from a keyframe at its start holds that first
                # frame from slot 0: it would otherwise be offered at time 0.
                self._on_picture(frame, Fraction(slot) / self.rung.fps, True)
            frame.pts = slot
            frame.time_base = self._time_base
            # Decoded frames keep the source's picture type, which x264 would
            # take as forced frame types: reset it, and force I only at GOPs.
            frame.pict_type = PictureType.I if slot % self.gop_frames == 0 else PictureType.NONE
            self._encode(frame)
            self.frames_out += 1

    def _encode(self, frame: av.VideoFrame | None) -> None:
        try:
            packets = self._open_stream().encode(frame)
        except av.FFmpegError as exc:
            raise MediaError(
                "video encoding failed", context={"rung": self.rung.name, "frame": self.frames_out}
            ) from exc
        for packet in packets:
            if self._dts_delay is None and packet.pts is not None and packet.dts is not None:
                self._dts_delay = packet.pts - packet.dts
            if self.codecs is None and packet.is_keyframe:
                extradata = bytes(self._open_stream().codec_context.extradata or b"")
                self.codecs = avc_codecs_tag(extradata or bytes(packet))
                self._parameter_sets = parameter_sets(extradata) + parameter_sets(bytes(packet))
            self.segmenter.mux(packet)


def rung_segment_s(ladder: Ladder, rung: Rung) -> float:
    """The exact segment length of ``rung`` (a whole number of its GOPs)."""
    return exact_segment_s(ladder.segment_s, ladder.gop_s, rung.fps)


__all__ = [
    "CfrSlots",
    "RungEncoder",
    "frames_until",
    "rung_segment_s",
    "segments_until",
    "x264_options",
]
