"""The variants, as data, and the command lines that run them.

"The same ladder" comes from the engine's own plan (``transcode SRC --plan --json``: rungs,
every x264 option, filters before scaling), so the ffmpeg CLI follows the engine when it
changes: each x264 option ``K=V`` becomes ``-K:v:<i> V`` (thread options aside: the CLI keeps
its defaults, as a user would run it), ``-b:v`` the rung's bitrate (the engine sets it too),
``scale=W:H:flags=bicubic,format=yuv420p`` (the engine's scaler), ``fps=`` only where a rung's
rate differs from the source's, AAC-LC once as its own rendition, segments of whole GOPs.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

__all__ = ["ALIASES", "VARIANTS", "Plan", "Rung", "Variant", "find_ffmpeg", "plan_of", "steps_for"]


@dataclass(frozen=True, slots=True)
class Variant:
    """One way of making the ladder. ``storage``: needs the S3 server; ``after``: uses that variant's output."""

    key: str
    label: str
    storage: bool = False
    after: str | None = None


VARIANTS = {
    v.key: v
    for v in (
        Variant("engine", "engine, local files"),
        # What the viewer outputs and loudness cost: the engine's row minus this one's.
        Variant("engine-bare", "engine without thumbnails, chapters, poster, loudness"),
        # Time chunks on worker processes forced, whatever the plan would choose (transcoder.chunks).
        Variant("engine-chunks", "engine, forced time chunks"),
        Variant("engine-chunks-bare", "engine, forced time chunks, without thumbnails, chapters, poster, loudness"),
        Variant("cli", "ffmpeg CLI, 1 process"),
        Variant("cli-rung", "ffmpeg CLI, 1 process per rung"),
        Variant("s3", "engine, s3->s3 through the link", storage=True),
        Variant("seq", "download -> engine -> upload", storage=True),
        Variant("get", "plain download (T_download)", storage=True),
        Variant("put", "plain upload of the engine's ladder (T_upload)", storage=True, after="engine"),
    )
}
ALIASES = {"a": "engine", "b": "cli", "c": "cli-rung"}  # the keys of the reports in bench/NOTES.md
_THREAD_OPTIONS = frozenset({"threads", "thread_type"})
_COMMON = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning", "-y")


@dataclass(frozen=True, slots=True, kw_only=True)
class Rung:
    name: str
    width: int
    height: int
    fps: Fraction
    bitrate_kbps: int
    gop_frames: int
    segment_s: float  # a whole number of GOPs at this rung's rate
    x264: dict[str, str]  # libx264 options, exactly as the engine passes them


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """A source and its ladder, as the engine plans it."""

    source: Path
    preset: str
    crf: int
    duration_s: float
    width: int  # display size
    height: int
    fps: Fraction
    vfr: bool
    rotated: bool
    audio: dict[str, Any] | None  # the audio rendition: name, bitrate_kbps, channels, sample_rate
    rungs: tuple[Rung, ...]
    filters: tuple[str, ...]  # before scaling (deinterlace, rotation), ffmpeg filter syntax
    describe: str

    @property
    def rendition_names(self) -> list[str]:
        return [r.name for r in self.rungs] + ([self.audio["name"]] if self.audio else [])


