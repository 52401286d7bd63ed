"""Open an untrusted source safely and describe it.

Uploaded media is hostile. FFmpeg demuxers such as ``hls``, ``concat`` or
``image2`` follow references inside a file (URLs, other local paths), and the
demuxer would be chosen from the file's name when one is given. So every input
is opened the same way, by :func:`open_input`:

* through a Python file object that has no ``name`` (no extension hint),
* with ``format_whitelist`` limited to real media containers,
* with ``protocol_whitelist`` matching no protocol, and
* with an ``io_open`` callback that refuses every nested open.

Any one of these blocks the known attacks; together they leave no path.
"""

from __future__ import annotations

import errno
import io
import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, BinaryIO

import av
import av.container

from .colour import MATRIX_NAMES, PRIMARIES_NAMES, RANGE_NAMES, TRANSFER_NAMES, hdr_peak_nits
from .config import Limits
from .errors import InputError, LimitExceededError, TranscodeError, UnsupportedInputError
from .models import AudioInfo, SourceInfo, VideoInfo

#: Demuxers a real upload can need. Anything else (hls, concat, image2, the
#: *_pipe image demuxers, tty, lavfi, data ...) is refused before probing.
MEDIA_DEMUXERS: tuple[str, ...] = (
    "mov",  # mov,mp4,m4a,3gp,3g2,mj2
    "matroska",  # matroska,webm
    "avi",
    "mpegts",
    "mpeg",  # MPEG-PS (.mpg, .vob)
    "flv",
    "asf",  # wmv
    "ogg",
    "mxf",
)

# A protocol name that exists nowhere: FFmpeg may open no protocol at all.
_NO_PROTOCOL = "none"
# Video packets read to judge a variable frame rate. Every packet read here is
# read again by the decoder, and from object storage it is downloaded before
# encoding can start: 180 packets of a 45 Mb/s upload were ~34 MB, ~17 s at
# 16 Mb/s (bench.transfer). 48 packets (1.6 s at 30 fps) still show VFR.
_PROBE_PACKETS = 48
# Samples of a stream that may lie past the end of the file before it counts
# as cut short: the decoder's own rule (decode.py) for frames that never came.
_MISSING_SAMPLES_TOLERANCE = 3
_MISSING_SAMPLES_SHARE = 0.005


class _NamelessReader(io.RawIOBase):
    """A read-only view of a binary file that hides its name from FFmpeg."""

    def __init__(self, raw: IO[bytes], *, close_raw: bool) -> None:
        super().__init__()
        self._raw = raw
        self._close_raw = close_raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._raw.seekable()

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        try:
            if self._close_raw:
                self._raw.close()
        finally:
            super().close()


def _refuse_nested_open(url: str, flags: int, options: dict[str, str]) -> BinaryIO:
    # Called by FFmpeg when a demuxer asks to open another resource named in
    # the file (a playlist entry, a concat line, an external reference).
    raise PermissionError(f"the input refers to another resource ({url!r}); refused")


Source = str | os.PathLike[str] | IO[bytes]


