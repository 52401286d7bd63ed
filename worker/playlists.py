"""Read HLS playlists back (RFC 8216) to report a ladder that is already stored. Pure: text in, values out.

The worker reports what it can read from storage, for a ladder it just wrote
and for one an earlier run wrote and never reported alike, so both paths give
the same report: per variant of the master playlist its measured peak
(``BANDWIDTH``), average (``AVERAGE-BANDWIDTH``, else the peak), ``CODECS`` and
``RESOLUTION``; the duration from the media playlists' ``EXTINF`` sums.

Only relative URIs are accepted (the engine writes nothing else); a URI with a
scheme, a leading ``/`` or one that climbs out of the ladder's directory is a
``ValueError``.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MasterPlaylist",
    "MediaPlaylist",
    "Variant",
    "completion_report",
    "parse_attributes",
    "parse_master",
    "parse_media",
    "rendition_name",
    "resolve",
]

_ATTRIBUTE = re.compile(r'\s*([A-Z0-9-]+)=("[^"\r\n]*"|[^",\s]*)\s*(?:,|$)')
_RESOLUTION = re.compile(r"^([1-9][0-9]{0,4})x([1-9][0-9]{0,4})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def parse_attributes(text: str) -> dict[str, str]:
    """An attribute list (``A=1,B="x,y"``) as a dict; quoted values lose their quotes.

    ``ValueError`` for text that is not an attribute list.
    """
    attributes: dict[str, str] = {}
    position = 0
    text = text.strip()
    while position < len(text):
        match = _ATTRIBUTE.match(text, position)
        if match is None or match.end() == position:
            raise ValueError(f"bad attribute list near {text[position : position + 40]!r}")
        name, value = match[1], match[2]
        if value.startswith('"'):
            value = value[1:-1]
        attributes[name] = value
        position = match.end()
    return attributes


@dataclass(frozen=True, slots=True, kw_only=True)
class Variant:
    """One ``EXT-X-STREAM-INF`` entry. Bandwidths in bits per second."""

    uri: str
    bandwidth_bps: int
    average_bandwidth_bps: int | None
    codecs: str | None
    width: int | None
    height: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MasterPlaylist:
    variants: tuple[Variant, ...]
    media_uris: tuple[str, ...]  # EXT-X-MEDIA URIs (audio renditions)
    iframe_uris: tuple[str, ...]  # EXT-X-I-FRAME-STREAM-INF URIs

    @property
    def playlist_uris(self) -> tuple[str, ...]:
        """Every media playlist the master names, each once, in order."""
        return tuple(dict.fromkeys([*(v.uri for v in self.variants), *self.media_uris, *self.iframe_uris]))


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaPlaylist:
    segment_uris: tuple[str, ...]  # distinct, in order (byte-range playlists repeat URIs)
    map_uris: tuple[str, ...]  # EXT-X-MAP URIs (fMP4 init segments)
    duration_s: float  # the EXTINF sum
    ended: bool  # EXT-X-ENDLIST present: the playlist is final


def _lines(text: str) -> list[str]:
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    if not lines or lines[0].lstrip("\ufeff") != "#EXTM3U":
        raise ValueError("not an HLS playlist (no #EXTM3U first line)")
    return lines


def _int(value: str | None, what: str) -> int:
    if value is None or not value.isdigit():
        raise ValueError(f"{what}: expected a decimal integer, got {value!r}")
    return int(value)


def parse_master(text: str) -> MasterPlaylist:
    """The variants and renditions of a master playlist; ``ValueError`` if it is not a usable one."""
    lines = _lines(text)
    variants: list[Variant] = []
    media: list[str] = []
    iframes: list[str] = []
    pending: dict[str, str] | None = None
    for line in lines[1:]:
        if not line:
            continue
        if line.startswith("#EXT-X-STREAM-INF:"):
            if pending is not None:
                raise ValueError("EXT-X-STREAM-INF without a URI line")
            pending = parse_attributes(line.partition(":")[2])
        elif line.startswith("#EXT-X-MEDIA:"):
            attributes = parse_attributes(line.partition(":")[2])
            if "URI" in attributes:
                media.append(attributes["URI"])
        elif line.startswith("#EXT-X-I-FRAME-STREAM-INF:"):
            attributes = parse_attributes(line.partition(":")[2])
            if "URI" not in attributes:
                raise ValueError("EXT-X-I-FRAME-STREAM-INF without a URI")
            iframes.append(attributes["URI"])
        elif line.startswith("#EXTINF") or line.startswith("#EXT-X-TARGETDURATION"):
            raise ValueError("a media playlist, not a master playlist")
        elif line.startswith("#"):
            continue
        else:
            if pending is None:
                raise ValueError(f"URI line {line[:60]!r} without EXT-X-STREAM-INF")
            variants.append(_variant(line, pending))
            pending = None
    if pending is not None:
        raise ValueError("EXT-X-STREAM-INF without a URI line")
    if not variants:
        raise ValueError("the master playlist has no variant")
    return MasterPlaylist(variants=tuple(variants), media_uris=tuple(media), iframe_uris=tuple(iframes))


def _variant(uri: str, attributes: dict[str, str]) -> Variant:
    bandwidth = _int(attributes.get("BANDWIDTH"), "BANDWIDTH")
    average = attributes.get("AVERAGE-BANDWIDTH")
    width = height = None
    if "RESOLUTION" in attributes:
        match = _RESOLUTION.match(attributes["RESOLUTION"])
        if match is None:
            raise ValueError(f"RESOLUTION: expected WxH, got {attributes['RESOLUTION']!r}")
        width, height = int(match[1]), int(match[2])
    return Variant(
        uri=uri,
        bandwidth_bps=bandwidth,
        average_bandwidth_bps=None if average is None else _int(average, "AVERAGE-BANDWIDTH"),
        codecs=attributes.get("CODECS") or None,
        width=width,
        height=height,
    )


def parse_media(text: str) -> MediaPlaylist:
    """Segments, init segments and duration of a media (or I-frame) playlist; ``ValueError`` if unusable."""
    lines = _lines(text)
    segments: dict[str, None] = {}
    maps: dict[str, None] = {}
    duration = 0.0
    ended = False
    for line in lines[1:]:
        if not line:
            continue
        if line.startswith("#EXTINF:"):
            value = line.partition(":")[2].partition(",")[0].strip()
            try:
                seconds = float(value)
            except ValueError:
                raise ValueError(f"EXTINF: bad duration {value!r}") from None
            if not 0 <= seconds < 86400:
                raise ValueError(f"EXTINF: duration out of range: {value!r}")
            duration += seconds
        elif line.startswith("#EXT-X-MAP:"):
            attributes = parse_attributes(line.partition(":")[2])
            if "URI" not in attributes:
                raise ValueError("EXT-X-MAP without a URI")
            maps[attributes["URI"]] = None
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line.startswith("#EXT-X-STREAM-INF"):
            raise ValueError("a master playlist, not a media playlist")
        elif not line.startswith("#"):
            segments[line] = None
    if not segments:
        raise ValueError("the media playlist has no segment")
    return MediaPlaylist(segment_uris=tuple(segments), map_uris=tuple(maps), duration_s=duration, ended=ended)


def resolve(directory: str, uri: str, *, within: str) -> str:
    """``uri``, relative to a playlist in ``directory`` ("" or ending in ``/``), as a path from the root.

    ``ValueError`` for absolute URIs, and for URIs that lead outside ``within``
    (the ladder's directory: "" or ending in ``/``).
    """
    if not uri or "://" in uri or uri.startswith("/") or "?" in uri or "#" in uri or "\\" in uri:
        raise ValueError(f"not a relative URI: {uri[:80]!r}")
    joined = posixpath.normpath(posixpath.join(directory, uri))
    if joined == ".." or joined.startswith("../") or not joined.startswith(within):
        raise ValueError(f"URI {uri[:80]!r} leads outside the ladder's directory")
    return joined


def rendition_name(uri: str, index: int) -> str:
    """A variant's name for the report: its playlist's directory (``720p/index.m3u8`` -> ``720p``)."""
    head, _, tail = uri.rpartition("/")
    candidate = head.rpartition("/")[2] if head else tail.rsplit(".", 1)[0]
    return candidate if _NAME.match(candidate) else f"variant{index}"


def completion_report(master: MasterPlaylist, *, hls_path: str, duration_s: float, total_bytes: int) -> dict[str, Any]:
    """The body of ``complete`` (``api_client.CompletionReport.to_json`` shape) for ``master``.

    One rendition per variant, in the master's order; names made unique.
    """
    renditions: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, variant in enumerate(master.variants):
        name = rendition_name(variant.uri, index)
        if name in seen:
            name = f"{name}-{index}"
        seen.add(name)
        average = variant.average_bandwidth_bps or variant.bandwidth_bps
        renditions.append(
            {
                "name": name,
                "width": variant.width,
                "height": variant.height,
                "bandwidth_bps": variant.bandwidth_bps,
                "average_bandwidth_bps": min(average, variant.bandwidth_bps),
                "codecs": variant.codecs or "unknown",
            }
        )
    return {
        "hls_path": hls_path,
        "duration_s": round(duration_s, 6),
        "renditions": renditions,
        "total_bytes": total_bytes,
    }
