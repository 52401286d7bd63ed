"""Storyboard thumbnails for scrubbing: JPEG sprite sheets plus a WebVTT track.

The output is the de-facto format that video.js (vtt-thumbnails), Shaka,
Plyr and JW Player read: a WebVTT file whose cues each cover one interval of
the timeline and whose payload is an image URL with a media fragment
``#xywh=x,y,w,h`` (W3C Media Fragments URI 1.0, section 4.2.2) naming the
tile of a sprite sheet that shows that interval.

Two parts:

* :func:`plan_storyboard` is pure: duration and display size -> interval,
  tile size and sheet grid, with the sheet count bounded for any duration.
* :class:`Storyboard` is a frame tap. :meth:`Storyboard.offer` is called with
  every decoded (or already scaled) frame and its time; it costs one
  comparison unless the frame starts a new interval, and then one small
  downscale. Sheets are filled one at a time (one sheet's pixels in memory)
  and JPEG-encoded as they fill; :meth:`Storyboard.finish` returns the files:
  the sheets, the WebVTT track and the same storyboard as an HLS image media
  playlist (``EXT-X-IMAGES-ONLY``, for Roku-style trick play).

Cost (measured on a 2-vCPU machine, the 10 s 1080p ``bench.sources``
sample, 5 tiles): 8-13 ms of CPU in all from decoded 1080p frames, 3-5 ms
from 640x360 rung frames, against 23 s for the ``transcode`` of that sample
(under 0.06% and 0.02%).

Not thread-safe: one owner thread calls ``offer`` and ``finish``.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from .colour import ScalerColour
from .errors import ConfigError
from .hls import target_duration_s

__all__ = [
    "OutputFile",
    "Storyboard",
    "StoryboardOutput",
    "StoryboardPlan",
    "StoryboardPolicy",
    "plan_storyboard",
    "render_image_playlist",
    "render_thumbnails_vtt",
    "vtt_timestamp",
]

_U8 = np.ndarray[Any, np.dtype[np.uint8]]
_JPEG_BLACK = (0, 128, 128)  # Y, Cb, Cr of black in JPEG's full range
_FF_QP2LAMBDA = 118  # FFmpeg's quantiser-to-lambda factor (libavutil/avutil.h)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoryboardPolicy:
    """How thumbnails are spaced and laid out.

    The interval is ``duration / target_thumbnails`` rounded up to whole
    seconds and clamped to [``min_interval_s``, ``max_interval_s``]; when
    even ``max_interval_s`` would need more than ``max_sheets`` sheets, the
    interval grows past it instead (whole seconds), so the sheet count never
    exceeds ``max_sheets``. ``tile_long_side`` is the tile's longer side in
    pixels (160 gives 160x90 for 16:9). ``jpeg_quantiser`` is MJPEG's fixed
    quantiser (2 best .. 31 worst).
    """

    min_interval_s: int = 2
    max_interval_s: int = 10
    target_thumbnails: int = 300
    columns: int = 10
    rows: int = 10
    max_sheets: int = 30
    tile_long_side: int = 160
    jpeg_quantiser: int = 5

    def __post_init__(self) -> None:
        if not 1 <= self.min_interval_s <= self.max_interval_s:
            raise ConfigError(
                f"need 1 <= min_interval_s <= max_interval_s, got {self.min_interval_s}, {self.max_interval_s}"
            )
        for name in ("target_thumbnails", "columns", "rows", "max_sheets"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.tile_long_side < 16 or self.tile_long_side % 2:
            raise ConfigError(f"tile_long_side must be even and >= 16, got {self.tile_long_side}")
        if not 2 <= self.jpeg_quantiser <= 31:
            raise ConfigError(f"jpeg_quantiser must be in 2..31, got {self.jpeg_quantiser}")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoryboardPlan:
    """The storyboard of one video: thumbnail ``k`` shows the frame at ``k * interval_s``.

    ``thumbnails`` = ceil(duration / interval) (at least 1) and ``sheets`` =
    ceil(thumbnails / (columns * rows)) are what the duration given to the
    planner needs; a video that turns out longer gets more (same interval).
    """

    interval_s: int
    tile_width: int
    tile_height: int
    columns: int
    rows: int
    thumbnails: int
    sheets: int

    @property
    def per_sheet(self) -> int:
        return self.columns * self.rows


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))


def plan_storyboard(
    duration_s: float, width: int, height: int, *, policy: StoryboardPolicy | None = None
) -> StoryboardPlan:
    """Choose interval, tile size and grid for a video of ``duration_s`` seconds.

    ``width``/``height`` is the display size (sample aspect and rotation
    applied): the tile keeps its aspect, its longer side is
    ``policy.tile_long_side``, both sides even. Pure.
    """
    policy = policy or StoryboardPolicy()
    if not math.isfinite(duration_s) or duration_s < 0:
        raise ValueError(f"duration_s must be finite and >= 0, got {duration_s}")
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {width}x{height}")
    interval = min(policy.max_interval_s, max(policy.min_interval_s, math.ceil(duration_s / policy.target_thumbnails)))
    per_sheet = policy.columns * policy.rows
    most = policy.max_sheets * per_sheet
    if math.ceil(duration_s / interval) > most:
        interval = math.ceil(duration_s / most)
    thumbnails = max(1, math.ceil(duration_s / interval))
    long_side = policy.tile_long_side
    if width >= height:
        tile_w, tile_h = long_side, _even(long_side * height / width)
    else:
        tile_w, tile_h = _even(long_side * width / height), long_side
    return StoryboardPlan(
        interval_s=interval,
        tile_width=tile_w,
        tile_height=tile_h,
        columns=policy.columns,
        rows=policy.rows,
        thumbnails=thumbnails,
        sheets=math.ceil(thumbnails / per_sheet),
    )


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One file to publish: its path relative to the output root, and its bytes."""

    relpath: str
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class StoryboardOutput:
    """What :meth:`Storyboard.finish` returns.

    ``sheets`` are the JPEG sprite sheets in order; ``vtt`` is the thumbnails
    track (its image URLs are relative to the VTT's own location);
    ``thumbnails`` is how many tiles the track names. ``image_playlist`` is
    the same storyboard as an HLS image media playlist (Roku's trick-play
    form), to be named by the master's ``EXT-X-IMAGE-STREAM-INF`` with
    ``image_bandwidth_bps`` (the largest sheet's bits over the time it
    covers) and the tile size as RESOLUTION.
    """

    sheets: tuple[OutputFile, ...]
    vtt: OutputFile
    image_playlist: OutputFile
    image_bandwidth_bps: int
    thumbnails: int
    plan: StoryboardPlan

    @property
    def files(self) -> tuple[OutputFile, ...]:
        """Every file, sheets first (the playlists name them, so publish those after)."""
        return (*self.sheets, self.vtt, self.image_playlist)


