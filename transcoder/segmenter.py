"""One rendition's HLS segmenter: FFmpeg's ``hls`` muxer with captured I/O.

The muxer cuts segments at keyframes and writes MPEG-TS or fMP4 bytes; every
file it opens goes through :meth:`HlsSegmenter._io_open`, so nothing touches
the disk or the network except through the run's :class:`OutputSink`. As a
segment closes its bytes are measured (size, where its I-frames lie) and handed
to the sink at once, so an uploading sink stores segments while encoding goes
on. The muxer's own playlist is captured only to read its segment durations;
the playlists this project publishes are rendered by :mod:`transcoder.hls`.

One owner thread: the rendition's encoder thread creates, feeds and closes it.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import posixpath
import re
import weakref
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import av
import av.container

from .bitstream import first_sample_size, mp4_top_level_boxes, ts_iframe_ranges
from .errors import MediaError, OutputError
from .models import IFrameInfo, SegmentInfo
from .output import OutputSink

SegmentFormat = Literal["ts", "fmp4"]
_EXTINF = re.compile(r"#EXTINF:([0-9.]+),")
# The MPEG-TS muxer's delay budget, as the ffmpeg CLI sets it (-muxdelay 0.7):
# without it every AAC frame becomes its own PES packet (+~37 kb/s per rung).
_MAX_DELAY_US = 700_000
# Larger than any encoder delay (x264 B-frames at the slowest presets, AAC
# priming), so no rendition ever starts below zero.
TIMELINE_OFFSET_S = Fraction(1)
# Added to an audio rendition's hls_time: see HlsSegmenter.__post_init__. The
# muxer reads hls_time in microseconds; the nudge adds up over k boundaries,
# so the k-th cut stays within one AAC frame for k < 21 000 (23 h at 4 s).
_AUDIO_CUT_NUDGE_S = 1e-6


def _weak_io_open(segmenter: HlsSegmenter) -> Any:
    """``segmenter._io_open`` without a strong reference to ``segmenter``."""
    method = weakref.WeakMethod(segmenter._io_open)

    def io_open(url: str, flags: int, options: dict[str, str]) -> _Capture:
        bound = method()
        if bound is None:  # the muxer outlived its segmenter: nothing may be written any more
            raise OSError(f"{url}: the segmenter is gone")
        return bound(url, flags, options)

    return io_open


@dataclass(slots=True)
class ClosedSegment:
    """A segment the muxer closed (or an earlier run stored): what :meth:`HlsSegmenter.measured_segments` reads."""

    uri: str
    size_bytes: int
    iframes: list[tuple[int, int, int]]  # offset, length, pts (90 kHz; -1: the fragment starts the segment)


class _Capture(io.RawIOBase):
    """A write-only file the muxer fills; its bytes go to a callback on close."""

    def __init__(self, url: str, on_close: Any) -> None:
        super().__init__()
        self.url = url
        self._buffer = io.BytesIO()
        self._on_close = on_close

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # the mp4 muxer seeks back to patch box sizes

    def write(self, data: Any) -> int:
        return self._buffer.write(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._buffer.seek(offset, whence)

    def tell(self) -> int:
        return self._buffer.tell()

    def close(self) -> None:
        if not self.closed:
            callback, self._on_close = self._on_close, None
            super().close()
            if callback is not None:
                callback(self.url, self._buffer.getvalue())


@dataclass(slots=True, weakref_slot=True)  # weakref: see _weak_io_open
class HlsSegmenter:
    """Owns the ``hls`` muxer of one rendition (``name`` is its directory).

    ``segment_s`` is the exact segment length (a whole number of GOPs at the
    rendition's frame rate): the muxer cuts at the first keyframe at or after
    each multiple of it.

    An audio rendition (``video=False``) is cut to match the video's segments:
    each segment starts with the AAC frame that covers the video's boundary
    (so its start lies within one frame before the boundary, never after), its
    durations count from the timeline origin rather than from the encoder's
    priming, and :meth:`close` can fold a trailing sliver into the last
    segment so the rendition has exactly as many segments as the video.
    """

    name: str
    sink: OutputSink
    segment_s: float
    segment_format: SegmentFormat = "ts"
    video: bool = True  # index I-frames (video renditions only)
    # Where the timeline's origin lands in the output (see TIMELINE_OFFSET_S).
    # An audio rendition passes the video's frame rate and takes the video's
    # origin, timeline_origin_s(origin_fps): a whole number of frames.
    origin_fps: Fraction | None = None
    # Resuming (transcoder.checkpoint): the segments an earlier run stored
    # before this one's first, with their durations; the muxer numbers its
    # segments on from there.
    restored: tuple[tuple[ClosedSegment, float], ...] = ()
    # The number of this muxer's first segment (default: after ``restored``).
    # A chunk (transcoder.chunks), or a run whose earlier segments other
    # processes encode, starts here and learns those segments later
    # (:meth:`restore`).
    first_segment: int | None = None
    container: av.container.OutputContainer = field(init=False)
    segments: list[ClosedSegment] = field(init=False, default_factory=list)
    init_uri: str | None = field(init=False, default=None)
    _playlist: str = field(init=False, default="")
    _error: BaseException | None = field(init=False, default=None)
    # Seconds the first packet lies before the timeline origin (AAC priming).
    _lead_s: Fraction | None = field(init=False, default=None)
    # Audio only: the last closed segment (and, while closing, the final one)
    # kept from the sink until the next one closes, so a trailing sliver can
    # still be folded into the segment before it.
    _held: list[tuple[str, bytes]] = field(init=False, default_factory=list)
    _origin_s: Fraction = field(init=False, default=TIMELINE_OFFSET_S)
    _closing: bool = field(init=False, default=False)
    _folded: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.origin_fps is not None:
            self._origin_s = timeline_origin_s(self.origin_fps)
        if self.first_segment is None:
            self.first_segment = len(self.restored)
        elif self.restored and self.first_segment != len(self.restored):
            raise ValueError("restored segments must end where this muxer starts")
        if self.first_segment and not self.video:
            raise ValueError("only video renditions resume; audio is encoded whole")
        self.segments.extend(segment for segment, _duration in self.restored)
        extension = "ts" if self.segment_format == "ts" else "m4s"
        # The muxer cuts at the first packet whose pts is at least a multiple
        # of hls_time after the first packet's. Audio's first packet is the
        # encoder's priming, one AAC frame before the origin, so a frame that
        # starts exactly on a video boundary would land in the earlier segment;
        # one microsecond more puts it first in its own segment.
        segment_s = self.segment_s if self.video else self.segment_s + _AUDIO_CUT_NUDGE_S
        options = {
            "hls_time": f"{segment_s:.6f}",
            "hls_list_size": "0",
            "hls_playlist_type": "vod",
            "hls_segment_filename": f"{self.name}/seg_%05d.{extension}",
            "hls_flags": "independent_segments",
            "start_number": str(self.first_segment),
        }
        if self.segment_format == "fmp4":
            options["hls_segment_type"] = "fmp4"
            options["hls_fmp4_init_filename"] = "init.mp4"
            if self.first_segment:
                # A resumed rendition's fragments must carry the decode times
                # (tfdt) the uninterrupted muxer would have written: times from
                # the track's start, which the earlier run's init segment puts
                # at the origin. Told its first fragment is discontinuous, the
                # mp4 muxer writes each tfdt from the packets' own times; so
                # this rendition's packets are muxed without the origin offset,
                # and its first packet lands at the first segment's start, as
                # the earlier run's would have.
                options["hls_segment_options"] = "movflags=+frag_discont"
                self._origin_s = Fraction(0)
            self.init_uri = "init.mp4"
        self.container = av.open(
            f"{self.name}/muxer.m3u8",
            mode="w",
            format="hls",
            options=options,
            container_options={"max_delay": str(_MAX_DELAY_US)},
            # Through a weak reference: the container keeps its io_open
            # callback, and a bound method would make container and segmenter
            # a reference cycle, freed (with the rung's libx264 context) only
            # when Python's cyclic GC ran, at any moment of a later run and in
            # whatever thread set it off. Runs in one process then differed in
            # a few bytes of their output now and then (bench/NOTES.md); freed
            # by reference count, everything goes when the run drops it.
            io_open=_weak_io_open(self),
        )

    # -- FFmpeg I/O --------------------------------------------------------
    def _io_open(self, url: str, flags: int, options: dict[str, str]) -> _Capture:
        return _Capture(url, self._closed)

    def _closed(self, url: str, data: bytes) -> None:
        # Runs inside FFmpeg's close callback: never raise through it; keep the
        # error and raise it from the owner thread's next call.
        try:
            if url.endswith(".m3u8"):
                self._playlist = data.decode("utf-8", "replace")
                return
            relpath = url if url.startswith(self.name + "/") else posixpath.join(self.name, url)
            if url.endswith("init.mp4"):
                # A resumed rendition keeps the earlier run's init segment,
                # which the checkpoint vouches for: this muxer's would say in
                # its edit list that the track starts where this run did.
                if not self.first_segment:
                    self.sink.put(relpath, data)
                return
            if self.video:
                self.sink.put(relpath, data)
            else:
                if not self._closing:
                    self._release_held()
                self._held.append((relpath, data))
            iframes: list[tuple[int, int, int]] = []
            if self.video:
                iframes = ts_iframe_ranges(data) if self.segment_format == "ts" else _fmp4_iframes(data)
            self.segments.append(ClosedSegment(uri=posixpath.basename(relpath), size_bytes=len(data), iframes=iframes))
        except BaseException as exc:
            if self._error is None:
                self._error = exc

    def check(self) -> None:
        """Raise the first error a close callback kept."""
        if self._error is not None:
            error = self._error
            if isinstance(error, (OutputError, MediaError)):
                raise error
            raise OutputError("storing a segment failed", context={"rendition": self.name}) from error

    def mux(self, packet: av.Packet[Any]) -> None:
        # Encoders start below zero (x264's B-frame delay, AAC's priming), and
        # libavformat shifts each muxer by its own first DTS: renditions would
        # start at different times and audio would drift from video. One
        # common offset keeps every rendition on the same timeline.
        offset = _timeline_offset(packet.time_base, self._origin_s)
        if self._lead_s is None and packet.pts is not None and packet.time_base is not None:
            self._lead_s = max(Fraction(0), -packet.pts * Fraction(packet.time_base))
        if packet.pts is not None:
            packet.pts += offset
        if packet.dts is not None:
            packet.dts += offset
        try:
            self.container.mux(packet)
        except av.FFmpegError as exc:
            raise MediaError("muxing failed", context={"rendition": self.name}) from exc
        self.check()

    def close(self, *, segments: int | None = None) -> None:
        """Flush and close the muxer (writes the last segment).

        ``segments`` (audio only) is the video's segment count: segments the
        muxer cut beyond it (a sliver of padding past the video's last
        boundary) are folded into the last one, so both renditions have the
        same number of segments and the last absorbs the remainder.
        """
        self._closing = True
        try:
            self.container.close()
        except av.FFmpegError as exc:
            raise MediaError("closing the muxer failed", context={"rendition": self.name}) from exc
        self.check()
        if self.video:
            return
        if segments is not None and segments >= 1:
            self._fold_tail(segments)
        try:
            self._release_held()
        except (OutputError, MediaError):
            raise
        except Exception as exc:
            raise OutputError("storing a segment failed", context={"rendition": self.name}) from exc

    def _release_held(self) -> None:
        held, self._held = self._held, []
        for relpath, data in held:
            self.sink.put(relpath, data)

    def _fold_tail(self, segments: int) -> None:
        """Fold the final segment into the one before when the muxer cut one too many.

        Only the final cut can be undone (the segments before were stored as
        they closed); it is the only one a sliver of padding can cause.
        """
        if len(self.segments) != segments + 1 or len(self._held) != 2:
            return
        (relpath, previous), (_tail_path, tail) = self._held
        if self.segment_format == "fmp4":
            tail = _without_styp(tail)
        # MPEG-TS segments concatenate into one stream; fMP4 ones into one
        # segment of two fragments (moof+mdat twice), as CMAF chunks are.
        merged = previous + tail
        self._held = [(relpath, merged)]
        self.segments.pop()
        self.segments[-1].size_bytes = len(merged)
        self._folded += 1

    def abandon(self) -> None:
        """Close after a failure elsewhere; errors are irrelevant by then."""
        with contextlib.suppress(Exception):
            self.container.close()

    def restore(self, restored: tuple[tuple[ClosedSegment, float], ...]) -> None:
        """Put the segments before this muxer's first (encoded elsewhere) in front, once it is closed."""
        if len(restored) != self.first_segment or self.restored:
            raise MediaError(
                "the segments before this rendition's first do not line up",
                context={"rendition": self.name, "first": self.first_segment, "given": len(restored)},
            )
        self.restored = restored
        self.segments[:0] = [segment for segment, _duration in restored]

    def closed_segments(self) -> tuple[int, list[ClosedSegment]]:
        """The number of the first segment listed, and the segments closed so far (restored ones first).

        The first is not 0 while segments before this muxer's first are still
        encoded elsewhere (a chunked run, :meth:`restore`). Callable from any
        thread while the owner thread encodes (a copy of a list only ever
        appended to). Durations are known only once the muxer is closed
        (:meth:`measured_segments`).
        """
        segments = list(self.segments)
        return (self.first_segment or 0) - len(self.restored), segments

    def measured_segments(self) -> list[SegmentInfo]:
        """The closed segments with durations from the muxer's own playlist.

        I-frame durations run to the next I-frame (across segment boundaries)
        and, for the last one, to the end of the rendition.
        """
        durations = [duration for _segment, duration in self.restored]
        durations += [float(d) for d in _EXTINF.findall(self._playlist)]
        for _ in range(self._folded):
            if len(durations) >= 2:
                tail = durations.pop()
                durations[-1] += tail
        if durations and self._lead_s:
            # The muxer counts the first segment from its first packet, the
            # encoder's priming before the origin; the video counts from the
            # origin. Count both from the origin, so boundaries compare.
            durations[0] = max(0.001, durations[0] - float(self._lead_s))
        if len(durations) != len(self.segments):
            raise MediaError(
                "the muxer's playlist does not match the segments written",
                context={"rendition": self.name, "segments": len(self.segments), "entries": len(durations)},
            )
        starts: list[float] = []
        t = 0.0
        for duration in durations:
            starts.append(t)
            t += duration
        end_s = t
        # Absolute I-frame times (relative to the first I-frame) for durations.
        flat: list[tuple[int, int, int, float]] = []  # segment index, offset, length, time
        first_pts: int | None = None
        for index, segment in enumerate(self.segments):
            for offset, length, pts in segment.iframes:
                if pts < 0:  # no timestamp read (fMP4): the fragment starts the segment
                    flat.append((index, offset, length, starts[index]))
                    continue
                if first_pts is None:
                    first_pts = pts
                flat.append((index, offset, length, (pts - first_pts) / 90_000))
        per_segment: list[list[IFrameInfo]] = [[] for _ in self.segments]
        for i, (index, offset, length, time_s) in enumerate(flat):
            next_s = flat[i + 1][3] if i + 1 < len(flat) else end_s
            per_segment[index].append(
                IFrameInfo(offset_bytes=offset, length_bytes=length, duration_s=max(0.001, next_s - time_s))
            )
        return [
            SegmentInfo(
                rendition=self.name,
                sequence=i,
                uri=segment.uri,
                start_s=starts[i],
                duration_s=durations[i],
                size_bytes=segment.size_bytes,
                iframes=tuple(per_segment[i]),
            )
            for i, segment in enumerate(self.segments)
        ]


def _without_styp(data: bytes) -> bytes:
    """``data`` (an fMP4 segment) without its top-level ``styp`` boxes."""
    boxes = mp4_top_level_boxes(data)
    return b"".join(data[offset : offset + size] for kind, offset, size in boxes if kind != "styp")


def _fmp4_iframes(data: bytes) -> list[tuple[int, int, int]]:
    """I-frame ranges of an fMP4 segment: moof, mdat header and the first sample.

    FFmpeg's hls muxer writes one fragment per segment, and a byte range must
    be contiguous and start at the fragment's moof, so only the IDR that
    starts each fragment can be listed: fMP4 I-frame playlists have one entry
    per segment (TS ones have one per GOP). Timestamps are not read (-1): the
    fragment starts the segment.
    """
    boxes = mp4_top_level_boxes(data)
    ranges: list[tuple[int, int, int]] = []
    for (kind, offset, size), (next_kind, mdat_offset, mdat_size) in itertools.pairwise(boxes):
        if kind != "moof" or next_kind != "mdat":
            continue
        header = 16 if int.from_bytes(data[mdat_offset : mdat_offset + 4], "big") == 1 else 8
        first = first_sample_size(data[offset : offset + size])
        end = mdat_offset + (header + first if first else mdat_size)
        ranges.append((offset, min(end, mdat_offset + mdat_size) - offset, -1))
    return ranges


def timeline_origin_s(fps: Fraction) -> Fraction:
    """Where a video rendition at ``fps`` puts the timeline's origin, in seconds.

    The offset is a whole number of frames, so at 29.97 fps it is 30 frames,
    1.001 s: audio must use this, not ``TIMELINE_OFFSET_S``, to start with
    the video.
    """
    return Fraction(round(TIMELINE_OFFSET_S * fps)) / fps


def _timeline_offset(time_base: Fraction | None, origin_s: Fraction) -> int:
    if time_base is None:
        raise MediaError("packet without a time base")
    # Rounded, not truncated: truncating put 29.97 fps video at 29 frames
    # (0.968 s) and its audio at 1 s, 32 ms late.
    return round(origin_s / time_base)


def exact_segment_s(segment_s: float, gop_s: float, fps: Fraction) -> float:
    """Segment length in seconds that is exactly a whole number of GOPs at ``fps``."""
    gop_frames = max(1, round(fps * Fraction(gop_s).limit_denominator(1000)))
    gops = max(1, round(segment_s / gop_s))
    return float(Fraction(gop_frames * gops) / fps)
