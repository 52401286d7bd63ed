"""From what the stages measured to what is published: rung decisions, playlists, the master.

Runs in the coordinator's thread after every stage ended successfully. The
rates, durations and codecs come from the encoded segments themselves
(:meth:`~transcoder.segmenter.HlsSegmenter.measured_segments`); rendering is
:mod:`transcoder.hls`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from . import hls
from .chapters import APPLE_CHAPTERS_DATA_ID, ChapterOutput
from .encode import RungEncoder
from .models import AudioPlan, ChaptersResult, LoudnessResult, RenditionResult, ThumbnailsResult
from .output import OutputSink
from .pruning import RungDecision, RungRates, prune_ladder
from .segmenter import HlsSegmenter
from .storyboard import StoryboardOutput


def decide_rungs(
    encoders: list[RungEncoder], audio_renditions: list[tuple[AudioPlan, HlsSegmenter]], *, min_saving: float
) -> tuple[RungDecision, ...]:
    """Which rungs to publish, from their measured rates as the master would state them."""
    audio: dict[str, tuple[int, int]] = {}
    for plan, segmenter in audio_renditions:
        segments = segmenter.measured_segments()
        audio[plan.name] = hls.peak_and_average_bps(segments, target_duration_s=_target(segments))
    rates = []
    for encoder in encoders:
        segments = encoder.segmenter.measured_segments()
        peak, average = hls.peak_and_average_bps(segments, target_duration_s=_target(segments))
        group = encoder.rung.audio.name if encoder.rung.audio else None
        extra_peak, extra_average = audio.get(group, (0, 0)) if group else (0, 0)
        rates.append(
            RungRates(
                name=encoder.rung.name,
                width=encoder.rung.width,
                height=encoder.rung.height,
                bandwidth_bps=peak + extra_peak,
                average_bandwidth_bps=average + extra_average,
            )
        )
    return prune_ladder(rates, min_saving=min_saving)


def discard_dropped(dropped: list[RungEncoder], sink: OutputSink) -> None:
    """Remove the segments a dropped rung already stored: nothing unpublished stays behind."""
    files = [
        path
        for encoder in dropped
        for path in _segment_files(encoder.rung.name, encoder.segmenter.measured_segments(), encoder.segmenter.init_uri)
    ]
    if files:
        sink.discard(files)


def write_playlists(
    encoders: list[RungEncoder],
    audio_renditions: list[tuple[AudioPlan, HlsSegmenter]],
    sink: OutputSink,
    *,
    loudness: LoudnessResult | None = None,
) -> tuple[tuple[RenditionResult, ...], list[str]]:
    """Put each kept rung's media and I-frame playlists and each audio playlist into ``sink``.

    Returns the renditions (video first, in ladder order) and every file they
    name or are, relative to the output root.
    """
    files: list[str] = []
    results: list[RenditionResult] = []
    for encoder in encoders:
        segmenter = encoder.segmenter
        segments = segmenter.measured_segments()
        name = encoder.rung.name
        playlist = f"{name}/index.m3u8"
        iframes = f"{name}/iframes.m3u8"
        sink.put(playlist, hls.render_media_playlist(segments, init_uri=segmenter.init_uri).encode())
        sink.put(iframes, hls.render_iframe_playlist(segments, init_uri=segmenter.init_uri).encode())
        files.extend([*_segment_files(name, segments, segmenter.init_uri), playlist, iframes])
        results.append(_rendition(name, "video", playlist, iframes, segmenter, segments, encoder))
    for plan, segmenter in audio_renditions:
        segments = segmenter.measured_segments()
        playlist = f"{plan.name}/index.m3u8"
        sink.put(playlist, hls.render_media_playlist(segments, init_uri=segmenter.init_uri).encode())
        files.extend([*_segment_files(plan.name, segments, segmenter.init_uri), playlist])
        results.append(_audio_rendition(plan, playlist, segmenter, segments, loudness))
    return tuple(results), files


def _segment_files(name: str, segments: list[Any], init_uri: str | None) -> list[str]:
    files = [f"{name}/{s.uri}" for s in segments]
    if init_uri:
        files.insert(0, f"{name}/{init_uri}")
    return files


def _target(segments: list[Any]) -> int:
    return max(1, max((int(Fraction(s.duration_s) + Fraction(1, 2)) for s in segments), default=1))


def _rendition(
    name: str,
    kind: str,
    playlist: str,
    iframes: str,
    segmenter: HlsSegmenter,
    segments: list[Any],
    encoder: RungEncoder,
) -> RenditionResult:
    peak, average = hls.peak_and_average_bps(segments, target_duration_s=_target(segments))
    rung = encoder.rung
    return RenditionResult(
        name=name,
        kind=kind,
        playlist_uri=playlist,
        iframe_playlist_uri=iframes,
        init_uri=f"{name}/{segmenter.init_uri}" if segmenter.init_uri else None,
        codecs=encoder.codecs or "avc1.640028",
        width=rung.width,
        height=rung.height,
        fps=rung.fps,
        bitrate_kbps=rung.bitrate_kbps,
        reused_frames=encoder.reused_frames,
        segments=tuple(segments),
        peak_bps=peak,
        average_bps=average,
        size_bytes=sum(s.size_bytes for s in segments),
        duration_s=sum(s.duration_s for s in segments),
        audio_group=rung.audio.name if rung.audio else None,
    )


def _audio_rendition(
    plan: AudioPlan, playlist: str, segmenter: HlsSegmenter, segments: list[Any], loudness: LoudnessResult | None
) -> RenditionResult:
    peak, average = hls.peak_and_average_bps(segments, target_duration_s=_target(segments))
    return RenditionResult(
        name=plan.name,
        kind="audio",
        playlist_uri=playlist,
        iframe_playlist_uri=None,
        init_uri=f"{plan.name}/{segmenter.init_uri}" if segmenter.init_uri else None,
        codecs=plan.codecs_tag,
        width=None,
        height=None,
        fps=None,
        bitrate_kbps=plan.bitrate_kbps,
        segments=tuple(segments),
        peak_bps=peak,
        average_bps=average,
        size_bytes=sum(s.size_bytes for s in segments),
        duration_s=sum(s.duration_s for s in segments),
        loudness=loudness,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewerFiles:
    """What :func:`put_viewer_files` stored, and what the master must say about it."""

    thumbnails: ThumbnailsResult | None
    chapters: ChaptersResult | None
    files: tuple[str, ...]  # relative to the output root, in the order they were put
    session_data: tuple[hls.SessionData, ...]
    image_streams: tuple[hls.ImageStreamEntry, ...]


def put_viewer_files(
    storyboard: StoryboardOutput | None, chapters: ChapterOutput | None, sink: OutputSink
) -> ViewerFiles:
    """Put the storyboard (sheets, then ``thumbnails.vtt`` and the image playlist) and the chapters.

    Sheets go first so that no track or playlist is stored before what it
    names. Nothing here is referenced by any playlist but the master (the
    chapter JSON and the image playlist), which is written after these: a
    failed run, which never writes the master, leaves nothing a player would
    read, and the sink's abort removes them. Either input may be None (turned
    off, or nothing decoded): it is then absent from every return value.
    """
    files: list[str] = []
    thumbnails = None
    image_streams: tuple[hls.ImageStreamEntry, ...] = ()
    if storyboard is not None:
        for item in storyboard.files:  # sheets first
            sink.put(item.relpath, item.data)
            files.append(item.relpath)
        plan = storyboard.plan
        thumbnails = ThumbnailsResult(
            vtt_uri=storyboard.vtt.relpath,
            sheet_uris=tuple(sheet.relpath for sheet in storyboard.sheets),
            image_playlist_uri=storyboard.image_playlist.relpath,
            count=storyboard.thumbnails,
            interval_s=plan.interval_s,
            tile_width=plan.tile_width,
            tile_height=plan.tile_height,
            columns=plan.columns,
            rows=plan.rows,
        )
        image_streams = (
            hls.ImageStreamEntry(
                uri=storyboard.image_playlist.relpath,
                bandwidth_bps=storyboard.image_bandwidth_bps,
                width=plan.tile_width,
                height=plan.tile_height,
            ),
        )
    chapter_result = None
    session_data: tuple[hls.SessionData, ...] = ()
    if chapters is not None:
        for item in chapters.files:
            sink.put(item.relpath, item.data)
            files.append(item.relpath)
        chapter_result = ChaptersResult(
            vtt_uri=chapters.vtt.relpath,
            json_uri=chapters.json.relpath,
            count=len(chapters.chapters),
            starts_s=tuple(chapter.start_s for chapter in chapters.chapters),
        )
        session_data = (hls.SessionData(data_id=APPLE_CHAPTERS_DATA_ID, uri=chapters.json.relpath),)
    return ViewerFiles(
        thumbnails=thumbnails,
        chapters=chapter_result,
        files=tuple(files),
        session_data=session_data,
        image_streams=image_streams,
    )


def master_playlist(
    renditions: tuple[RenditionResult, ...],
    *,
    session_data: Sequence[hls.SessionData] = (),
    image_streams: Sequence[hls.ImageStreamEntry] = (),
) -> str:
    """The master playlist: each video rendition a variant with its audio group's rates added.

    ``session_data`` and ``image_streams`` are passed through to
    :func:`transcoder.hls.render_master_playlist` (the chapters and the
    storyboard's image playlist, :func:`put_viewer_files`).
    """
    audio = {r.name: r for r in renditions if r.kind == "audio"}
    audio_entries = [
        hls.AudioEntry(
            group_id=r.name, name=r.name, uri=r.playlist_uri, default=True, channels=2, language=None, codecs=r.codecs
        )
        for r in audio.values()
    ]
    variants = []
    for r in renditions:
        if r.kind != "video":
            continue
        group = r.audio_group if r.audio_group in audio else None
        extra_peak = audio[group].peak_bps if group else 0
        extra_avg = audio[group].average_bps if group else 0
        assert r.width is not None and r.height is not None and r.fps is not None
        variants.append(
            hls.VariantEntry(
                uri=r.playlist_uri,
                iframe_uri=r.iframe_playlist_uri,
                bandwidth_bps=r.peak_bps + extra_peak,
                average_bandwidth_bps=r.average_bps + extra_avg,
                codecs=r.codecs,
                width=r.width,
                height=r.height,
                fps=r.fps,
                audio_group=group,
                iframe_bandwidth_bps=hls.iframe_peak_bps(r.segments) if r.iframe_playlist_uri else None,
                iframe_average_bandwidth_bps=hls.iframe_average_bps(r.segments) if r.iframe_playlist_uri else None,
            )
        )
    return hls.render_master_playlist(variants, audio_entries, session_data=session_data, image_streams=image_streams)
