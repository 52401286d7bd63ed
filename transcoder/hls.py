"""Render HLS playlists (RFC 8216) as text from measured segment facts.

Pure: no PyAV, no I/O. Every function takes what was measured after the
segments were written (durations in seconds, sizes in bytes) and returns the
playlist text, ``\\n``-terminated lines, ready to be written as UTF-8.

Choices that hold for every playlist rendered here:

* Every URI must be relative (no scheme, no leading ``/``): the output tree is
  uploaded as a whole under a prefix the engine does not know, so absolute
  URIs would break as soon as it is moved. URIs with whitespace, control
  characters or ``"`` are refused too (they could inject lines or end a
  quoted attribute). Violations raise ``ValueError``.
* ``EXTINF`` durations are written with 6 decimals, and
  ``EXT-X-TARGETDURATION`` is computed from those *written* values, rounded
  half up, so a parser reading the text back always finds every rounded
  ``EXTINF`` <= ``TARGETDURATION`` (RFC 8216 section 4.3.3.1). Rounding the
  float instead could disagree: 4.4999996 is written ``4.500000``.
* ``EXT-X-VERSION`` is the minimum the features in use require
  (RFC 8216 section 7): 3 for decimal ``EXTINF``, 4 for byte ranges and
  I-frame playlists, 5 for ``EXT-X-MAP`` in an I-frame playlist, 6 for
  ``EXT-X-MAP`` in a media playlist.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from urllib.parse import urlsplit

from .models import IFrameInfo, SegmentInfo

__all__ = [
    "AudioEntry",
    "ImageStreamEntry",
    "SessionData",
    "VariantEntry",
    "iframe_average_bps",
    "iframe_peak_bps",
    "peak_and_average_bps",
    "render_iframe_playlist",
    "render_master_playlist",
    "render_media_playlist",
    "target_duration_s",
]

# RFC 8216 section 7: the lowest protocol version that allows each feature.
_VERSION_DECIMAL_EXTINF = 3
_VERSION_BYTERANGE_IFRAMES = 4
_VERSION_MAP_IN_IFRAMES = 5
_VERSION_MAP_IN_MEDIA = 6
# Master playlists: no tag written here needs a particular version (RFC 8216
# section 7); 6 matches the fMP4 media playlists the variants may point to.
_MASTER_VERSION = 6

# CODECS entries that name a video format; the I-frame playlist carries only
# video, so its CODECS must list only these (RFC 8216 section 4.3.4.3).
_VIDEO_CODEC_PREFIXES = ("avc1.", "avc3.", "hvc1.", "hev1.", "dvh1.", "dvhe.", "av01.", "vp09.")


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantEntry:
    """One video variant of the master playlist.

    ``bandwidth_bps`` is the measured peak (BANDWIDTH), ``average_bandwidth_bps``
    the measured average (AVERAGE-BANDWIDTH), both in bits per second and
    including whatever the variant plays at once (its audio rendition's rate
    added by the caller when audio is a separate rendition).

    ``codecs`` is the CODECS of the variant's own media segments, e.g.
    ``"avc1.640028"`` (or ``"avc1.640028,mp4a.40.2"`` with muxed audio). The
    codecs of ``audio_group`` are appended in the master playlist, so a
    variant's CODECS always names every format the player will meet.

    ``iframe_uri``/``iframe_bandwidth_bps`` describe its I-frame playlist:
    both or neither. ``iframe_bandwidth_bps`` is ``iframe_peak_bps(...)``;
    ``iframe_average_bandwidth_bps`` (optional) is ``iframe_average_bps(...)``.
    """

    uri: str
    iframe_uri: str | None
    bandwidth_bps: int
    average_bandwidth_bps: int
    codecs: str
    width: int
    height: int
    fps: Fraction
    audio_group: str | None
    iframe_bandwidth_bps: int | None = None
    iframe_average_bandwidth_bps: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioEntry:
    """One audio rendition (EXT-X-MEDIA TYPE=AUDIO) of group ``group_id``.

    ``codecs`` is the CODECS entry its segments carry; it is appended to the
    CODECS of every variant that plays with this group.
    """

    group_id: str
    name: str
    uri: str
    default: bool
    channels: int
    language: str | None
    codecs: str = "mp4a.40.2"  # AAC-LC


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionData:
    """One ``EXT-X-SESSION-DATA`` line of the master playlist (RFC 8216 section 4.3.4.4).

    ``data_id`` names the data in reverse-DNS form (e.g. ``"com.apple.hls.chapters"``,
    whose ``uri`` names Apple's chapter JSON). Exactly one of ``uri`` (a
    relative URI of a JSON resource) and ``value`` (the data itself) is given.
    ``language`` is an RFC 5646 tag, or None.
    """

    data_id: str
    uri: str | None = None
    value: str | None = None
    language: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageStreamEntry:
    """One ``EXT-X-IMAGE-STREAM-INF`` line: an image media playlist of thumbnail sheets.

    Not part of RFC 8216: the "HLS Image Media Playlist" extension (Roku's
    trick play; Shaka and ExoPlayer read it too). ``width``/``height`` is one
    tile's size (RESOLUTION), ``bandwidth_bps`` the peak of its sheets.
    Players that do not know the tag ignore it (RFC 8216 section 6.3.1:
    unrecognised tags are ignored).
    """

    uri: str
    bandwidth_bps: int
    width: int
    height: int
    codecs: str = "jpeg"


# --------------------------------------------------------------------------- #
# Bit rates
# --------------------------------------------------------------------------- #


def _rate_bps(size_bytes: int, duration_s: float) -> int:
    # Fraction(float) is exact, so the ceiling is exact for the float given
    # (no 3999.9999999 -> 4000 or 4000.0000001 -> 4001 surprises).
    return math.ceil(Fraction(size_bytes * 8) / Fraction(duration_s))


def peak_and_average_bps(segments: Sequence[SegmentInfo], *, target_duration_s: int | None = None) -> tuple[int, int]:
    """Return ``(peak_bps, average_bps)`` of one rendition, in bits per second.

    ``average_bps`` = ceil(total bytes * 8 / total duration).

    ``peak_bps`` without ``target_duration_s`` = max over segments of
    ceil(size * 8 / duration): an upper bound of the RFC 8216 peak, which
    is what BANDWIDTH must not be below.

    With ``target_duration_s`` (the playlist's EXT-X-TARGETDURATION), the peak
    follows RFC 8216 section 4.3.4.2 exactly: the largest bit rate of any
    contiguous run of segments whose total duration lies in
    [0.5, 1.5] x target duration. This stops a very short last segment that
    holds little more than an IDR frame from inflating BANDWIDTH far above
    the real peak (Apple's validator wants it within 10%). If no run
    qualifies, the per-segment maximum is used.

    Segments with ``duration_s <= 0`` are skipped for the peak (they have no
    rate) and add nothing to the average. Both values are 0 when no segment
    has a positive duration. Sizes or durations that are negative or not
    finite raise ``ValueError``.
    """
    for segment in segments:
        _check_segment_numbers(segment)
    timed = [s for s in segments if s.duration_s > 0]
    if not timed:
        return 0, 0
    total_bytes = sum(s.size_bytes for s in timed)
    # An exact sum: a rounded one can fall below the true total and put the
    # average above every segment's own rate.
    total_s = sum((Fraction(s.duration_s) for s in timed), Fraction(0))
    average = math.ceil(Fraction(total_bytes * 8) / total_s)
    per_segment_peak = max(_rate_bps(s.size_bytes, s.duration_s) for s in timed)
    if target_duration_s is None:
        return per_segment_peak, average
    if target_duration_s <= 0:
        raise ValueError(f"target_duration_s must be positive, got {target_duration_s}")
    low, high = 0.5 * target_duration_s, 1.5 * target_duration_s
    window_peak = 0
    # Windows are short (about one target duration), so the inner loop stops
    # after a few segments: O(n * segments-per-window).
    for start in range(len(timed)):
        run_bytes, run_s = 0, 0.0
        for segment in timed[start:]:
            run_bytes += segment.size_bytes
            run_s += segment.duration_s
            if run_s > high:
                break
            if run_s >= low:
                window_peak = max(window_peak, _rate_bps(run_bytes, run_s))
    return (window_peak or per_segment_peak), average


def _iframes(segments: Sequence[SegmentInfo]) -> Iterable[IFrameInfo]:
    for segment in segments:
        yield from segment.iframes


def iframe_peak_bps(segments: Sequence[SegmentInfo]) -> int:
    """BANDWIDTH of the I-frame playlist, in bits per second.

    = max over every I-frame of ceil(length_bytes * 8 / duration_s): each
    entry of an I-frame playlist is a "segment" of its own. I-frames with
    ``duration_s <= 0`` are skipped; 0 when none has a positive duration.
    """
    rates = [_rate_bps(i.length_bytes, i.duration_s) for i in _iframes(segments) if i.duration_s > 0]
    return max(rates, default=0)


def iframe_average_bps(segments: Sequence[SegmentInfo]) -> int:
    """AVERAGE-BANDWIDTH of the I-frame playlist, in bits per second.

    = ceil(sum of I-frame lengths * 8 / sum of their durations), over the
    I-frames with a positive duration; 0 when there are none.
    """
    timed = [i for i in _iframes(segments) if i.duration_s > 0]
    if not timed:
        return 0
    total_s = math.fsum(i.duration_s for i in timed)
    return math.ceil(Fraction(sum(i.length_bytes for i in timed) * 8) / Fraction(total_s))


# --------------------------------------------------------------------------- #
# Validation and formatting helpers
# --------------------------------------------------------------------------- #


def _check_segment_numbers(segment: SegmentInfo) -> None:
    if not math.isfinite(segment.duration_s) or segment.duration_s < 0:
        raise ValueError(f"segment {segment.uri!r}: duration_s must be finite and >= 0, got {segment.duration_s}")
    if segment.size_bytes < 0:
        raise ValueError(f"segment {segment.uri!r}: size_bytes must be >= 0, got {segment.size_bytes}")


def _check_uri(uri: str) -> str:
    """Return ``uri`` if it is a usable relative URI, else raise ``ValueError``.

    Beyond being relative, it must be non-empty and free of whitespace,
    control characters and ``"`` (none is legal in an RFC 3986 URI; a line
    break would inject playlist lines, a quote would end a quoted-string
    attribute), and must not start with ``#`` (the line would read as a tag).
    """
    if not uri or any(ch.isspace() or ord(ch) < 0x20 or ch in '"\x7f' for ch in uri):
        raise ValueError(f"URI must be non-empty, without whitespace, control characters or '\"': {uri!r}")
    if uri.startswith("#"):
        raise ValueError(f"URI must not start with '#' (the line would read as a tag): {uri!r}")
    # "//host/x" is network-path absolute; "/x" is root-relative: neither
    # survives the output tree being moved under another prefix.
    if uri.startswith(("/", "\\")) or urlsplit(uri).scheme:
        raise ValueError(f"URI must be relative (no scheme, no leading '/'): {uri!r}")
    return uri


def _quoted(value: str, what: str) -> str:
    """``value`` as an RFC 8216 quoted-string (no CR, LF or double quote)."""
    if not value or any(ch in value for ch in '"\r\n'):
        raise ValueError(f"{what} must be non-empty without '\"' or line breaks: {value!r}")
    return f'"{value}"'


def _extinf(duration_s: float) -> str:
    # 6 decimals: microsecond precision, well past any frame duration.
    return f"{duration_s:.6f}"


def target_duration_s(durations_s: Iterable[float]) -> int:
    """EXT-X-TARGETDURATION, in whole seconds, for these EXTINF durations.

    = max(1, max of each duration *as written* (6 decimals) rounded half
    up). The renderers use this; call it too when another value must agree
    with the playlist (e.g. ``peak_and_average_bps(target_duration_s=...)``).
    """
    target = 1  # RFC 8216 wants a positive decimal-integer; 0 confuses players.
    for duration_s in durations_s:
        written = Decimal(_extinf(duration_s))
        target = max(target, int(written.quantize(Decimal(1), rounding=ROUND_HALF_UP)))
    return target


def _frame_rate(fps: Fraction) -> str:
    """FRAME-RATE with 3 decimals, rounded half up, from the exact fraction."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    thousandths = math.floor(Fraction(fps) * 1000 + Fraction(1, 2))
    return f"{thousandths // 1000}.{thousandths % 1000:03d}"


def _header(version: int) -> list[str]:
    return ["#EXTM3U", f"#EXT-X-VERSION:{version}"]


def _vod_header(version: int, target_s: int) -> list[str]:
    return [
        *_header(version),
        f"#EXT-X-TARGETDURATION:{target_s}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        # Every segment starts with an IDR frame (closed GOPs at segment
        # boundaries), so each can be decoded on its own.
        "#EXT-X-INDEPENDENT-SEGMENTS",
    ]


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- #
# Media and I-frame playlists
# --------------------------------------------------------------------------- #


def render_media_playlist(
    segments: Sequence[SegmentInfo], *, init_uri: str | None = None, version: int | None = None
) -> str:
    """Render a VOD media playlist for ``segments``, in the order given.

    ``init_uri`` (fMP4) adds ``EXT-X-MAP:URI="..."``. ``version`` defaults to
    the minimum the features require (3, or 6 with ``EXT-X-MAP``); a higher
    value is written as given, a lower one raises ``ValueError``.

    Raises ``ValueError`` for no segments, a negative or non-finite duration,
    or a URI that is absolute or cannot be written.
    """
    if not segments:
        raise ValueError("a VOD media playlist needs at least one segment")
    for segment in segments:
        _check_segment_numbers(segment)
        _check_uri(segment.uri)
    required = _VERSION_DECIMAL_EXTINF if init_uri is None else _VERSION_MAP_IN_MEDIA
    if version is None:
        version = required
    elif version < required:
        raise ValueError(f"version {version} is below {required}, the minimum these features need")
    lines = _vod_header(version, target_duration_s(s.duration_s for s in segments))
    if init_uri is not None:
        lines.append(f'#EXT-X-MAP:URI="{_check_uri(init_uri)}"')
    for segment in segments:
        lines += [f"#EXTINF:{_extinf(segment.duration_s)},", segment.uri]
    lines.append("#EXT-X-ENDLIST")
    return _text(lines)


def render_iframe_playlist(segments: Sequence[SegmentInfo], *, init_uri: str | None = None) -> str:
    """Render the I-frame-only playlist (``EXT-X-I-FRAMES-ONLY``) of a rendition.

    One entry per ``IFrameInfo`` of each segment, in order:
    ``#EXTINF:<i-frame duration_s>,``, ``#EXT-X-BYTERANGE:<length>@<offset>``
    (offset always written, so no entry depends on the previous one), then
    the segment's URI. TARGETDURATION comes from the I-frame durations.
    Version 4 (byte ranges, I-frames only), 5 with ``EXT-X-MAP`` (fMP4).

    Raises ``ValueError`` if there are no I-frames, an I-frame has a negative
    or non-finite duration, a negative offset or a non-positive length, or a
    URI is absolute or cannot be written.
    """
    entries: list[tuple[IFrameInfo, str]] = []
    for segment in segments:
        _check_segment_numbers(segment)
        for iframe in segment.iframes:
            if not math.isfinite(iframe.duration_s) or iframe.duration_s < 0:
                raise ValueError(f"{segment.uri!r}: I-frame duration_s must be finite and >= 0: {iframe.duration_s}")
            if iframe.offset_bytes < 0 or iframe.length_bytes <= 0:
                raise ValueError(f"{segment.uri!r}: bad I-frame byte range {iframe.length_bytes}@{iframe.offset_bytes}")
            entries.append((iframe, _check_uri(segment.uri)))
    if not entries:
        raise ValueError("an I-frame playlist needs at least one I-frame")
    version = _VERSION_BYTERANGE_IFRAMES if init_uri is None else _VERSION_MAP_IN_IFRAMES
    lines = _vod_header(version, target_duration_s(i.duration_s for i, _ in entries))
    lines.append("#EXT-X-I-FRAMES-ONLY")
    if init_uri is not None:
        lines.append(f'#EXT-X-MAP:URI="{_check_uri(init_uri)}"')
    for iframe, uri in entries:
        lines += [
            f"#EXTINF:{_extinf(iframe.duration_s)},",
            f"#EXT-X-BYTERANGE:{iframe.length_bytes}@{iframe.offset_bytes}",
            uri,
        ]
    lines.append("#EXT-X-ENDLIST")
    return _text(lines)


# --------------------------------------------------------------------------- #
# Master playlist
# --------------------------------------------------------------------------- #


def _codec_list(codecs: str, what: str) -> list[str]:
    items = [c.strip() for c in codecs.split(",")]
    if not items or any(not c or any(ch in c for ch in '"\r\n ') for c in items):
        raise ValueError(f"{what}: bad CODECS value {codecs!r}")
    return items


def _check_audio(audio: Sequence[AudioEntry]) -> dict[str, list[str]]:
    """Validate the audio renditions; return each group's codecs, in order."""
    group_codecs: dict[str, list[str]] = {}
    names: set[tuple[str, str]] = set()
    defaults: set[str] = set()
    for entry in audio:
        _check_uri(entry.uri)
        _quoted(entry.group_id, "GROUP-ID")
        _quoted(entry.name, "NAME")
        if entry.language is not None:
            _quoted(entry.language, "LANGUAGE")
        if entry.channels <= 0:
            raise ValueError(f"audio {entry.name!r}: channels must be positive, got {entry.channels}")
        # RFC 8216 section 4.3.4.1.1: NAMEs differ within a group, and at
        # most one member of a group is DEFAULT=YES.
        if (entry.group_id, entry.name) in names:
            raise ValueError(f"audio group {entry.group_id!r} has two renditions named {entry.name!r}")
        names.add((entry.group_id, entry.name))
        if entry.default:
            if entry.group_id in defaults:
                raise ValueError(f"audio group {entry.group_id!r} has more than one DEFAULT=YES rendition")
            defaults.add(entry.group_id)
        codecs = group_codecs.setdefault(entry.group_id, [])
        for codec in _codec_list(entry.codecs, f"audio {entry.name!r}"):
            if codec not in codecs:
                codecs.append(codec)
    return group_codecs


def _check_variant(variant: VariantEntry, group_codecs: dict[str, list[str]]) -> None:
    _check_uri(variant.uri)
    if variant.bandwidth_bps <= 0 or variant.average_bandwidth_bps <= 0:
        raise ValueError(f"variant {variant.uri!r}: bandwidths must be positive")
    # A weighted average of segment rates can never exceed their maximum:
    # if it does, the caller swapped the two or measured different things.
    if variant.average_bandwidth_bps > variant.bandwidth_bps:
        raise ValueError(
            f"variant {variant.uri!r}: AVERAGE-BANDWIDTH {variant.average_bandwidth_bps} "
            f"exceeds peak BANDWIDTH {variant.bandwidth_bps}"
        )
    if variant.width <= 0 or variant.height <= 0:
        raise ValueError(f"variant {variant.uri!r}: resolution must be positive")
    if variant.audio_group is not None and variant.audio_group not in group_codecs:
        raise ValueError(f"variant {variant.uri!r}: no EXT-X-MEDIA in audio group {variant.audio_group!r}")
    if (variant.iframe_uri is None) != (variant.iframe_bandwidth_bps is None):
        raise ValueError(f"variant {variant.uri!r}: iframe_uri and iframe_bandwidth_bps go together")
    if variant.iframe_uri is not None:
        _check_uri(variant.iframe_uri)
        if variant.iframe_bandwidth_bps is None or variant.iframe_bandwidth_bps <= 0:
            raise ValueError(f"variant {variant.uri!r}: iframe_bandwidth_bps must be positive")


def _session_data_lines(entries: Sequence[SessionData]) -> list[str]:
    """``EXT-X-SESSION-DATA`` lines, checked against RFC 8216 section 4.3.4.4."""
    lines = []
    seen: set[tuple[str, str | None]] = set()
    for entry in entries:
        attrs = [f"DATA-ID={_quoted(entry.data_id, 'DATA-ID')}"]
        # "Each EXT-X-SESSION-DATA tag MUST contain either a VALUE or URI
        # attribute, but not both."
        if (entry.uri is None) == (entry.value is None):
            raise ValueError(f"session data {entry.data_id!r}: give exactly one of uri and value")
        if entry.value is not None:
            attrs.append(f"VALUE={_quoted(entry.value, 'VALUE')}")
        else:
            assert entry.uri is not None
            attrs.append(f'URI="{_check_uri(entry.uri)}"')
        if entry.language is not None:
            attrs.append(f"LANGUAGE={_quoted(entry.language, 'LANGUAGE')}")
        # "A Playlist MUST NOT contain more than one EXT-X-SESSION-DATA tag
        # with the same DATA-ID attribute and the same LANGUAGE attribute."
        key = (entry.data_id, entry.language)
        if key in seen:
            raise ValueError(f"session data {entry.data_id!r} appears twice with LANGUAGE {entry.language!r}")
        seen.add(key)
        lines.append("#EXT-X-SESSION-DATA:" + ",".join(attrs))
    return lines


def render_master_playlist(
    variants: Sequence[VariantEntry],
    audio: Sequence[AudioEntry],
    *,
    session_data: Sequence[SessionData] = (),
    image_streams: Sequence[ImageStreamEntry] = (),
) -> str:
    """Render the master (multivariant) playlist.

    Layout: header; one ``EXT-X-SESSION-DATA`` per ``session_data`` entry, in
    the order given; one ``EXT-X-MEDIA:TYPE=AUDIO`` per ``audio`` entry, in the
    order given; one ``EXT-X-STREAM-INF`` + URI per variant, **ordered by
    ``bandwidth_bps`` ascending** (a stable sort: equal bandwidths keep the
    caller's order); then one ``EXT-X-I-FRAME-STREAM-INF`` per variant that
    has an I-frame playlist, in the same order; then one
    ``EXT-X-IMAGE-STREAM-INF`` per ``image_streams`` entry.

    A variant's CODECS is its ``codecs`` followed by its audio group's codecs
    (without repeats); the I-frame line lists only its video codecs.
    FRAME-RATE has 3 decimals, rounded half up from the exact fraction.

    Raises ``ValueError`` for no variants, an absolute or unwritable URI, a
    variant naming an audio group that has no EXT-X-MEDIA, two DEFAULT=YES
    renditions (or two equal NAMEs) in one group, non-positive bandwidths or
    sizes, AVERAGE-BANDWIDTH above BANDWIDTH, an I-frame URI without its
    bandwidth (or the reverse), or session data with both or neither of
    URI and VALUE, or two with the same DATA-ID and LANGUAGE.
    """
    if not variants:
        raise ValueError("a master playlist needs at least one variant")
    group_codecs = _check_audio(audio)
    for variant in variants:
        _check_variant(variant, group_codecs)

    lines = [*_header(_MASTER_VERSION), "#EXT-X-INDEPENDENT-SEGMENTS", *_session_data_lines(session_data)]
    for entry in audio:
        attrs = [
            "TYPE=AUDIO",
            f"GROUP-ID={_quoted(entry.group_id, 'GROUP-ID')}",
            f"NAME={_quoted(entry.name, 'NAME')}",
        ]
        if entry.language is not None:
            attrs.append(f"LANGUAGE={_quoted(entry.language, 'LANGUAGE')}")
        attrs += [
            f"DEFAULT={'YES' if entry.default else 'NO'}",
            # RFC 8216: AUTOSELECT must be YES whenever DEFAULT is YES; YES
            # for all lets players pick by language/channels on their own.
            "AUTOSELECT=YES",
            f'CHANNELS="{entry.channels}"',
            f'URI="{entry.uri}"',
        ]
        lines.append("#EXT-X-MEDIA:" + ",".join(attrs))

    ordered = sorted(variants, key=lambda v: v.bandwidth_bps)
    for variant in ordered:
        codecs = _codec_list(variant.codecs, f"variant {variant.uri!r}")
        if variant.audio_group is not None:
            codecs += [c for c in group_codecs[variant.audio_group] if c not in codecs]
        attrs = [
            f"BANDWIDTH={variant.bandwidth_bps}",
            f"AVERAGE-BANDWIDTH={variant.average_bandwidth_bps}",
            f'CODECS="{",".join(codecs)}"',
            f"RESOLUTION={variant.width}x{variant.height}",
            f"FRAME-RATE={_frame_rate(variant.fps)}",
        ]
        if variant.audio_group is not None:
            attrs.append(f"AUDIO={_quoted(variant.audio_group, 'AUDIO')}")
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attrs), variant.uri]

    for variant in ordered:
        if variant.iframe_uri is None:
            continue
        video = [
            c
            for c in _codec_list(variant.codecs, f"variant {variant.uri!r}")
            if c.lower().startswith(_VIDEO_CODEC_PREFIXES)
        ]
        if not video:
            raise ValueError(f"variant {variant.uri!r}: no video codec in CODECS {variant.codecs!r} for its I-frames")
        attrs = [f"BANDWIDTH={variant.iframe_bandwidth_bps}"]
        if variant.iframe_average_bandwidth_bps is not None:
            attrs.append(f"AVERAGE-BANDWIDTH={variant.iframe_average_bandwidth_bps}")
        attrs += [
            f'CODECS="{",".join(video)}"',
            f"RESOLUTION={variant.width}x{variant.height}",
            f'URI="{variant.iframe_uri}"',
        ]
        lines.append("#EXT-X-I-FRAME-STREAM-INF:" + ",".join(attrs))
    for image in image_streams:
        if image.bandwidth_bps <= 0 or image.width <= 0 or image.height <= 0:
            raise ValueError(f"image stream {image.uri!r}: bandwidth and resolution must be positive")
        attrs = [
            f"BANDWIDTH={image.bandwidth_bps}",
            f"RESOLUTION={image.width}x{image.height}",
            f'CODECS="{",".join(_codec_list(image.codecs, f"image stream {image.uri!r}"))}"',
            f'URI="{_check_uri(image.uri)}"',
        ]
        lines.append("#EXT-X-IMAGE-STREAM-INF:" + ",".join(attrs))
    return _text(lines)
