"""The ffmpeg CLI side of the comparison: the engine's ladder as ffmpeg command lines.

Everything that defines "the same ladder" comes from the engine itself, so the
comparison follows the engine when its settings change:

* rungs (size, fps, bitrate, maxrate, bufsize, level) from
  ``transcoder.plan_ladder(transcoder.probe(src), LadderPolicy())``;
* libx264 options from ``transcoder.encode.x264_options`` (each option ``K=V``
  becomes ``-K:v:<i> V``), plus ``-b:v`` = the rung's bitrate, which the engine
  also sets (``bit_rate`` on the codec context; with ``crf`` set it only
  matters to x264 as a hint);
* segment length from ``transcoder.segmenter.exact_segment_s`` (whole GOPs);
* filters before scaling (deinterlace, rotation) from
  ``transcoder.decode.video_filters``; the CLI's own autorotation is then off;
* scaling ``scale=W:H:flags=bicubic,format=yuv420p`` (the engine's scaler:
  swscale bicubic to yuv420p), skipped for a rung of the source's own size,
  an ``fps=`` filter only where the rung's rate differs from the source's;
* audio AAC-LC stereo 48 kHz at the plan's bitrate, encoded once, as its own
  rendition.

The CLI's thread counts are left at its defaults: that is what a user runs.
Its x264 thread settings are read back from the output (x264's SEI string).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from transcoder import LadderPolicy, TranscodeConfig, plan_ladder, probe
from transcoder.decode import video_filters
from transcoder.encode import x264_options
from transcoder.models import AudioPlan, Ladder, SourceInfo
from transcoder.segmenter import exact_segment_s

__all__ = [
    "LadderSettings",
    "RungPlan",
    "ffmpeg_version",
    "find_ffmpeg",
    "ladder_settings",
    "one_process_command",
    "per_rung_commands",
]

# Options of x264_options() that are not encoding settings but resource
# settings: the CLI keeps its defaults for those.
_THREAD_OPTIONS = frozenset({"threads", "thread_type"})
_COMMON = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning", "-y")


@dataclass(frozen=True, slots=True, kw_only=True)
class RungPlan:
    """One rung as both sides encode it."""

    name: str
    width: int
    height: int
    fps: Fraction
    bitrate_kbps: int
    maxrate_kbps: int
    bufsize_kbps: int
    level: str
    gop_frames: int
    segment_s: float  # exact: a whole number of GOPs at this rung's fps
    x264: dict[str, str]  # libx264 options, exactly as the engine passes them


@dataclass(frozen=True, slots=True, kw_only=True)
class LadderSettings:
    """The ladder of one source, with everything both sides need."""

    source: Path
    info: SourceInfo
    ladder: Ladder
    preset: str
    crf: int
    rungs: tuple[RungPlan, ...]
    audio: AudioPlan | None  # the main audio rendition (None: the source has no audio)
    pre_filters: tuple[str, ...] = field(default=())  # before scaling: deinterlace, rotate

    @property
    def display_size(self) -> tuple[int, int]:
        return self.info.video.display_width, self.info.video.display_height

    @property
    def segment_s(self) -> float:
        """The one segment length of a one-process run: the top rung's."""
        return self.rungs[0].segment_s

    @property
    def duration_s(self) -> float:
        return self.info.duration_s


def ladder_settings(
    source: Path,
    *,
    preset: str,
    crf: int,
    policy: LadderPolicy | None = None,
    config: TranscodeConfig | None = None,
) -> LadderSettings:
    """Probe ``source`` and plan its ladder exactly as the engine does."""
    config = config or TranscodeConfig()
    info = probe(source)
    ladder = plan_ladder(info, policy or config.ladder, gop_s=config.gop_s, segment_s=config.segment_s)
    rungs = []
    for rung in ladder.rungs:
        gop = ladder.gop_frames(rung)
        rungs.append(
            RungPlan(
                name=rung.name,
                width=rung.width,
                height=rung.height,
                fps=Fraction(rung.fps),
                bitrate_kbps=rung.bitrate_kbps,
                maxrate_kbps=rung.maxrate_kbps,
                bufsize_kbps=rung.bufsize_kbps,
                level=rung.level,
                gop_frames=gop,
                segment_s=exact_segment_s(ladder.segment_s, ladder.gop_s, rung.fps),
                x264=x264_options(rung, gop_frames=gop, preset=preset, crf=crf),
            )
        )
    pre = tuple(f"{name}={args}" if args else name for name, args in video_filters(info))
    return LadderSettings(
        source=Path(source),
        info=info,
        ladder=ladder,
        preset=preset,
        crf=crf,
        rungs=tuple(rungs),
        audio=ladder.audio[0] if ladder.audio else None,
        pre_filters=pre,
    )


def find_ffmpeg(explicit: str | None = None) -> str:
    """The ffmpeg binary: ``explicit``, else imageio-ffmpeg's, else ``ffmpeg`` on PATH."""
    if explicit:
        return explicit
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        if isinstance(exe, str) and exe:
            return exe
    except (ImportError, RuntimeError):
        pass
    found = shutil.which("ffmpeg")
    if found is None:
        raise FileNotFoundError("no ffmpeg: install the bench extra (imageio-ffmpeg) or put ffmpeg on PATH")
    return found