def vtt_timestamp(seconds: float) -> str:
    """``HH:MM:SS.mmm`` (WebVTT section 4.2.1: hours always written here), rounded to ms."""
    total_ms = round(seconds * 1000)
    if total_ms < 0:
        raise ValueError(f"a WebVTT timestamp cannot be negative: {seconds}")
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{ms:03d}"


def render_thumbnails_vtt(plan: StoryboardPlan, count: int, end_s: float, sheet_uri: Callable[[int], str]) -> str:
    """The WebVTT thumbnails track for ``count`` tiles of ``plan``.

    Cue ``k`` spans ``[k * interval, (k + 1) * interval)``, the last one up to
    ``end_s`` (at least 1 ms after its start), so the cues cover the timeline
    without gaps or overlaps. Its payload is ``sheet_uri(sheet_index)``
    followed by ``#xywh=`` of tile ``k % per_sheet`` (row-major). Pure.
    """
    if count < 1:
        raise ValueError(f"a thumbnails track needs at least one tile, got {count}")
    lines = ["WEBVTT", ""]
    interval = plan.interval_s
    for k in range(count):
        start_ms = k * interval * 1000
        end_ms = (k + 1) * interval * 1000 if k + 1 < count else max(math.ceil(end_s * 1000), start_ms + 1)
        sheet, slot = divmod(k, plan.per_sheet)
        row, col = divmod(slot, plan.columns)
        x, y = col * plan.tile_width, row * plan.tile_height
        lines += [
            f"{vtt_timestamp(start_ms / 1000)} --> {vtt_timestamp(end_ms / 1000)}",
            f"{sheet_uri(sheet)}#xywh={x},{y},{plan.tile_width},{plan.tile_height}",
            "",
        ]
    return "\n".join(lines)