def plan_of(source: Path, *, preset: str, crf: int) -> Plan:
    """The engine's plan for ``source``, from ``transcode --plan --json``."""
    cmd = [sys.executable, "-m", "transcoder", str(source), "--plan", "--json", "--preset", preset, "--crf", str(crf)]
    data = json.loads(subprocess.run(cmd, capture_output=True, check=True, text=True, timeout=300).stdout)
    ladder, video = data["ladder"], data["source"]["video"]
    per_segment = round(ladder["segment_s"] / ladder["gop_s"])
    rungs = []
    for r in ladder["rungs"]:
        x264 = data["x264"][r["name"]]
        params = dict(p.split("=", 1) for p in x264.get("x264-params", "").split(":") if "=" in p)
        fps = Fraction(r["fps"]).limit_denominator(1001)
        gop = int(params["keyint"])
        common = {k: r[k] for k in ("name", "width", "height", "bitrate_kbps")}
        rungs.append(Rung(**common, fps=fps, gop_frames=gop, segment_s=float(per_segment * gop / fps), x264=x264))
    size = source.stat().st_size
    duration = float(data["source"]["duration_s"])
    describe = (
        f"{duration:.1f} s {video['display_width']}x{video['display_height']} {video['fps']:.3f} fps "
        f"{video['codec']} {video['pix_fmt']} {video['colour_transfer']}, {size / 1e6:.1f} MB "
        f"({size * 8 / duration / 1e6 if duration else 0:.1f} Mb/s), {'with' if ladder['audio'] else 'no'} audio"
    )
    audio, filters = ladder["audio"][0] if ladder["audio"] else None, tuple(data["filters"])
    return Plan(
        source=source, preset=preset, crf=crf, duration_s=duration, width=video["display_width"],
        height=video["display_height"], fps=Fraction(video["fps"]).limit_denominator(1001), vfr=bool(video["is_vfr"]),
        rotated=bool(video["rotation_deg"]), audio=audio, rungs=tuple(rungs), filters=filters, describe=describe,
    )  # fmt: skip


def find_ffmpeg(explicit: str | None = None) -> str:
    """The ffmpeg binary: ``explicit``, else imageio-ffmpeg's (the bench extra), else ``ffmpeg`` on PATH."""
    if explicit:
        return explicit
    with contextlib.suppress(ImportError, RuntimeError):
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    return shutil.which("ffmpeg") or "ffmpeg"


def _chain(plan: Plan, rung: Rung) -> str:
    parts = list(plan.filters)
    if rung.fps != plan.fps or plan.vfr:
        parts.append(f"fps={rung.fps.numerator}/{rung.fps.denominator}")
    if (rung.width, rung.height) != (plan.width, plan.height):
        parts.append(f"scale={rung.width}:{rung.height}:flags=bicubic")
    return ",".join([*parts, "format=yuv420p"])


def _x264(rung: Rung, spec: str) -> list[str]:
    args = [f"-b:{spec}", f"{rung.bitrate_kbps}k"]
    for key, value in rung.x264.items():
        if key not in _THREAD_OPTIONS:
            args += [f"-{key}:{spec}", value]
    return args


def _audio(plan: Plan) -> list[str]:
    a = plan.audio or {}
    return ["-c:a", "aac", "-b:a", f"{a['bitrate_kbps']}k", "-ac", str(a["channels"]), "-ar", str(a["sample_rate"])]


def _hls(segment_s: float, playlist: Path) -> list[str]:
    options = (
        f"-f hls -hls_time {segment_s:.6f} -hls_playlist_type vod -hls_list_size 0 -hls_flags independent_segments"
    )
    return [*options.split(), "-hls_segment_filename", str(playlist.parent / "seg_%05d.ts"), str(playlist)]


def _ffmpeg_in(ffmpeg: str, plan: Plan) -> list[str]:
    # With rotation the engine's own transpose filters (plan.filters) are applied instead.
    return [ffmpeg, *_COMMON, *(["-noautorotate"] if plan.rotated else []), "-i", str(plan.source)]


