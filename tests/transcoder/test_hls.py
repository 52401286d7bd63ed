"""Playlist rendering: table tests, properties, and an independent parser (m3u8)."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import m3u8
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from transcoder.hls import (
    AudioEntry,
    ImageStreamEntry,
    SessionData,
    VariantEntry,
    iframe_average_bps,
    iframe_peak_bps,
    peak_and_average_bps,
    render_iframe_playlist,
    render_master_playlist,
    render_media_playlist,
    target_duration_s,
)
from transcoder.models import IFrameInfo, SegmentInfo


def seg(seq: int, duration_s: float, size_bytes: int = 100_000, iframes: tuple[IFrameInfo, ...] = ()) -> SegmentInfo:
    return SegmentInfo(
        rendition="720p",
        sequence=seq,
        uri=f"seg_{seq:05d}.ts",
        start_s=0.0,
        duration_s=duration_s,
        size_bytes=size_bytes,
        iframes=iframes,
    )


def iframe(offset: int, length: int, duration_s: float) -> IFrameInfo:
    return IFrameInfo(offset_bytes=offset, length_bytes=length, duration_s=duration_s)


def round_half_up(value: float) -> int:
    return int(Decimal(str(value)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def variant(
    name: str,
    bandwidth: int,
    *,
    average: int | None = None,
    iframes: bool = True,
    audio_group: str | None = "aac",
    codecs: str = "avc1.640028",
) -> VariantEntry:
    return VariantEntry(
        uri=f"{name}/index.m3u8",
        iframe_uri=f"{name}/iframes.m3u8" if iframes else None,
        bandwidth_bps=bandwidth,
        average_bandwidth_bps=average if average is not None else bandwidth * 3 // 4,
        codecs=codecs,
        width=1920,
        height=1080,
        fps=Fraction(30000, 1001),
        audio_group=audio_group,
        iframe_bandwidth_bps=bandwidth // 10 if iframes else None,
    )


AUDIO = AudioEntry(group_id="aac", name="audio", uri="audio/index.m3u8", default=True, channels=2, language="en")


# --------------------------------------------------------------------------- #
# Media playlists
# --------------------------------------------------------------------------- #


def test_media_playlist_exact_text() -> None:
    text = render_media_playlist([seg(0, 6.0), seg(1, 6.006), seg(2, 2.5)])
    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:6\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXTINF:6.000000,\nseg_00000.ts\n"
        "#EXTINF:6.006000,\nseg_00001.ts\n"
        "#EXTINF:2.500000,\nseg_00002.ts\n"
        "#EXT-X-ENDLIST\n"
    )


def test_media_playlist_as_m3u8_sees_it() -> None:
    durations = [4.0, 4.0, 3.2]
    parsed = m3u8.loads(render_media_playlist([seg(i, d) for i, d in enumerate(durations)]))
    assert parsed.version == 3
    assert parsed.target_duration == 4
    assert parsed.media_sequence == 0
    assert parsed.playlist_type == "vod"
    assert parsed.is_endlist and parsed.is_independent_segments
    assert not parsed.is_i_frames_only
    assert [s.duration for s in parsed.segments] == durations
    assert [s.uri for s in parsed.segments] == ["seg_00000.ts", "seg_00001.ts", "seg_00002.ts"]


def test_media_playlist_with_map_needs_version_6() -> None:
    text = render_media_playlist([seg(0, 4.0)], init_uri="init.mp4")
    parsed = m3u8.loads(text)
    assert parsed.version == 6
    assert parsed.segments[0].init_section is not None
    assert parsed.segments[0].init_section.uri == "init.mp4"
    assert '#EXT-X-MAP:URI="init.mp4"\n' in text


@pytest.mark.parametrize(("init_uri", "version"), [(None, 3), (None, 7), ("init.mp4", 6), ("init.mp4", 7)])
def test_media_playlist_version_at_or_above_minimum_is_written(init_uri: str | None, version: int) -> None:
    parsed = m3u8.loads(render_media_playlist([seg(0, 4.0)], init_uri=init_uri, version=version))
    assert parsed.version == version


@pytest.mark.parametrize(("init_uri", "version"), [(None, 2), ("init.mp4", 5), ("init.mp4", 3)])
def test_media_playlist_version_below_minimum_raises(init_uri: str | None, version: int) -> None:
    with pytest.raises(ValueError, match="minimum"):
        render_media_playlist([seg(0, 4.0)], init_uri=init_uri, version=version)


@pytest.mark.parametrize(
    ("durations", "target"),
    [
        ([0.5], 1),  # a single half-second segment: rounds (half up) to 1
        ([0.3], 1),  # rounds to 0, but TARGETDURATION is at least 1
        ([0.0], 1),
        ([4.4999], 4),
        ([4.5], 5),
        ([5.4999], 5),
        ([5.5], 6),
        ([4.4999996], 5),  # written "4.500000": the written value decides
        ([4.4999994], 4),  # written "4.499999"
        ([6.0, 6.0, 6.0, 2.1], 6),
        ([2.0, 6.006, 6.0], 6),
        ([10.0, 9.6], 10),
    ],
)
def test_target_duration_table(durations: list[float], target: int) -> None:
    parsed = m3u8.loads(render_media_playlist([seg(i, d) for i, d in enumerate(durations)]))
    assert parsed.target_duration == target


EDGE_DURATIONS = [0.0, 0.5, 0.4999, 1.5, 4.4999, 4.5, 5.4999, 5.5, 4.4999996, 4.4999994, 6.0, 6.006]


@given(
    st.lists(
        st.one_of(
            st.sampled_from(EDGE_DURATIONS),
            st.floats(min_value=0.0, max_value=30.0, allow_nan=False, allow_infinity=False),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_target_duration_covers_every_rounded_extinf(durations: list[float]) -> None:
    parsed = m3u8.loads(render_media_playlist([seg(i, d) for i, d in enumerate(durations)]))
    rounded = [round_half_up(s.duration) for s in parsed.segments]
    # RFC 8216 4.3.3.1, checked on what a parser reads back; and no larger
    # than needed (a larger target delays players' reloads and startup).
    assert all(r <= parsed.target_duration for r in rounded)
    assert parsed.target_duration == max(1, *rounded)
    assert target_duration_s(durations) == parsed.target_duration
    assert all(abs(s.duration - d) <= 5e-7 for s, d in zip(parsed.segments, durations, strict=True))


@pytest.mark.parametrize("duration", [-1.0, float("nan"), float("inf")])
def test_media_playlist_rejects_bad_durations(duration: float) -> None:
    with pytest.raises(ValueError, match="duration_s"):
        render_media_playlist([seg(0, duration)])


def test_media_playlist_rejects_no_segments() -> None:
    with pytest.raises(ValueError, match="at least one segment"):
        render_media_playlist([])


# --------------------------------------------------------------------------- #
# I-frame playlists
# --------------------------------------------------------------------------- #


def iframe_segments() -> list[SegmentInfo]:
    return [
        seg(0, 4.0, 400_000, (iframe(188, 20_116, 2.0), iframe(150_400, 18_988, 2.0))),
        seg(1, 4.0, 380_000, (iframe(188, 22_184, 2.0), iframe(160_000, 17_860, 2.0))),
        seg(2, 1.2, 90_000, (iframe(188, 9_024, 1.2),)),
    ]


def test_iframe_playlist_exact_text() -> None:
    text = render_iframe_playlist([seg(0, 4.0, 1000, (iframe(188, 376, 2.0), iframe(752, 564, 2.0)))])
    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:4\n"
        "#EXT-X-TARGETDURATION:2\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXT-X-PLAYLIST-TYPE:VOD\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        "#EXT-X-I-FRAMES-ONLY\n"
        "#EXTINF:2.000000,\n#EXT-X-BYTERANGE:376@188\nseg_00000.ts\n"
        "#EXTINF:2.000000,\n#EXT-X-BYTERANGE:564@752\nseg_00000.ts\n"
        "#EXT-X-ENDLIST\n"
    )


def test_iframe_playlist_as_m3u8_sees_it() -> None:
    segments = iframe_segments()
    parsed = m3u8.loads(render_iframe_playlist(segments))
    assert parsed.is_i_frames_only and parsed.is_endlist
    assert parsed.version == 4
    assert parsed.playlist_type == "vod"
    assert parsed.target_duration == 2  # from the I-frames (2.0 s), not the 4 s segments
    expected = [(s.uri, i) for s in segments for i in s.iframes]
    assert len(parsed.segments) == len(expected) == 5
    for entry, (uri, info) in zip(parsed.segments, expected, strict=True):
        assert entry.uri == uri
        assert entry.duration == info.duration_s
        assert entry.byterange == f"{info.length_bytes}@{info.offset_bytes}"


def test_iframe_playlist_fmp4_has_map_and_version_5() -> None:
    parsed = m3u8.loads(render_iframe_playlist(iframe_segments(), init_uri="init.mp4"))
    assert parsed.version == 5
    assert parsed.is_i_frames_only
    assert all(s.init_section is not None and s.init_section.uri == "init.mp4" for s in parsed.segments)


def test_iframe_target_duration_rounds_written_values() -> None:
    parsed = m3u8.loads(render_iframe_playlist([seg(0, 3.0, 1000, (iframe(0, 188, 2.5), iframe(188, 188, 0.5)))]))
    assert parsed.target_duration == 3


@pytest.mark.parametrize(
    "bad",
    [iframe(-188, 188, 1.0), iframe(0, 0, 1.0), iframe(0, 188, -1.0), iframe(0, 188, float("nan"))],
)
def test_iframe_playlist_rejects_bad_entries(bad: IFrameInfo) -> None:
    with pytest.raises(ValueError):
        render_iframe_playlist([seg(0, 2.0, 1000, (bad,))])


def test_iframe_playlist_rejects_no_iframes() -> None:
    with pytest.raises(ValueError, match="at least one I-frame"):
        render_iframe_playlist([seg(0, 2.0)])


# --------------------------------------------------------------------------- #
# Bit rates
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ([seg(0, 2.0, 1000)], (4000, 4000)),
        ([seg(0, 2.0, 1000), seg(1, 2.0, 3000)], (12000, 8000)),
        ([seg(0, 3.0, 1000)], (2667, 2667)),  # 2666.67 -> ceil
        ([seg(0, 2.0, 1000), seg(1, 0.0, 5000)], (4000, 4000)),  # zero duration ignored
        ([seg(0, 0.0, 5000)], (0, 0)),
        ([], (0, 0)),
    ],
)
def test_peak_and_average_table(segments: list[SegmentInfo], expected: tuple[int, int]) -> None:
    assert peak_and_average_bps(segments) == expected


def test_rfc_window_peak_ignores_a_tiny_tail_segment_alone() -> None:
    # A 0.2 s tail holding little but an IDR frame: 2 Mb/s on its own.
    segments = [seg(0, 6.0, 750_000), seg(1, 6.0, 750_000), seg(2, 0.2, 50_000)]
    assert peak_and_average_bps(segments) == (2_000_000, 1_016_394)
    # RFC 8216 4.3.4.2 with target 6: runs of 3..9 s only; the tail counts
    # only together with its neighbour: (750000 + 50000) * 8 / 6.2.
    assert peak_and_average_bps(segments, target_duration_s=6) == (1_032_259, 1_016_394)


def test_rfc_window_peak_equals_per_segment_peak_for_even_segments() -> None:
    segments = [seg(i, 4.0, size) for i, size in enumerate([500_000, 900_000, 400_000])]
    assert peak_and_average_bps(segments, target_duration_s=4) == peak_and_average_bps(segments)


@given(
    st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=12.0), st.integers(min_value=0, max_value=10_000_000)),
        min_size=1,
        max_size=20,
    ),
    st.integers(min_value=1, max_value=12),
)
@example([(7.56e-90, 1)] * 3, 1)  # a rounded total duration once put the average above the peak
def test_bitrate_properties(pairs: list[tuple[float, int]], target: int) -> None:
    segments = [seg(i, d, n) for i, (d, n) in enumerate(pairs)]
    peak, average = peak_and_average_bps(segments)
    window_peak, window_average = peak_and_average_bps(segments, target_duration_s=target)
    assert average <= peak
    assert window_average == average
    # A run's rate never exceeds its fastest segment's.
    assert window_peak <= peak


def test_peak_rejects_negative_size() -> None:
    with pytest.raises(ValueError, match="size_bytes"):
        peak_and_average_bps([seg(0, 1.0, -1)])


def test_iframe_bitrates() -> None:
    segments = iframe_segments()
    # Max of length * 8 / duration: 22184 * 8 / 2.0 = 88736; 9024 * 8 / 1.2 = 60160.
    assert iframe_peak_bps(segments) == 88_736
    total_bytes = 20_116 + 18_988 + 22_184 + 17_860 + 9_024
    assert iframe_average_bps(segments) == -(-total_bytes * 8 * 10 // 92)  # ceil(bits / 9.2 s)
    assert iframe_peak_bps([seg(0, 1.0)]) == iframe_average_bps([seg(0, 1.0)]) == 0


# --------------------------------------------------------------------------- #
# Master playlist
# --------------------------------------------------------------------------- #


def test_master_exact_text() -> None:
    text = render_master_playlist([variant("1080p", 6_000_000, average=4_500_000)], [AUDIO])
    assert text == (
        "#EXTM3U\n"
        "#EXT-X-VERSION:6\n"
        "#EXT-X-INDEPENDENT-SEGMENTS\n"
        '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aac",NAME="audio",LANGUAGE="en",DEFAULT=YES,AUTOSELECT=YES,'
        'CHANNELS="2",URI="audio/index.m3u8"\n'
        '#EXT-X-STREAM-INF:BANDWIDTH=6000000,AVERAGE-BANDWIDTH=4500000,CODECS="avc1.640028,mp4a.40.2",'
        'RESOLUTION=1920x1080,FRAME-RATE=29.970,AUDIO="aac"\n'
        "1080p/index.m3u8\n"
        '#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=600000,CODECS="avc1.640028",RESOLUTION=1920x1080,'
        'URI="1080p/iframes.m3u8"\n'
    )


def test_master_as_m3u8_sees_it_and_orders_by_bandwidth() -> None:
    variants = [
        variant("720p", 3_000_000),
        variant("360p", 800_000),
        variant("1080p", 6_000_000),
        variant("480p", 1_400_000, iframes=False),
    ]
    random.Random(7).shuffle(variants)
    parsed = m3u8.loads(render_master_playlist(variants, [AUDIO]))
    assert parsed.is_variant and parsed.version == 6 and parsed.is_independent_segments
    bandwidths = [p.stream_info.bandwidth for p in parsed.playlists]
    assert bandwidths == [800_000, 1_400_000, 3_000_000, 6_000_000]
    assert [p.uri for p in parsed.playlists] == [f"{n}/index.m3u8" for n in ("360p", "480p", "720p", "1080p")]
    for p in parsed.playlists:
        info = p.stream_info
        assert info.average_bandwidth == info.bandwidth * 3 // 4
        assert info.codecs == "avc1.640028,mp4a.40.2"
        assert info.resolution == (1920, 1080)
        assert info.frame_rate == 29.97
        assert info.audio == "aac"
    # I-frame playlists: only variants that have one, in the same order.
    assert [(p.uri, p.iframe_stream_info.bandwidth) for p in parsed.iframe_playlists] == [
        ("360p/iframes.m3u8", 80_000),
        ("720p/iframes.m3u8", 300_000),
        ("1080p/iframes.m3u8", 600_000),
    ]
    assert all(p.iframe_stream_info.codecs == "avc1.640028" for p in parsed.iframe_playlists)
    assert all(p.iframe_stream_info.resolution == (1920, 1080) for p in parsed.iframe_playlists)
    (media,) = parsed.media
    assert (media.type, media.group_id, media.name, media.uri) == ("AUDIO", "aac", "audio", "audio/index.m3u8")
    assert (media.default, media.autoselect, media.channels, media.language) == ("YES", "YES", "2", "en")


def test_master_without_audio_and_with_muxed_audio() -> None:
    # Muxed audio: CODECS given in full; the I-frame line keeps only video.
    v = variant("360p", 800_000, audio_group=None, codecs="avc1.4d401e,mp4a.40.2")
    parsed = m3u8.loads(render_master_playlist([v], []))
    assert parsed.playlists[0].stream_info.codecs == "avc1.4d401e,mp4a.40.2"
    assert parsed.playlists[0].stream_info.audio is None
    assert parsed.iframe_playlists[0].iframe_stream_info.codecs == "avc1.4d401e"
    assert parsed.media == []


def test_master_codecs_not_repeated_when_caller_lists_audio() -> None:
    v = variant("360p", 800_000, codecs="avc1.4d401e,mp4a.40.2")
    parsed = m3u8.loads(render_master_playlist([v], [AUDIO]))
    assert parsed.playlists[0].stream_info.codecs == "avc1.4d401e,mp4a.40.2"


def test_master_iframe_average_bandwidth_when_given() -> None:
    v = variant("360p", 800_000)
    v = replace(v, iframe_average_bandwidth_bps=50_000)
    parsed = m3u8.loads(render_master_playlist([v], [AUDIO]))
    assert parsed.iframe_playlists[0].iframe_stream_info.average_bandwidth == 50_000


def test_master_multiple_audio_renditions() -> None:
    audio = [
        AUDIO,
        AudioEntry(group_id="aac", name="Deutsch", uri="audio_de/index.m3u8", default=False, channels=2, language="de"),
        AudioEntry(group_id="aac-lo", name="low", uri="audio_lo/index.m3u8", default=True, channels=1, language=None),
    ]
    text = render_master_playlist([variant("360p", 800_000), variant("234p", 190_000, audio_group="aac-lo")], audio)
    parsed = m3u8.loads(text)
    assert [(m.group_id, m.name, m.default, m.channels, m.language) for m in parsed.media] == [
        ("aac", "audio", "YES", "2", "en"),
        ("aac", "Deutsch", "NO", "2", "de"),
        ("aac-lo", "low", "YES", "1", None),
    ]
    assert [p.stream_info.audio for p in parsed.playlists] == ["aac-lo", "aac"]


@pytest.mark.parametrize(
    ("fps", "written"),
    [
        (Fraction(30000, 1001), "29.970"),
        (Fraction(24000, 1001), "23.976"),
        (Fraction(60000, 1001), "59.940"),
        (Fraction(25), "25.000"),
        (Fraction(1, 2000), "0.001"),  # exactly half a thousandth: rounds up
        (Fraction(29999, 1000) + Fraction(1, 2000), "30.000"),
    ],
)
def test_master_frame_rate_three_decimals(fps: Fraction, written: str) -> None:
    v = variant("360p", 800_000)
    v = replace(v, fps=fps)
    assert f",FRAME-RATE={written}," in render_master_playlist([v], [AUDIO])


def test_master_attribute_quoting() -> None:
    # RFC 8216 4.2: strings quoted; decimal integers, resolutions and
    # enumerated strings (YES/NO, AUDIO type) are not.
    text = render_master_playlist([variant("360p", 800_000)], [AUDIO])
    stream_inf = next(line for line in text.splitlines() if line.startswith("#EXT-X-STREAM-INF:"))
    assert "BANDWIDTH=800000," in stream_inf and 'BANDWIDTH="' not in stream_inf
    assert "RESOLUTION=1920x1080," in stream_inf
    assert 'AUDIO="aac"' in stream_inf
    media = next(line for line in text.splitlines() if line.startswith("#EXT-X-MEDIA:"))
    assert "TYPE=AUDIO," in media and "DEFAULT=YES," in media and 'CHANNELS="2"' in media


@pytest.mark.parametrize(
    ("variants", "audio", "message"),
    [
        ([], [AUDIO], "at least one variant"),
        ([variant("360p", 800_000, audio_group="nope")], [AUDIO], "audio group"),
        ([variant("360p", 800_000, average=900_000)], [AUDIO], "exceeds peak"),
        ([variant("360p", 0, average=0)], [AUDIO], "positive"),
        (
            [variant("360p", 800_000)],
            [AUDIO, AudioEntry(group_id="aac", name="b", uri="b.m3u8", default=True, channels=2, language=None)],
            "more than one DEFAULT",
        ),
        (
            [variant("360p", 800_000)],
            [AUDIO, AudioEntry(group_id="aac", name="audio", uri="b.m3u8", default=False, channels=2, language=None)],
            "two renditions named",
        ),
        (
            [variant("360p", 800_000)],
            [AudioEntry(group_id="aac", name='a"b', uri="a.m3u8", default=True, channels=2, language=None)],
            "NAME",
        ),
        ([variant("360p", 800_000, codecs="mp4a.40.2")], [AUDIO], "no video codec"),
    ],
)
def test_master_rejects_inconsistent_input(variants: list[VariantEntry], audio: list[AudioEntry], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_master_playlist(variants, audio)


def test_master_iframe_uri_and_bandwidth_go_together() -> None:
    v = variant("360p", 800_000, iframes=False)
    v = replace(v, iframe_uri="360p/iframes.m3u8")
    with pytest.raises(ValueError, match="go together"):
        render_master_playlist([v], [AUDIO])


# --------------------------------------------------------------------------- #
# Relative URIs everywhere
# --------------------------------------------------------------------------- #

BAD_URIS = [
    "/abs/seg.ts",
    "//cdn.example.com/seg.ts",
    "http://cdn.example.com/seg.ts",
    "https://cdn.example.com/720p/index.m3u8",
    "s3://bucket/key.ts",
    "file:///etc/passwd",
    "seg\n#EXT-X-ENDLIST",
    "#seg.ts",
    "",
    " seg.ts",
    "seg 1.ts",
    'se"g.ts',
    "seg\x00.ts",
]


@pytest.mark.parametrize("uri", BAD_URIS)
def test_media_playlist_rejects_non_relative_segment_uri(uri: str) -> None:
    segment = SegmentInfo(rendition="r", sequence=0, uri=uri, start_s=0.0, duration_s=4.0, size_bytes=1)
    with pytest.raises(ValueError, match="URI"):
        render_media_playlist([segment])


@pytest.mark.parametrize("uri", BAD_URIS)
def test_init_uri_must_be_relative(uri: str) -> None:
    with pytest.raises(ValueError, match="URI"):
        render_media_playlist([seg(0, 4.0)], init_uri=uri)
    with pytest.raises(ValueError, match="URI"):
        render_iframe_playlist(iframe_segments(), init_uri=uri)


@pytest.mark.parametrize("uri", BAD_URIS)
def test_iframe_playlist_rejects_non_relative_segment_uri(uri: str) -> None:
    segment = SegmentInfo(
        rendition="r", sequence=0, uri=uri, start_s=0.0, duration_s=4.0, size_bytes=1, iframes=(iframe(0, 188, 4.0),)
    )
    with pytest.raises(ValueError, match="URI"):
        render_iframe_playlist([segment])


@pytest.mark.parametrize("uri", BAD_URIS)
@pytest.mark.parametrize("field", ["uri", "iframe_uri", "audio"])
def test_master_rejects_non_relative_uris(uri: str, field: str) -> None:
    v = variant("360p", 800_000)
    audio = AUDIO
    if field == "audio":
        audio = AudioEntry(group_id="aac", name="audio", uri=uri, default=True, channels=2, language=None)
    else:
        v = replace(v, uri=uri) if field == "uri" else replace(v, iframe_uri=uri)
    with pytest.raises(ValueError, match="URI"):
        render_master_playlist([v], [audio])


def test_relative_uris_with_subdirectories_and_queries_are_fine() -> None:
    text = render_media_playlist([seg(0, 4.0)], init_uri="../720p/init.mp4?v=2")
    assert '#EXT-X-MAP:URI="../720p/init.mp4?v=2"' in text


# --------------------------------------------------------------------------- #
# Session data (RFC 8216 section 4.3.4.4): Apple's chapters reference
# --------------------------------------------------------------------------- #

CHAPTERS = SessionData(data_id="com.apple.hls.chapters", uri="chapters.json")


@pytest.mark.parametrize(
    ("entries", "lines"),
    [
        ([CHAPTERS], ['#EXT-X-SESSION-DATA:DATA-ID="com.apple.hls.chapters",URI="chapters.json"']),
        (
            [SessionData(data_id="com.example.title", value="Lecture 1", language="en")],
            ['#EXT-X-SESSION-DATA:DATA-ID="com.example.title",VALUE="Lecture 1",LANGUAGE="en"'],
        ),
        (
            # the same DATA-ID in two languages is allowed; order is kept
            [
                SessionData(data_id="com.example.title", value="Cours 1", language="fr"),
                SessionData(data_id="com.example.title", value="Lecture 1", language="en"),
                CHAPTERS,
            ],
            [
                '#EXT-X-SESSION-DATA:DATA-ID="com.example.title",VALUE="Cours 1",LANGUAGE="fr"',
                '#EXT-X-SESSION-DATA:DATA-ID="com.example.title",VALUE="Lecture 1",LANGUAGE="en"',
                '#EXT-X-SESSION-DATA:DATA-ID="com.apple.hls.chapters",URI="chapters.json"',
            ],
        ),
        ([], []),
    ],
)
def test_master_session_data_lines(entries: list[SessionData], lines: list[str]) -> None:
    text = render_master_playlist([variant("1080p", 6_000_000)], [AUDIO], session_data=entries)
    written = text.splitlines()
    # Master-level tags come after the header and before the renditions.
    assert written[:3] == ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-INDEPENDENT-SEGMENTS"]
    assert written[3 : 3 + len(lines)] == lines
    assert written[3 + len(lines)].startswith("#EXT-X-MEDIA:")
    assert text == render_master_playlist([variant("1080p", 6_000_000)], [AUDIO]).replace(
        "#EXT-X-INDEPENDENT-SEGMENTS\n", "#EXT-X-INDEPENDENT-SEGMENTS\n" + "".join(f"{line}\n" for line in lines)
    )


def test_master_session_data_as_m3u8_sees_it() -> None:
    entries = [CHAPTERS, SessionData(data_id="com.example.title", value="Lecture 1", language="en")]
    parsed = m3u8.loads(render_master_playlist([variant("1080p", 6_000_000)], [AUDIO], session_data=entries))
    assert [(d.data_id, d.uri, d.value, d.language) for d in parsed.session_data] == [
        ("com.apple.hls.chapters", "chapters.json", None, None),
        ("com.example.title", None, "Lecture 1", "en"),
    ]
    assert len(parsed.playlists) == 1 and len(parsed.media) == 1


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        # "MUST contain either a VALUE or URI attribute, but not both"
        ([SessionData(data_id="com.x")], "exactly one of uri and value"),
        ([SessionData(data_id="com.x", uri="x.json", value="v")], "exactly one of uri and value"),
        # "MUST NOT contain more than one ... with the same DATA-ID and the same LANGUAGE"
        ([CHAPTERS, CHAPTERS], "appears twice"),
        (
            [
                SessionData(data_id="com.x", value="a", language="en"),
                SessionData(data_id="com.x", value="b", language="en"),
            ],
            "appears twice",
        ),
        ([SessionData(data_id='com."x', uri="x.json")], "DATA-ID"),
        ([SessionData(data_id="", uri="x.json")], "DATA-ID"),
        ([SessionData(data_id="com.x", value="two\nlines")], "VALUE"),
        ([SessionData(data_id="com.x", uri="x.json", language='e"n')], "LANGUAGE"),
    ],
)
def test_master_session_data_rejects(entries: list[SessionData], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_master_playlist([variant("1080p", 6_000_000)], [AUDIO], session_data=entries)


@pytest.mark.parametrize("uri", BAD_URIS)
def test_master_session_data_uri_must_be_relative(uri: str) -> None:
    with pytest.raises(ValueError, match="URI"):
        render_master_playlist(
            [variant("1080p", 6_000_000)], [AUDIO], session_data=[SessionData(data_id="com.x", uri=uri)]
        )


# --------------------------------------------------------------------------- #
# Image streams (the HLS Image Media Playlist extension: storyboard sheets)
# --------------------------------------------------------------------------- #

IMAGES = ImageStreamEntry(uri="storyboard/images.m3u8", bandwidth_bps=12_000, width=160, height=90)


def test_master_image_stream_line_comes_last() -> None:
    text = render_master_playlist([variant("1080p", 6_000_000)], [AUDIO], image_streams=[IMAGES])
    assert text.splitlines()[-1] == (
        '#EXT-X-IMAGE-STREAM-INF:BANDWIDTH=12000,RESOLUTION=160x90,CODECS="jpeg",URI="storyboard/images.m3u8"'
    )
    assert text == render_master_playlist([variant("1080p", 6_000_000)], [AUDIO]) + text.splitlines()[-1] + "\n"


def test_master_image_stream_as_m3u8_sees_it() -> None:
    parsed = m3u8.loads(render_master_playlist([variant("1080p", 6_000_000)], [AUDIO], image_streams=[IMAGES]))
    (image,) = parsed.image_playlists
    assert image.uri == "storyboard/images.m3u8"
    info = image.image_stream_info
    assert (info.bandwidth, info.resolution, info.codecs) == (12_000, (160, 90), "jpeg")
    assert len(parsed.playlists) == 1 and len(parsed.iframe_playlists) == 1  # the variants are untouched


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (replace(IMAGES, bandwidth_bps=0), "positive"),
        (replace(IMAGES, width=0), "positive"),
        (replace(IMAGES, uri="https://cdn.example/images.m3u8"), "URI"),
        (replace(IMAGES, codecs='jp"eg'), "CODECS"),
    ],
)
def test_master_image_stream_rejects(entry: ImageStreamEntry, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_master_playlist([variant("1080p", 6_000_000)], [AUDIO], image_streams=[entry])