def _describe(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return getattr(source, "uri", None) or type(source).__name__


@contextmanager
def open_input(source: Source) -> Iterator[av.container.InputContainer]:
    """Open ``source`` (a local path or a seekable binary file) for demuxing.

    The container is closed on exit. Raises :class:`InputError` when the bytes
    are not a media container this engine accepts.
    """
    where = _describe(source)
    raw: IO[bytes]
    owned = isinstance(source, (str, os.PathLike))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            raw = path.open("rb")
        except FileNotFoundError as exc:
            raise InputError("input file not found", context={"path": where}) from exc
        except IsADirectoryError as exc:
            raise InputError("input is a directory", context={"path": where}) from exc
        except PermissionError as exc:
            raise InputError("input file not readable", context={"path": where}) from exc
    else:
        # A caller's file object is opened more than once (probe, then
        # decode): start from its beginning each time and leave it open.
        raw = source
        raw.seek(0)
    reader = _NamelessReader(raw, close_raw=owned)
    try:
        container = av.open(
            reader,
            mode="r",
            options={
                "format_whitelist": ",".join(MEDIA_DEMUXERS),
                "protocol_whitelist": _NO_PROTOCOL,
            },
            io_open=_refuse_nested_open,
        )
    except TranscodeError:
        reader.close()  # the source itself failed (a storage error): keep its meaning
        raise
    except PermissionError as exc:
        reader.close()
        raise InputError("input refers to other resources; refused", context={"path": where}) from exc
    except (av.FFmpegError, ValueError, OSError) as exc:
        failure = _open_failure(raw, exc)
        reader.close()
        raise InputError(failure, context={"path": where}) from exc
    try:
        yield container
    finally:
        container.close()
        reader.close()


def _open_failure(raw: IO[bytes], exc: BaseException) -> str:
    try:
        raw.seek(0, io.SEEK_END)
        if raw.tell() == 0:
            return "input is empty"
    except (OSError, ValueError):
        pass
    # With a nameless reader and fixed options, EINVAL at open means FFmpeg
    # recognised a format outside the allow-list (an image, a playlist, a
    # concat script); the word "whitelist" reaches only FFmpeg's log.
    if isinstance(exc, av.ArgumentError) or getattr(exc, "errno", None) == errno.EINVAL:
        return "input is not a supported video container"
    return "input is not a readable video file"


def probe(source: Source, *, limits: Limits | None = None) -> SourceInfo:
    """Describe ``source``; raise :class:`InputError` if it cannot be transcoded.

    Cost: demuxes a few seconds of packets and decodes the first video frame
    (which also proves that the stream decodes). Safety limits are checked
    here, before any full decode. For an mp4/mov it also walks the index the
    demuxer built from the ``moov`` box (no extra reads, ~0.5 us a sample:
    ~30 ms for 10 min of 60 fps video with audio) to count the frames an edit
    list shows and to find samples past the end of the file: a source cut
    short is refused here, before any decoding.
    """
    limits = limits or Limits()
    where = _describe(source)
    size = _size_of(source)
    if size is not None and size > limits.max_input_bytes:
        raise LimitExceededError("input file too large", context={"path": where, "bytes": size})
    with open_input(source) as container:
        return _probe_container(container, where=where, size=size, limits=limits)


def _size_of(source: Source) -> int | None:
    if isinstance(source, (str, os.PathLike)):
        try:
            return os.stat(source).st_size
        except OSError:
            return None
    size = getattr(source, "size", None)  # an object-storage reader knows it from its HEAD
    if isinstance(size, int):
        return size
    # A caller's seekable file: its end is one seek away (no read), and the
    # size lets the index be checked for a cut-short file before decoding.
    try:
        if not source.seekable():
            return None
        here = source.tell()
        end = source.seek(0, io.SEEK_END)
        source.seek(here)
    except (OSError, ValueError, AttributeError):
        return None
    return end


def _probe_container(
    container: av.container.InputContainer, *, where: str, size: int | None, limits: Limits
) -> SourceInfo:
    streams = container.streams
    if len(streams) > limits.max_streams:
        raise LimitExceededError(
            "input has too many streams", context={"path": where, "streams": len(streams), "limit": limits.max_streams}
        )
    video_streams = [s for s in streams.video if not _is_attached_picture(s)]
    if not video_streams:
        if streams.audio:
            raise UnsupportedInputError(
                "input has no video stream (audio-only is not transcoded)", context={"path": where}
            )
        raise InputError("input has no video stream", context={"path": where})
    vstream = _main_stream(video_streams)
    astream = _main_stream(list(streams.audio)) if streams.audio else None
    cc = vstream.codec_context
    if cc.width <= 0 or cc.height <= 0:
        raise InputError("video stream has no picture size", context={"path": where})
    if cc.width > limits.max_width or cc.height > limits.max_height or cc.width * cc.height > limits.max_pixels:
        raise LimitExceededError(
            "video dimensions exceed the limit", context={"path": where, "size": f"{cc.width}x{cc.height}"}
        )

    duration_s = _duration_s(container, vstream)
    if duration_s is not None and duration_s > limits.max_duration_s:
        raise LimitExceededError("input is too long", context={"path": where, "duration_s": round(duration_s, 1)})

    _check_index(container, [vstream] if astream is None else [vstream, astream], size, where)
    first_frame, packet_times = _first_frame_and_times(container, vstream, where)
    fps, is_vfr = _frame_rate(vstream, packet_times)
    if fps > limits.max_fps:
        raise LimitExceededError("frame rate exceeds the limit", context={"path": where, "fps": float(fps)})
    if duration_s is None:
        raise InputError("input has no known duration", context={"path": where})

    rotation = (-round(first_frame.rotation)) % 360  # clockwise, as a player turns it
    if rotation % 90:
        rotation = 0  # a skewed matrix: ignore rather than guess
    sar = vstream.sample_aspect_ratio or cc.sample_aspect_ratio or Fraction(1)
    if sar <= 0:
        sar = Fraction(1)
    width, height = first_frame.width, first_frame.height
    display_w, display_h = _display_size(width, height, sar, rotation)
    fmt = first_frame.format
    bit_depth = max((c.bits for c in fmt.components), default=8)
    video = VideoInfo(
        index=vstream.index,
        codec=cc.name,
        coded_width=width,
        coded_height=height,
        display_width=display_w,
        display_height=display_h,
        sample_aspect_ratio=sar,
        rotation_deg=rotation,
        fps=fps,
        is_vfr=is_vfr,
        pix_fmt=fmt.name,
        bit_depth=bit_depth,
        chroma_subsampling=_chroma(fmt),
        field_order=_field_order(cc.field_order, first_frame.interlaced_frame),
        shown_frames=_shown_frames(container, vstream),
        start_s=_start_s(vstream),
        duration_s=_stream_duration_s(vstream),
        frame_count=vstream.frames or None,
        **_colour_tags(first_frame, cc),
    )
    audio = None
    if astream is not None:
        acc = astream.codec_context
        audio = AudioInfo(
            index=astream.index,
            codec=acc.name,
            channels=acc.channels or 0,
            layout=acc.layout.name if acc.layout else "",
            sample_rate=acc.sample_rate or 0,
            start_s=_start_s(astream),
            duration_s=_stream_duration_s(astream),
        )
        if audio.channels <= 0 or audio.sample_rate <= 0:
            audio = None  # undecodable audio description: treat as silent
    return SourceInfo(
        container=container.format.name,
        duration_s=duration_s,
        size_bytes=size,
        bit_rate_bps=container.bit_rate or None,
        video=video,
        audio=audio,
        stream_count=len(streams),
    )


def _has_sample_table(container: av.container.InputContainer) -> bool:
    # The mov/mp4 demuxer builds its index from the sample table: every
    # sample with its byte offset and size, frames an edit list hides marked
    # "discard". Other demuxers index only some packets (Matroska: keyframes
    # from the cues) or none, so nothing below is read from theirs.
    return container.format.name.split(",")[0] == "mov"


def _shown_frames(container: av.container.InputContainer, vstream: Any) -> int | None:
    """Frames of ``vstream`` that are shown: indexed frames an edit list does not hide.

    None when the index does not list every frame (not an mp4/mov, or a
    fragmented mp4, whose index grows as fragments are read). Reads only the
    index FFmpeg built from the ``moov`` box it already read: no I/O. Costs
    ~0.5 us per sample (measured: 64k samples in 33 ms).
    """
    if not _has_sample_table(container) or not vstream.frames:
        return None
    entries = vstream.index_entries
    if len(entries) == 0:
        return None
    return sum(1 for entry in entries if not entry.is_discard)


def _check_index(container: av.container.InputContainer, streams: list[Any], size: int | None, where: str) -> None:
    """Refuse a source whose index lists samples past the end of the file (a cut upload).

    Checked for the streams the engine uses (an auxiliary track with a bad
    offset does not spoil the upload). A stream is cut short when more of its
    samples end past the end of the file than the decoder would forgive as
    missing frames (a few, or 0.5%). Needs the file's size (None: not checked;
    the decoder still counts what it gets). No I/O: the index is already read.
    """
    if size is None or not _has_sample_table(container):
        return
    indexed_end = max((e.pos + e.size for s in streams for e in s.index_entries), default=0)
    for stream in streams:
        entries = stream.index_entries
        missing = sum(1 for e in entries if e.pos >= 0 and e.pos + e.size > size)
        if missing > max(_MISSING_SAMPLES_TOLERANCE, len(entries) * _MISSING_SAMPLES_SHARE):
            raise InputError(
                "input is truncated",
                context={
                    "path": where,
                    "stream": stream.type,
                    "missing_samples": missing,
                    "indexed_samples": len(entries),
                    "indexed_end_bytes": indexed_end,
                    "size_bytes": size,
                },
            )


def _is_attached_picture(stream: av.video.stream.VideoStream) -> bool:
    return bool(stream.disposition & av.stream.Disposition.attached_pic)


# Tracks made for some viewers only (audio description for the blind, a
# director's commentary): never the main track while another one exists.
_SECONDARY = (
    av.stream.Disposition.comment
    | av.stream.Disposition.visual_impaired
    | av.stream.Disposition.hearing_impaired
    | av.stream.Disposition.descriptions
)


def _main_stream(candidates: list[Any]) -> Any:
    """The stream a player would pick: the first marked default, else the first main one.

    Editors and phones that add a second audio track (a commentary, another
    language) mark the one to play by default, and it need not come first.
    """
    main = [s for s in candidates if not s.disposition & _SECONDARY] or candidates
    return next((s for s in main if s.disposition & av.stream.Disposition.default), main[0])


def _first_frame_and_times(
    container: av.container.InputContainer, vstream: Any, where: str
) -> tuple[av.VideoFrame, list[float]]:
    """Decode the first video frame; collect packet timestamps for the fps check."""
    times: list[float] = []
    first: av.VideoFrame | None = None
    try:
        for packet in container.demux(vstream):
            if packet.pts is not None and packet.time_base is not None:
                times.append(float(packet.pts * packet.time_base))
            if first is None:
                for frame in packet.decode():
                    first = frame
                    break
            if first is not None and len(times) >= _PROBE_PACKETS:
                break
        if first is None:
            for frame in vstream.codec_context.decode(None):
                first = frame
                break
    except av.FFmpegError as exc:
        raise InputError("video stream does not decode", context={"path": where}) from exc
    if first is None:
        raise InputError("video stream has no decodable frame", context={"path": where})
    return first, times


def _colour_tags(frame: av.VideoFrame, cc: Any) -> dict[str, Any]:
    """The colour tags of the video as FFmpeg names, from the first frame, else the stream.

    Frames carry what the bitstream says (SPS VUI, JPEG's full range); the
    codec context can miss what only the frames carry.
    """

    def pick(frame_value: int, stream_value: int, names: dict[int, str]) -> str:
        name = names.get(frame_value, "unknown")
        return name if name != "unknown" else names.get(stream_value, "unknown")

    # Iterating the container yields the entries (its values() is broken in PyAV 18).
    entries: list[Any] = list(frame.side_data) if frame.side_data else []
    side = {entry.type.name: bytes(entry) for entry in entries}
    return {
        "colour_matrix": pick(frame.colorspace, cc.colorspace, MATRIX_NAMES),
        "colour_primaries": pick(frame.color_primaries, cc.color_primaries, PRIMARIES_NAMES),
        "colour_transfer": pick(frame.color_trc, cc.color_trc, TRANSFER_NAMES),
        "colour_range": pick(frame.color_range, cc.color_range, RANGE_NAMES),
        "hdr_peak_nits": hdr_peak_nits(
            content_light=side.get("CONTENT_LIGHT_LEVEL"), mastering=side.get("MASTERING_DISPLAY_METADATA")
        ),
    }


_STANDARD_RATES = tuple(
    Fraction(n, d)
    for n, d in ((24000, 1001), (24, 1), (25, 1), (30000, 1001), (30, 1), (50, 1), (60000, 1001), (60, 1))
)


def _frame_rate(vstream: Any, packet_times: list[float]) -> tuple[Fraction, bool]:
    """Average frame rate, and whether frame durations vary (VFR).

    Irregular gaps between presentation times mark a variable rate; B-frame
    reordering is undone by sorting first. For a variable rate the container's
    declared rate is not trusted (Matroska reports its default duration):
    the rate is measured from the packet times and snapped to a standard rate
    within 5%, so a phone's jittery "30 fps" becomes 30, not 29.7.
    """
    rate = vstream.average_rate or vstream.guessed_rate or vstream.base_rate
    times = sorted(set(packet_times))
    deltas = [b - a for a, b in itertools.pairwise(times) if b > a]
    is_vfr = False
    if len(deltas) >= 4:
        ordered = sorted(deltas)
        median = ordered[len(ordered) // 2]
        spread = [d for d in ordered if abs(d - median) > max(0.002, median * 0.1)]
        is_vfr = len(spread) > len(ordered) * 0.05
        if is_vfr or not rate:
            measured = Fraction(len(deltas) / (times[-1] - times[0])).limit_denominator(1001)
            nearest = min(_STANDARD_RATES, key=lambda r: abs(r - measured))
            rate = nearest if abs(nearest - measured) <= nearest * Fraction(5, 100) else measured
    if not rate or rate <= 0:
        rate = Fraction(25)
    return Fraction(rate).limit_denominator(100_000), is_vfr


def _display_size(width: int, height: int, sar: Fraction, rotation: int) -> tuple[int, int]:
    display_w = max(2, round(width * sar)) if sar >= 1 else width
    display_h = height if sar >= 1 else max(2, round(height / sar))
    if rotation in (90, 270):
        display_w, display_h = display_h, display_w
    return display_w, display_h


def _chroma(fmt: Any) -> str:
    """Chroma subsampling of a planar YUV format, read off its plane sizes."""
    comps = fmt.components
    if len(comps) < 3 or fmt.name.startswith(("rgb", "bgr", "gbr", "gray", "pal")):
        return "other"
    luma, chroma = comps[0], comps[1]
    if (chroma.width, chroma.height) == (luma.width, luma.height):
        return "444"
    if chroma.height == luma.height:
        return "422"
    if chroma.width < luma.width and chroma.height < luma.height:
        return "420"
    return "other"


_FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}


def _field_order(value: int, frame_interlaced: bool) -> str:
    order = _FIELD_ORDERS.get(value, "unknown")
    if order in ("unknown", "progressive") and frame_interlaced:
        return "tt"
    if order == "unknown" and not frame_interlaced:
        return "progressive"
    return order


def _start_s(stream: Any) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _stream_duration_s(stream: Any) -> float | None:
    if stream.duration is None or stream.time_base is None:
        return None
    return float(stream.duration * stream.time_base)


def _duration_s(container: av.container.InputContainer, vstream: Any) -> float | None:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return _stream_duration_s(vstream)
