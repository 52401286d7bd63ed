"""Small byte-level parsers for what the muxers wrote (no PyAV).

* ``avc_codecs_tag``: the RFC 6381 ``avc1.PPCCLL`` CODECS entry, read from
  the SPS the encoder actually wrote (not from the settings asked for).
* ``ts_iframe_ranges``: where each keyframe lies in an MPEG-TS segment, for
  ``EXT-X-BYTERANGE`` in I-frame playlists.
* ``mp4_top_level_boxes``: the top-level boxes of an fMP4 file or segment.

Each parser checks the structure it relies on and raises ``ValueError`` with
the byte offset when the input is not what it claims to be.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

__all__ = ["TS_PACKET_SIZE", "avc_codecs_tag", "mp4_top_level_boxes", "ts_iframe_ranges"]

TS_PACKET_SIZE = 188
_TS_SYNC = 0x47
_PAT_PID = 0x0000
_NULL_PID = 0x1FFF
# PIDs below 0x20 carry PSI/SI tables (PAT, CAT, NIT, SDT ...) in ISO/IEC
# 13818-1 / ETSI EN 300 468; FFmpeg writes its SDT on 0x11 next to PAT/PMT.
_SI_PID_LIMIT = 0x20
_STREAM_TYPE_H264 = 0x1B
_PTS_MODULUS = 1 << 33  # PTS is a 33-bit counter of 90 kHz ticks
_NAL_SPS = 7


# --------------------------------------------------------------------------- #
# H.264 SPS -> CODECS
# --------------------------------------------------------------------------- #


def _unescape_prefix(nal_payload: bytes, count: int) -> bytes:
    """First ``count`` bytes of an RBSP: drop emulation-prevention 0x03 bytes.

    H.264 7.4.1: inside a NAL unit, ``00 00 03`` stands for ``00 00``. The
    fields needed here are the first three bytes, where an escape is all but
    impossible (profile_idc is never 0), but reading them unescaped is cheap
    and always right.
    """
    out = bytearray()
    zeros = 0
    for byte in nal_payload:
        if zeros >= 2 and byte == 0x03:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
        if len(out) == count:
            break
    return bytes(out)


def _annexb_nals(data: bytes) -> Iterator[bytes]:
    """Yield each NAL unit (header byte first) of Annex-B ``data``.

    A start code is ``00 00 01``; the 4-byte ``00 00 00 01`` form is the same
    with a leading zero byte, which ends up as (ignored) trailing zeros of the
    previous NAL unit.
    """
    start = data.find(b"\x00\x00\x01")
    while start != -1:
        begin = start + 3
        nxt = data.find(b"\x00\x00\x01", begin)
        yield data[begin : len(data) if nxt == -1 else nxt]
        start = nxt


def _avcc_sps(data: bytes) -> bytes | None:
    """The first SPS NAL unit of an ``avcC`` record (ISO/IEC 14496-15 5.3.3.1)."""
    if len(data) < 6:
        raise ValueError(f"avcC record too short: {len(data)} bytes")
    count = data[5] & 0x1F  # numOfSequenceParameterSets
    pos = 6
    for _ in range(count):
        if pos + 2 > len(data):
            break
        (length,) = struct.unpack_from(">H", data, pos)
        nal = data[pos + 2 : pos + 2 + length]
        if len(nal) == length and nal and nal[0] & 0x1F == _NAL_SPS:
            return nal
        pos += 2 + length
    return None


def avc_codecs_tag(data: bytes) -> str:
    """Return the RFC 6381 CODECS entry ``avc1.PPCCLL`` of H.264 ``data``.

    ``data`` is either Annex-B bytes (start codes ``00 00 01`` /
    ``00 00 00 01``: an encoded keyframe packet with in-band SPS, or libx264's
    global-header extradata), or an ``avcC`` decoder configuration record
    (first byte 1, as stored in MP4). Length-prefixed MP4 samples are not
    accepted: their length fields can look like start codes.

    PP, CC, LL are profile_idc, the constraint-flags byte and level_idc of
    the first SPS (NAL type 7), in lowercase hex: High 3.0 -> ``avc1.64001e``.
    Raises ``ValueError`` if there is no complete SPS.
    """
    data = bytes(data)
    if data[:1] == b"\x01":
        sps = _avcc_sps(data)
    else:
        sps = next((nal for nal in _annexb_nals(data) if nal and nal[0] & 0x9F == _NAL_SPS), None)
        # 0x9F: forbidden_zero_bit must be 0 and the type 7; nal_ref_idc is free.
    if sps is None:
        raise ValueError("no H.264 SPS (NAL type 7) found")
    fields = _unescape_prefix(sps[1:], 3)
    if len(fields) < 3:
        raise ValueError(f"H.264 SPS truncated: {len(sps)} bytes")
    profile_idc, constraints, level_idc = fields
    return f"avc1.{profile_idc:02x}{constraints:02x}{level_idc:02x}"


# --------------------------------------------------------------------------- #
# MPEG-TS keyframe byte ranges
# --------------------------------------------------------------------------- #


def _packet_fields(packet: bytes, offset: int) -> tuple[int, bool, int, bool]:
    """``(pid, payload_unit_start, payload_offset, random_access)`` of one packet.

    ``payload_offset`` is the index of the first payload byte in the packet,
    or 188 when the packet carries no payload.
    """
    if packet[0] != _TS_SYNC:
        raise ValueError(f"MPEG-TS sync byte 0x47 missing at offset {offset}")
    pid = ((packet[1] & 0x1F) << 8) | packet[2]
    pusi = bool(packet[1] & 0x40)
    afc = (packet[3] >> 4) & 0x3  # adaptation_field_control
    payload_offset = 4
    random_access = False
    if afc & 0x2:  # adaptation field present
        af_length = packet[4]
        if af_length > 0:
            random_access = bool(packet[5] & 0x40)
        payload_offset = 5 + af_length
    if not afc & 0x1 or payload_offset > TS_PACKET_SIZE:  # no payload
        payload_offset = TS_PACKET_SIZE
    return pid, pusi, payload_offset, random_access


def _psi_section(packet: bytes, payload_offset: int, table_id: int, offset: int) -> bytes:
    """The section body (after the 3-byte header, before the CRC) in one packet.

    FFmpeg's PAT and PMT (a handful of streams) always fit in one packet; a
    section that continues into the next packet is not supported.
    """
    pointer = packet[payload_offset]
    start = payload_offset + 1 + pointer
    if start + 3 > TS_PACKET_SIZE or packet[start] != table_id:
        raise ValueError(f"expected PSI table 0x{table_id:02x} at offset {offset + start}")
    section_length = ((packet[start + 1] & 0x0F) << 8) | packet[start + 2]
    end = start + 3 + section_length
    if end > TS_PACKET_SIZE or section_length < 9:  # 5 header bytes + 4 CRC
        raise ValueError(f"PSI table 0x{table_id:02x} at offset {offset + start} spans packets or is too short")
    return packet[start + 3 : end - 4]


def _pmt_pid(section: bytes) -> int | None:
    # After 5 bytes (program/table ids, version, section numbers): 4-byte
    # entries of program_number and PID; program_number 0 is the NIT.
    for pos in range(5, len(section) - 3, 4):
        program = int.from_bytes(section[pos : pos + 2], "big")
        if program != 0:
            return int.from_bytes(section[pos + 2 : pos + 4], "big") & 0x1FFF
    return None


def _h264_pid(section: bytes) -> int | None:
    # After 5 bytes: PCR_PID (2), program_info_length (2), descriptors, then
    # entries of stream_type (1), elementary_PID (2), ES_info_length (2).
    program_info_length = ((section[7] & 0x0F) << 8) | section[8]
    pos = 9 + program_info_length
    while pos + 5 <= len(section):
        stream_type = section[pos]
        pid = ((section[pos + 1] & 0x1F) << 8) | section[pos + 2]
        if stream_type == _STREAM_TYPE_H264:
            return pid
        pos += 5 + (((section[pos + 3] & 0x0F) << 8) | section[pos + 4])
    return None


def _pes_pts(packet: bytes, payload_offset: int) -> int | None:
    """The PTS (90 kHz ticks) of the PES header starting at ``payload_offset``."""
    header = packet[payload_offset : payload_offset + 14]
    if len(header) < 9 or header[:3] != b"\x00\x00\x01":
        return None
    if not header[7] & 0x80 or len(header) < 14:  # PTS_DTS_flags: no PTS
        return None
    # 33 bits spread over 5 bytes, each group followed by a marker bit.
    b0, b1, b2, b3, b4 = header[9:14]
    return ((b0 >> 1) & 0x07) << 30 | b1 << 22 | (b2 >> 1) << 15 | b3 << 7 | b4 >> 1


def ts_iframe_ranges(segment: bytes, *, keyframe_pts_90k: Sequence[int] | None = None) -> list[tuple[int, int, int]]:
    """Byte ranges of the keyframes in an MPEG-TS ``segment``, for I-frame playlists.

    Returns ``(offset, length, pts_90k)`` per keyframe, in file order; offset
    and length in bytes (both multiples of 188), ``pts_90k`` the PES PTS as
    written (FFmpeg's mpegts muxer adds 2 x ``max_delay`` to the packets'
    timestamps; the PTS here includes that shift).

    The video stream is the first H.264 stream (stream_type 0x1B) of the
    first program of the PAT (PID 0) found in ``segment``. A video PES
    (a packet on that PID with payload_unit_start_indicator set) is a
    keyframe when:

    * ``keyframe_pts_90k`` is None: its first packet's adaptation field has
      random_access_indicator set (FFmpeg's mpegts muxer sets it on the first
      packet of every keyframe PES);
    * otherwise: its PTS is in ``keyframe_pts_90k`` (compared modulo 2**33),
      and the random_access_indicator is ignored.

    Range of a keyframe PES whose first packet is packet ``k``:

    * start: if the packets right before ``k`` are all PSI/SI packets (PIDs
      below 0x20, e.g. SDT, PAT; the PMT PID) or null packets, and include a
      PAT followed by the PMT, the start of the first such PAT, so the range can be
      decoded on its own (FFmpeg writes SDT, PAT, PMT before keyframes at a
      segment start); otherwise the start of packet ``k``.
    * end: the end of the last packet on the video PID before the next video
      PES starts (or before the end of ``segment``), i.e. the PES's own last
      packet. Audio packets interleaved inside are included; audio or PSI
      packets after the PES's last packet are not.

    Ranges therefore never overlap. Video packets before the first PAT and
    PMT cannot be recognised and are skipped. Raises ``ValueError`` if the
    size is not a multiple of 188, a sync byte is missing, a non-empty
    segment has no PAT/PMT naming an H.264 stream, a PAT or PMT section spans
    packets, or a keyframe PES has no PTS.
    """
    data = bytes(segment)
    if len(data) % TS_PACKET_SIZE:
        raise ValueError(f"MPEG-TS size {len(data)} is not a multiple of {TS_PACKET_SIZE}")
    wanted = None if keyframe_pts_90k is None else {p % _PTS_MODULUS for p in keyframe_pts_90k}

    pmt_pid: int | None = None
    video_pid: int | None = None
    pids: list[int] = []  # PID of every packet, to look back from a PES start
    # (first packet index, pts) of each keyframe PES, and its last video packet.
    ranges: list[list[int]] = []
    in_keyframe = False

    for index in range(len(data) // TS_PACKET_SIZE):
        offset = index * TS_PACKET_SIZE
        packet = data[offset : offset + TS_PACKET_SIZE]
        pid, pusi, payload_offset, random_access = _packet_fields(packet, offset)
        pids.append(pid)
        has_payload = payload_offset < TS_PACKET_SIZE
        if pid == _PAT_PID and pusi and has_payload and pmt_pid is None:
            pmt_pid = _pmt_pid(_psi_section(packet, payload_offset, 0x00, offset))
        elif pid == pmt_pid and pusi and has_payload and video_pid is None:
            video_pid = _h264_pid(_psi_section(packet, payload_offset, 0x02, offset))
        if video_pid is None or pid != video_pid:
            continue
        if pusi and has_payload:
            pts = _pes_pts(packet, payload_offset)
            in_keyframe = random_access if wanted is None else pts is not None and pts % _PTS_MODULUS in wanted
            if in_keyframe:
                if pts is None:
                    raise ValueError(f"keyframe PES without PTS at offset {offset}")
                start = _range_start(pids, index, pmt_pid)
                ranges.append([start, index, pts])  # index: its last packet so far
        elif in_keyframe:
            ranges[-1][1] = index

    if video_pid is None and data:
        raise ValueError("no PAT/PMT with an H.264 stream (stream_type 0x1B) in the segment")
    return [(start * TS_PACKET_SIZE, (last + 1 - start) * TS_PACKET_SIZE, pts) for start, last, pts in ranges]


def _is_table_or_null(pid: int, pmt_pid: int | None) -> bool:
    # Null packets (CBR stuffing) may sit between the tables and the PES.
    return pid < _SI_PID_LIMIT or pid in (pmt_pid, _NULL_PID)


def _range_start(pids: list[int], first: int, pmt_pid: int | None) -> int:
    """Packet index where the keyframe PES starting at packet ``first`` begins.

    Walk back over the run of PSI/SI packets directly before ``first``; the
    range starts at the earliest PAT in that run that a PMT packet follows
    inside the run. Otherwise it starts at ``first``.
    """
    run_start = first
    while run_start > 0 and _is_table_or_null(pids[run_start - 1], pmt_pid):
        run_start -= 1
    run = pids[run_start:first]
    for i, pid in enumerate(run):
        if pid == _PAT_PID and pmt_pid in run[i + 1 :]:
            return run_start + i
    return first


# --------------------------------------------------------------------------- #
# ISO BMFF boxes
# --------------------------------------------------------------------------- #


def mp4_top_level_boxes(data: bytes) -> list[tuple[str, int, int]]:
    """Top-level ISO BMFF boxes of ``data`` as ``(type, offset, size)``, in bytes.

    ``size`` is the whole box (header included). A 32-bit size of 1 means a
    64-bit largesize follows the type; 0 means the box runs to the end of
    ``data``. The type is the four-character code (latin-1). Raises
    ``ValueError`` for a truncated header, a size smaller than its header, or
    a box that runs past the end of ``data``.
    """
    data = bytes(data)
    boxes: list[tuple[str, int, int]] = []
    offset = 0
    while offset < len(data):
        if offset + 8 > len(data):
            raise ValueError(f"truncated box header at offset {offset}")
        size, raw_type = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            if offset + 16 > len(data):
                raise ValueError(f"truncated 64-bit box size at offset {offset}")
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        elif size == 0:
            size = len(data) - offset
        if size < header:
            raise ValueError(f"box at offset {offset} has size {size}, smaller than its {header}-byte header")
        if offset + size > len(data):
            raise ValueError(f"box {raw_type!r} at offset {offset} (size {size}) runs past the end ({len(data)})")
        boxes.append((raw_type.decode("latin-1"), offset, size))
        offset += size
    return boxes


def first_sample_size(moof: bytes) -> int | None:
    """Size in bytes of the first sample of the first track run in a ``moof`` box.

    Read from the ``trun`` entry when it carries sizes, else from the
    ``tfhd`` default sample size; None when neither is present or the box
    is malformed.
    """

    def children(payload: bytes, start: int) -> list[tuple[str, int, int]]:
        out = []
        pos = start
        while pos + 8 <= len(payload):
            size = int.from_bytes(payload[pos : pos + 4], "big")
            kind = payload[pos + 4 : pos + 8].decode("latin-1")
            if size < 8 or pos + size > len(payload):
                break
            out.append((kind, pos, size))
            pos += size
        return out

    for kind, pos, size in children(moof, 8):
        if kind != "traf":
            continue
        traf = moof[pos : pos + size]
        default_size: int | None = None
        for child, cpos, csize in children(traf, 8):
            body = traf[cpos + 8 : cpos + csize]
            if len(body) < 8:
                continue
            flags = int.from_bytes(body[1:4], "big")
            if child == "tfhd":
                field = 8  # version/flags + track_ID
                field += 8 if flags & 0x01 else 0  # base_data_offset
                field += 4 if flags & 0x02 else 0  # sample_description_index
                field += 4 if flags & 0x08 else 0  # default_sample_duration
                if flags & 0x10 and len(body) >= field + 4:
                    default_size = int.from_bytes(body[field : field + 4], "big")
            elif child == "trun":
                count = int.from_bytes(body[4:8], "big")
                field = 8
                field += 4 if flags & 0x01 else 0  # data_offset
                field += 4 if flags & 0x04 else 0  # first_sample_flags
                field += 4 if flags & 0x100 else 0  # sample_duration
                if count and flags & 0x200 and len(body) >= field + 4:
                    return int.from_bytes(body[field : field + 4], "big")
                return default_size
    return None