def _sheet_spans(plan: StoryboardPlan, count: int, end_s: float) -> list[tuple[int, float, float]]:
    """(tiles, start_s, end_s) of each sheet; the last ends where the track does."""
    spans = []
    for first in range(0, count, plan.per_sheet):
        tiles = min(plan.per_sheet, count - first)
        start = first * plan.interval_s
        end = (first + tiles) * plan.interval_s if first + tiles < count else max(end_s, start + 0.001)
        spans.append((tiles, float(start), end))
    return spans


def render_image_playlist(plan: StoryboardPlan, count: int, end_s: float, sheet_uri: Callable[[int], str]) -> str:
    """The storyboard as an HLS image media playlist (the "Image Media Playlist" form Roku reads).

    One segment per sheet: ``EXTINF`` is the time its tiles cover (the last
    sheet's ends at ``end_s``, like the VTT), ``EXT-X-TILES`` gives the tile
    size (RESOLUTION), the sheet's own grid (LAYOUT, columns x rows: the last
    sheet is cropped to the rows it uses) and one tile's duration, then the
    sheet's URI. ``EXT-X-IMAGES-ONLY`` marks the playlist; version 7 as in
    the specification's examples. Pure.
    """
    if count < 1:
        raise ValueError(f"an image playlist needs at least one tile, got {count}")
    spans = _sheet_spans(plan, count, end_s)
    durations = [end - start for _, start, end in spans]
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:7",
        f"#EXT-X-TARGETDURATION:{target_duration_s(durations)}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-IMAGES-ONLY",
    ]
    for index, ((tiles, _, _), duration) in enumerate(zip(spans, durations, strict=True)):
        columns = min(plan.columns, tiles)
        rows = math.ceil(tiles / plan.columns)
        lines += [
            f"#EXTINF:{duration:.6f},",
            f"#EXT-X-TILES:RESOLUTION={plan.tile_width}x{plan.tile_height},LAYOUT={columns}x{rows},"
            f"DURATION={plan.interval_s:.3f}",
            sheet_uri(index),
        ]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