def cli_one_process(ffmpeg: str, plan: Plan, out: Path) -> list[str]:
    """One ffmpeg: ``split`` into every rung, one libx264 each, AAC once, one HLS muxer."""
    n = len(plan.rungs)
    graph = f"[0:v:0]split={n}" + "".join(f"[s{i}]" for i in range(n))
    graph += "".join(f";[s{i}]{_chain(plan, r)}[v{i}]" for i, r in enumerate(plan.rungs))
    cmd = [*_ffmpeg_in(ffmpeg, plan), "-filter_complex", graph]
    cmd += [arg for i in range(n) for arg in ("-map", f"[v{i}]")] + (["-map", "0:a:0"] if plan.audio else [])
    cmd += ["-c:v", "libx264"] + [arg for i, r in enumerate(plan.rungs) for arg in _x264(r, f"v:{i}")]
    group = ",agroup:aud" if plan.audio else ""
    streams = [f"v:{i}{group},name:{r.name}" for i, r in enumerate(plan.rungs)]
    if plan.audio:
        cmd += _audio(plan)
        streams.append(f"a:0{group},name:{plan.audio['name']}")
    cmd += _hls(plan.rungs[0].segment_s, out / "%v" / "index.m3u8")[:-1]
    return [*cmd, "-master_pl_name", "master.m3u8", "-var_stream_map", " ".join(streams), str(out / "%v/index.m3u8")]


def cli_per_rung(ffmpeg: str, plan: Plan, out: Path) -> list[list[str]]:
    """One ffmpeg per rung (each decodes the source), one more for audio: all started at once."""
    commands = []
    for r in plan.rungs:
        video = ["-map", "0:v:0", "-vf", _chain(plan, r), "-an", "-c:v", "libx264", *_x264(r, "v")]
        commands.append([*_ffmpeg_in(ffmpeg, plan), *video, *_hls(r.segment_s, out / r.name / "index.m3u8")])
    if plan.audio:
        playlist = out / plan.audio["name"] / "index.m3u8"
        commands.append(
            [*_ffmpeg_in(ffmpeg, plan), "-map", "0:a:0", "-vn", *_audio(plan), *_hls(plan.rungs[0].segment_s, playlist)]
        )
    return commands


BARE = ("--no-thumbnails", "--no-chapters", "--no-poster", "--loudness-target", "off")


def engine(plan: Plan, source: str, out: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "transcoder",
        source,
        "-o",
        out,
        *f"--preset {plan.preset} --crf {plan.crf} --json -q".split(),
        *extra,
    ]


def _child(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench.child", *args]


def steps_for(
    key: str, plan: Plan, out: Path, *, ffmpeg: str, s3: str = "", after: Path | None = None
) -> list[list[list[str]]]:
    """The steps of one run of ``key`` in ``out`` (steps in order, commands of a step side by side).

    A local ladder goes to ``out/ladder``; the sequential variant works in ``out/cwd``.

    ``s3`` is this run's key prefix URI (the source is stored as ``<bucket root>/source.mp4``);
    ``after`` the output of the variant ``put`` uploads.
    """
    ladder = out / "ladder"
    ladder.mkdir(parents=True, exist_ok=True)
    root = s3.rsplit("/", 2)[0] + "/source.mp4" if s3 else ""
    if key == "engine":
        return [[engine(plan, str(plan.source), str(ladder))]]
    if key == "engine-bare":
        return [[engine(plan, str(plan.source), str(ladder), *BARE)]]
    if key == "engine-chunks":
        return [[engine(plan, str(plan.source), str(ladder), "--parallel", "chunks")]]
    if key == "engine-chunks-bare":
        return [[engine(plan, str(plan.source), str(ladder), "--parallel", "chunks", *BARE)]]
    if key == "cli":
        return [[cli_one_process(ffmpeg, plan, ladder)]]
    if key == "cli-rung":
        for name in plan.rendition_names:
            (ladder / name).mkdir(exist_ok=True)
        return [cli_per_rung(ffmpeg, plan, ladder)]
    if key == "s3":
        return [[_child("transcode", root, s3, plan.preset, str(plan.crf))]]
    if key == "seq":
        local = out / "cwd" / "source.mp4"
        return [
            [_child("get", root, str(local))],
            [engine(plan, str(local), str(out / "cwd" / "ladder"))],
            [_child("put", str(out / "cwd" / "ladder"), s3)],
        ]
    if key == "get":
        return [[_child("get", root, str(out / "cwd" / "source.mp4"))]]
    if key == "put":
        assert after is not None
        return [[_child("put", str(after), s3)]]
    raise ValueError(f"unknown variant {key!r}")