def ffmpeg_version(exe: str) -> str:
    """The first line of ``ffmpeg -version``."""
    out = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def _rung_chain(settings: LadderSettings, rung: RungPlan) -> str:
    """The filters of one rung after the shared ones: fps, scale, pixel format."""
    parts: list[str] = []
    video = settings.info.video
    if rung.fps != Fraction(video.fps) or video.is_vfr:
        parts.append(f"fps={rung.fps.numerator}/{rung.fps.denominator}")
    if (rung.width, rung.height) != settings.display_size:
        parts.append(f"scale={rung.width}:{rung.height}:flags=bicubic")
    parts.append("format=yuv420p")
    return ",".join(parts)


def _x264_args(rung: RungPlan, index: int | None) -> list[str]:
    spec = "v" if index is None else f"v:{index}"
    args = [f"-b:{spec}", f"{rung.bitrate_kbps}k"]
    for key, value in rung.x264.items():
        if key not in _THREAD_OPTIONS:
            args += [f"-{key}:{spec}", value]
    return args


def _audio_args(plan: AudioPlan) -> list[str]:
    return ["-c:a", "aac", "-b:a", f"{plan.bitrate_kbps}k", "-ac", str(plan.channels), "-ar", str(plan.sample_rate)]


def _input_args(exe: str, settings: LadderSettings) -> list[str]:
    args = [exe, *_COMMON]
    if settings.info.video.rotation_deg:
        args.append("-noautorotate")  # the engine's own transpose filters are applied instead
    return [*args, "-i", str(settings.source)]


def _hls_rendition_output(directory: Path, segment_format: str) -> list[str]:
    """Segment file pattern and media playlist of a one-rendition HLS output in ``directory``."""
    return ["-hls_segment_filename", str(directory / _segment_name(segment_format)), str(directory / "index.m3u8")]


def _hls_args(segment_s: float, segment_format: str) -> list[str]:
    return [
        "-f",
        "hls",
        "-hls_time",
        f"{segment_s:.6f}",
        "-hls_playlist_type",
        "vod",
        "-hls_list_size",
        "0",
        "-hls_segment_type",
        "fmp4" if segment_format == "fmp4" else "mpegts",
        "-hls_flags",
        "independent_segments",
    ]


def _segment_name(segment_format: str) -> str:
    return "seg_%05d.m4s" if segment_format == "fmp4" else "seg_%05d.ts"


def one_process_command(exe: str, settings: LadderSettings, out_dir: Path, *, segment_format: str = "ts") -> list[str]:
    """Variant (b): one ffmpeg process, ``split`` into every rung, one HLS muxer.

    Output layout matches the engine's: ``<out>/<rung>/index.m3u8`` and
    ``<out>/<audio>/index.m3u8`` (``var_stream_map`` names), ``master.m3u8``.
    """
    n = len(settings.rungs)
    head = f"[0:v:0]{','.join(settings.pre_filters)}{',' if settings.pre_filters else ''}"
    if n == 1:
        graph = f"{head}{_rung_chain(settings, settings.rungs[0])}[v0]"
    else:
        graph = f"{head}split={n}" + "".join(f"[s{i}]" for i in range(n))
        graph += "".join(f";[s{i}]{_rung_chain(settings, rung)}[v{i}]" for i, rung in enumerate(settings.rungs))
    cmd = _input_args(exe, settings)
    cmd += ["-filter_complex", graph]
    for i in range(n):
        cmd += ["-map", f"[v{i}]"]
    if settings.audio is not None:
        cmd += ["-map", "0:a:0"]
    cmd += ["-c:v", "libx264"]
    for i, rung in enumerate(settings.rungs):
        cmd += _x264_args(rung, i)
    group = ",agroup:aud" if settings.audio is not None else ""
    streams = [f"v:{i}{group},name:{rung.name}" for i, rung in enumerate(settings.rungs)]
    if settings.audio is not None:
        cmd += _audio_args(settings.audio)
        streams.append(f"a:0{group},name:{settings.audio.name}")
    cmd += _hls_args(settings.segment_s, segment_format)
    cmd += [
        "-hls_segment_filename",
        str(out_dir / "%v" / _segment_name(segment_format)),
        "-master_pl_name",
        "master.m3u8",
        "-var_stream_map",
        " ".join(streams),
        str(out_dir / "%v" / "index.m3u8"),
    ]
    return cmd


def per_rung_commands(
    exe: str, settings: LadderSettings, out_dir: Path, *, segment_format: str = "ts"
) -> list[list[str]]:
    """Variant (c): one ffmpeg process per rung (each decodes the source), plus one for audio.

    Each writes ``<out>/<name>/index.m3u8`` and its segments; no master playlist.
    """
    commands: list[list[str]] = []
    pre = list(settings.pre_filters)
    for rung in settings.rungs:
        chain = ",".join([*pre, _rung_chain(settings, rung)])
        cmd = _input_args(exe, settings)
        cmd += ["-map", "0:v:0", "-vf", chain, "-an", "-c:v", "libx264", *_x264_args(rung, None)]
        cmd += _hls_args(rung.segment_s, segment_format)
        cmd += _hls_rendition_output(out_dir / rung.name, segment_format)
        commands.append(cmd)
    if settings.audio is not None:
        plan = settings.audio
        cmd = _input_args(exe, settings)
        cmd += ["-map", "0:a:0", "-vn", *_audio_args(plan)]
        cmd += _hls_args(settings.segment_s, segment_format)
        cmd += _hls_rendition_output(out_dir / plan.name, segment_format)
        commands.append(cmd)
    return commands