class Storyboard:
    """Builds the storyboard of one run from frames offered in time order.

    ``duration_s`` is the expected timeline length and ``width``/``height`` the
    display size (they choose the plan). Offered frames may be of any size
    and pixel format (the source's decoded frames, or a rung's scaled ones):
    each needed frame is scaled to the tile size and converted to JPEG's
    BT.601 full range from ``colour`` (the source's matrix and range as the
    rungs' scalers read them; None: BT.709 limited range, what rung frames
    carry).

    Memory: one sheet of pixels (``columns x rows`` tiles, 2.2 MB for 10x10
    tiles of 160x90) plus the JPEG bytes of finished sheets (at most
    ``max_sheets`` of them, typically 50-150 kB each).

    Files: ``<directory>/<sheet_prefix>NNN.jpg`` for the sheets and
    ``vtt_path`` for the track; the track names each sheet by its path
    relative to the track's own directory.
    """

    def __init__(
        self,
        duration_s: float,
        width: int,
        height: int,
        *,
        policy: StoryboardPolicy | None = None,
        colour: ScalerColour | None = None,
        directory: str = "storyboard",
        vtt_path: str = "thumbnails.vtt",
        image_playlist_path: str = "storyboard/images.m3u8",
    ) -> None:
        self.policy = policy or StoryboardPolicy()
        self.plan = plan_storyboard(duration_s, width, height, policy=self.policy)
        self.duration_s = duration_s
        self._directory = directory.strip("/")
        self._vtt_path = vtt_path
        self._image_playlist_path = image_playlist_path
        src = colour or ScalerColour(src_colorspace="ITU709", src_color_range="MPEG")
        self._scale_args: dict[str, Any] = {
            "width": self.plan.tile_width,
            "height": self.plan.tile_height,
            "format": "yuvj420p",
            # Area averaging: no ringing around slide text at 12:1, and the
            # cheapest of the three measured from decoded 1080p frames (area
            # 0.90 ms, bilinear 1.08, bicubic 1.51 per tile).
            "interpolation": Interpolation.AREA,
            "src_colorspace": src.src_colorspace,
            "src_color_range": src.src_color_range,
            "dst_colorspace": "ITU601",
            "dst_color_range": "JPEG",
            "threads": 1,  # one 160x90 picture: worker threads would cost more than they save
        }
        self._scaler = VideoReformatter()
        plan = self.plan
        self._canvas: tuple[_U8, _U8, _U8] = (
            np.empty((plan.rows * plan.tile_height, plan.columns * plan.tile_width), dtype=np.uint8),
            np.empty((plan.rows * plan.tile_height // 2, plan.columns * plan.tile_width // 2), dtype=np.uint8),
            np.empty((plan.rows * plan.tile_height // 2, plan.columns * plan.tile_width // 2), dtype=np.uint8),
        )
        self._clear_canvas()
        self._count = 0  # tiles placed so far
        self._next_s = Fraction(0)  # the time the next tile is due
        self._interval = Fraction(plan.interval_s)
        self._sheets: list[OutputFile] = []

    @property
    def interval_s(self) -> Fraction:
        """Tile ``k`` shows the first frame at or after ``k * interval_s``."""
        return self._interval

    @property
    def count(self) -> int:
        """Tiles placed so far."""
        return self._count

    def offer(self, frame: av.VideoFrame, time_s: Fraction | float) -> None:
        """Take ``frame`` (shown at ``time_s`` seconds) if it starts an interval.

        Cost when it does not: one comparison. A frame that arrives after a
        gap longer than the interval fills every tile the gap skipped.
        Frames must come in increasing time order.
        """
        if time_s < self._next_s:
            return
        tile = self._scaler.reformat(frame, **self._scale_args)
        planes = _planes(tile)
        while time_s >= self._next_s:
            self._place(planes)

    def tile(self, frame: av.VideoFrame) -> tuple[_U8, _U8, _U8]:
        """``frame`` as :meth:`offer` would place it: the tile's Y, U, V planes (copies)."""
        planes = _planes(self._scaler.reformat(frame, **self._scale_args))
        return planes[0].copy(), planes[1].copy(), planes[2].copy()

    def place(self, planes: tuple[_U8, _U8, _U8]) -> None:
        """Place tile :attr:`count` from :meth:`tile`'s planes (a chunked run's tiles, merged in order)."""
        self._place(planes)

    def _place(self, planes: tuple[_U8, _U8, _U8]) -> None:
        plan = self.plan
        slot = self._count % plan.per_sheet
        row, col = divmod(slot, plan.columns)
        th, tw = plan.tile_height, plan.tile_width
        y, u, v = self._canvas
        y[row * th : (row + 1) * th, col * tw : (col + 1) * tw] = planes[0]
        u[row * th // 2 : (row + 1) * th // 2, col * tw // 2 : (col + 1) * tw // 2] = planes[1]
        v[row * th // 2 : (row + 1) * th // 2, col * tw // 2 : (col + 1) * tw // 2] = planes[2]
        self._count += 1
        self._next_s = self._count * self._interval
        if slot == plan.per_sheet - 1:
            self._close_sheet(plan.per_sheet)

    def _clear_canvas(self) -> None:
        for plane, value in zip(self._canvas, _JPEG_BLACK, strict=True):
            plane.fill(value)

    def _sheet_name(self, index: int) -> str:
        return f"sheet-{index:03d}.jpg"

    def _sheet_relpath(self, index: int) -> str:
        name = self._sheet_name(index)
        return f"{self._directory}/{name}" if self._directory else name

    def _close_sheet(self, tiles: int) -> None:
        """Encode the canvas holding ``tiles`` tiles (cropped to the rows and columns used)."""
        plan = self.plan
        columns = min(plan.columns, tiles)
        rows = math.ceil(tiles / plan.columns)
        w, h = columns * plan.tile_width, rows * plan.tile_height
        y, u, v = (p[: h // (1 if i == 0 else 2), : w // (1 if i == 0 else 2)] for i, p in enumerate(self._canvas))
        data = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(-1, w)
        frame = av.VideoFrame.from_ndarray(data, format="yuvj420p")
        self._sheets.append(
            OutputFile(self._sheet_relpath(len(self._sheets)), _jpeg(frame, self.policy.jpeg_quantiser))
        )
        self._clear_canvas()

    def finish(self, end_s: Fraction | float) -> StoryboardOutput | None:
        """Close the last sheet and render the track; None if no frame was offered.

        ``end_s`` is where the last cue ends: the end of the timeline as
        decoded (not the probe's estimate, so the cues reach the last frame).
        Call once.
        """
        if self._count == 0:
            return None
        partial = self._count % self.plan.per_sheet
        if partial:
            self._close_sheet(partial)
        end = float(end_s)
        vtt = render_thumbnails_vtt(self.plan, self._count, end, self._sheet_uris_from(self._vtt_path))
        images = render_image_playlist(self.plan, self._count, end, self._sheet_uris_from(self._image_playlist_path))
        spans = _sheet_spans(self.plan, self._count, end)
        bandwidth = max(
            math.ceil(len(sheet.data) * 8 / (stop - start))
            for sheet, (_, start, stop) in zip(self._sheets, spans, strict=True)
        )
        return StoryboardOutput(
            sheets=tuple(self._sheets),
            vtt=OutputFile(self._vtt_path, vtt.encode()),
            image_playlist=OutputFile(self._image_playlist_path, images.encode()),
            image_bandwidth_bps=bandwidth,
            thumbnails=self._count,
            plan=self.plan,
        )

    def _sheet_uris_from(self, relpath: str) -> Callable[[int], str]:
        """Sheet URIs relative to the directory of the file at ``relpath``.

        Players resolve them against that file's URL, and the output tree
        moves as a whole, so no URI may be absolute.
        """
        base = posixpath.dirname(relpath) or "."
        return lambda index: posixpath.relpath(self._sheet_relpath(index), base)


def _planes(frame: av.VideoFrame) -> tuple[_U8, _U8, _U8]:
    """The Y, U, V planes of a planar 8-bit frame, without row padding."""
    out = []
    for plane in frame.planes:
        data: _U8 = np.frombuffer(memoryview(plane), dtype=np.uint8)
        out.append(data[: plane.line_size * plane.height].reshape(plane.height, plane.line_size)[:, : plane.width])
    return out[0], out[1], out[2]


def _jpeg(frame: av.VideoFrame, quantiser: int) -> bytes:
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width = frame.width
    codec.height = frame.height
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 25)
    codec.qscale = True  # a fixed quantiser: constant quality, no rate control
    codec.global_quality = quantiser * _FF_QP2LAMBDA
    frame.pts = 0
    packets = codec.encode(frame) + codec.encode(None)
    return b"".join(bytes(p) for p in packets)
