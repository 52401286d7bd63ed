"""Byte-level parsers against real bytes made here with PyAV/libx264."""

from __future__ import annotations

import io
import itertools
import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest

from transcoder.bitstream import (
    TS_PACKET_SIZE,
    avc_codecs_tag,
    mp4_top_level_boxes,
    ts_iframe_ranges,
)

WIDTH, HEIGHT, FPS = 320, 240, 25
FRAMES, GOP = 10, 5
TICKS_PER_FRAME = 90_000 // FPS  # 90 kHz MPEG-TS clock


def _frame(i: int) -> av.VideoFrame:
    # A moving gradient: cheap to encode, and different on every frame.
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgb = np.stack([(x + 8 * i) % 256, (y + 4 * i) % 256, ((x + y) // 2 + 16 * i) % 256], axis=-1)
    frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24").reformat(format="yuv420p")
    frame.pts = i
    frame.time_base = Fraction(1, FPS)
    return frame


def _x264_options(profile: str, level: str) -> dict[str, str]:
    # scenecut off: keyframes only every GOP frames, so their count is known.
    return {"profile": profile, "level": level, "sc_threshold": "0"}


def _encode_annexb(profile: str, level: str) -> list[av.Packet[Any]]:
    """Packets of a standalone encoder (no global header: SPS/PPS in-band)."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    ctx.time_base = Fraction(1, FPS)
    ctx.framerate = Fraction(FPS)
    ctx.gop_size = GOP
    ctx.options = _x264_options(profile, level)
    packets = [p for i in range(FRAMES) for p in ctx.encode(_frame(i))]
    return packets + list(ctx.encode(None))


@dataclass
class Muxed:
    data: bytes
    packets: list[tuple[bytes, bool]]  # (bytes, is_keyframe) in decode order
    extradata: bytes | None


def _mux(fmt: str, options: dict[str, str] | None = None) -> Muxed:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt, options=options or {}) as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = GOP
        stream.codec_context.options = _x264_options("high", "3.0")
        packets: list[tuple[bytes, bool]] = []
        for i in [*range(FRAMES), None]:
            for packet in stream.encode(None if i is None else _frame(i)):
                packets.append((bytes(packet), packet.is_keyframe))
                out.mux(packet)
        extradata = stream.codec_context.extradata
    return Muxed(buf.getvalue(), packets, extradata)


@pytest.fixture(scope="module")
def ts() -> Muxed:
    return _mux("mpegts")


@pytest.fixture(scope="module")
def fmp4() -> Muxed:
    return _mux("mp4", {"movflags": "frag_keyframe+empty_moov+default_base_moof"})


def _pid(data: bytes, offset: int) -> int:
    return ((data[offset + 1] & 0x1F) << 8) | data[offset + 2]


def _video_pes_payload(data: bytes, offset: int, length: int, video_pid: int) -> bytes:
    """Concatenated PES payload (after the PES header) of video packets in a range."""
    out = bytearray()
    for pos in range(offset, offset + length, TS_PACKET_SIZE):
        packet = data[pos : pos + TS_PACKET_SIZE]
        if _pid(packet, 0) != video_pid:
            continue
        start = 4 + (1 + packet[4] if packet[3] & 0x20 else 0)
        if packet[1] & 0x40:  # PES header: 9 bytes + header_data_length
            start += 9 + packet[start + 8]
        out += packet[start:]
    return bytes(out)


# --------------------------------------------------------------------------- #
# avc_codecs_tag
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("profile", "level", "profile_idc", "level_idc"),
    [("high", "3.0", 0x64, 0x1E), ("main", "3.1", 0x4D, 0x1F), ("baseline", "2.1", 0x42, 0x15)],
)
def test_codecs_tag_from_keyframe_packet_matches_requested_profile_and_level(
    profile: str, level: str, profile_idc: int, level_idc: int
) -> None:
    packets = _encode_annexb(profile, level)
    keyframe = next(p for p in packets if p.is_keyframe)
    tag = avc_codecs_tag(bytes(keyframe))
    assert tag.startswith(f"avc1.{profile_idc:02x}")
    assert tag.endswith(f"{level_idc:02x}")
    assert len(tag) == len("avc1.640028") and tag == tag.lower()


def test_codecs_tag_high_30_is_exact() -> None:
    # x264 writes no constraint flags for High: the whole tag is known.
    keyframe = next(p for p in _encode_annexb("high", "3.0") if p.is_keyframe)
    assert avc_codecs_tag(bytes(keyframe)) == "avc1.64001e"


def test_codecs_tag_from_global_header_extradata_and_avcc(fmp4: Muxed) -> None:
    # With the mp4 muxer's global header, libx264 puts SPS/PPS in extradata
    # (Annex-B); the muxer stores them as an avcC record in the moov.
    assert fmp4.extradata is not None
    assert avc_codecs_tag(fmp4.extradata) == "avc1.64001e"
    at = fmp4.data.index(b"avcC")
    (box_size,) = struct.unpack_from(">I", fmp4.data, at - 4)
    record = fmp4.data[at + 4 : at - 4 + box_size]
    assert record[0] == 1  # configurationVersion
    assert avc_codecs_tag(record) == "avc1.64001e"


def test_codecs_tag_in_band_in_ts_packets(ts: Muxed) -> None:
    keyframe = next(data for data, key in ts.packets if key)
    assert avc_codecs_tag(keyframe) == "avc1.64001e"


def test_codecs_tag_four_and_three_byte_start_codes() -> None:
    sps = b"\x67\x64\x00\x28\xac"
    for prefix in (b"\x00\x00\x01", b"\x00\x00\x00\x01"):
        assert avc_codecs_tag(b"\x00\x00\x00\x01\x09\xf0" + prefix + sps) == "avc1.640028"


def test_codecs_tag_removes_emulation_prevention_bytes() -> None:
    # RBSP 00 00 01 is written 00 00 03 01 inside a NAL unit (H.264 7.4.1).
    assert avc_codecs_tag(b"\x00\x00\x01\x67\x00\x00\x03\x01\xff") == "avc1.000001"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00\x01\x65\x88\x84",  # an IDR slice, no SPS
        b"\x00\x00\x01\x67\x64",  # truncated SPS
        b"\x01\x64\x00\x1e\xff\xe0",  # avcC with zero SPS
        b"\x01\x64",  # avcC too short
    ],
)
def test_codecs_tag_without_complete_sps_raises(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"SPS|avcC"):
        avc_codecs_tag(data)


def test_codecs_tag_non_keyframe_packet_raises(ts: Muxed) -> None:
    delta = next(data for data, key in ts.packets if not key)
    with pytest.raises(ValueError, match="SPS"):
        avc_codecs_tag(delta)


# --------------------------------------------------------------------------- #
# ts_iframe_ranges
# --------------------------------------------------------------------------- #


def test_ts_ranges_find_exactly_the_keyframes(ts: Muxed) -> None:
    ranges = ts_iframe_ranges(ts.data)
    assert len(ranges) == math.ceil(FRAMES / GOP) == sum(key for _, key in ts.packets)
    previous_end = 0
    for offset, length, _ in ranges:
        assert offset % TS_PACKET_SIZE == 0 and length % TS_PACKET_SIZE == 0 and length > 0
        assert offset >= previous_end  # no overlap, file order
        assert offset + length <= len(ts.data)
        assert ts.data[offset] == 0x47
        previous_end = offset + length
    # PTS in 90 kHz ticks, one GOP apart.
    assert [b[2] - a[2] for a, b in itertools.pairwise(ranges)] == [GOP * TICKS_PER_FRAME]


def test_ts_ranges_start_at_pat_and_cover_the_whole_keyframe(ts: Muxed) -> None:
    keyframes = [data for data, key in ts.packets if key]
    for (offset, length, _), keyframe in zip(ts_iframe_ranges(ts.data), keyframes, strict=True):
        # FFmpeg writes PAT + PMT right before each video keyframe.
        assert _pid(ts.data, offset) == 0x0000
        payload = _video_pes_payload(ts.data, offset, length, video_pid=0x100)
        # The muxer may prepend an access unit delimiter; the rest is the packet.
        assert payload.endswith(keyframe)
        assert len(payload) - len(keyframe) in (0, 6)
        # The range ends with the PES: the next packet (if any) is not more of it.
        end = offset + length
        if end < len(ts.data):
            nxt = [p for p in range(end, len(ts.data), TS_PACKET_SIZE) if _pid(ts.data, p) == 0x100]
            assert not nxt or ts.data[nxt[0] + 1] & 0x40  # next video packet starts a new PES


def test_each_ts_range_decodes_alone_to_one_keyframe(ts: Muxed) -> None:
    # What a player does with an I-frame playlist entry.
    for offset, length, pts in ts_iframe_ranges(ts.data):
        with av.open(io.BytesIO(ts.data[offset : offset + length]), "r", format="mpegts") as container:
            frames = list(container.decode(video=0))
        assert len(frames) == 1
        assert frames[0].key_frame and frames[0].pts == pts


def test_ts_ranges_by_keyframe_pts(ts: Muxed) -> None:
    by_rai = ts_iframe_ranges(ts.data)
    assert ts_iframe_ranges(ts.data, keyframe_pts_90k=[pts for _, _, pts in by_rai]) == by_rai
    assert ts_iframe_ranges(ts.data, keyframe_pts_90k=[by_rai[1][2]]) == by_rai[1:]
    assert ts_iframe_ranges(ts.data, keyframe_pts_90k=[]) == []
    # The list is authoritative: a non-key PES listed by PTS is returned too
    # (compared modulo 2**33, so a wrapped value matches).
    shift = by_rai[0][2]  # PTS of frame 0 as muxed (the muxer's offset)
    frame3 = shift + 3 * TICKS_PER_FRAME
    ranges = ts_iframe_ranges(ts.data, keyframe_pts_90k=[frame3 + (1 << 33)])
    assert [pts for _, _, pts in ranges] == [frame3]
    assert ts.data[ranges[0][0]] == 0x47


def test_ts_range_without_tables_starts_at_the_pes(ts: Muxed) -> None:
    # Drop the SDT/PAT/PMT run in front of the second keyframe.
    second_offset = ts_iframe_ranges(ts.data)[1][0]
    pes_packet = second_offset
    while _pid(ts.data, pes_packet) != 0x100:
        pes_packet += TS_PACKET_SIZE
    stripped = ts.data[:second_offset] + ts.data[pes_packet:]
    ranges = ts_iframe_ranges(stripped)
    assert len(ranges) == 2
    assert ranges[1][0] == second_offset and _pid(stripped, second_offset) == 0x100


def test_ts_ranges_empty_segment() -> None:
    assert ts_iframe_ranges(b"") == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x47" + b"\x00" * 186, "multiple of 188"),
        (b"\x48" + b"\x00" * 187, "sync byte"),
        # A lone video-PID packet: no PAT/PMT describes it.
        (b"\x47\x41\x00\x10" + b"\x00\x00\x01\xe0" + b"\xff" * 180, "PAT/PMT"),
    ],
)
def test_ts_ranges_reject_bad_input(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ts_iframe_ranges(data)


def test_ts_ranges_reject_bad_sync_in_real_segment(ts: Muxed) -> None:
    broken = bytearray(ts.data)
    broken[5 * TS_PACKET_SIZE] = 0x00
    with pytest.raises(ValueError, match=f"offset {5 * TS_PACKET_SIZE}"):
        ts_iframe_ranges(bytes(broken))


# --------------------------------------------------------------------------- #
# mp4_top_level_boxes
# --------------------------------------------------------------------------- #


def test_mp4_boxes_of_fragmented_mp4(fmp4: Muxed) -> None:
    boxes = mp4_top_level_boxes(fmp4.data)
    types = [t for t, _, _ in boxes]
    assert types[:2] == ["ftyp", "moov"]
    assert {"moof", "mdat"} <= set(types)
    assert types.count("moof") == types.count("mdat") == math.ceil(FRAMES / GOP)  # frag_keyframe
    # Contiguous and complete.
    position = 0
    for _, offset, size in boxes:
        assert offset == position
        position += size
    assert position == len(fmp4.data)


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def test_mp4_boxes_largesize_and_to_end() -> None:
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + 5) + b"12345"
    to_end = struct.pack(">I4s", 0, b"free") + b"xyz"
    data = _box(b"ftyp", b"isom") + large + to_end
    assert mp4_top_level_boxes(data) == [("ftyp", 0, 12), ("mdat", 12, 21), ("free", 33, 11)]
    assert mp4_top_level_boxes(b"") == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00\x00", "truncated box header"),
        (struct.pack(">I4s", 1, b"mdat") + b"\x00" * 4, "truncated 64-bit"),
        (struct.pack(">I4s", 4, b"free"), "smaller than its 8-byte header"),
        (struct.pack(">I4sQ", 1, b"mdat", 8), "smaller than its 16-byte header"),
        (struct.pack(">I4s", 100, b"mdat") + b"\x00" * 10, "runs past the end"),
    ],
)
def test_mp4_boxes_reject_bad_input(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mp4_top_level_boxes(data)
