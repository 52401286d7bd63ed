"""The ``transcode`` command: probe, plan or run a ladder from the shell.

Exit codes (stable, documented in the README)::

    0  success
    2  usage error (bad option or value)
    3  bad input: the source is not a usable video (retrying will not help)
    4  media processing failed after the input was accepted
    5  output could not be written, or object storage failed (disk, permissions, storage)
    6  cancelled (SIGINT or SIGTERM): nothing was published
    70 internal error (a bug: please report it with the input)

Errors are printed as one line on stderr, never as a traceback.

SOURCE may be ``s3://bucket/key`` and ``-o`` ``s3://bucket/prefix/``.
Credentials come from boto3's chain (``AWS_ACCESS_KEY_ID``/``AWS_PROFILE`` ...);
the endpoint from ``--endpoint-url``, else ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL`` as botocore (and aws-cli) read them. A missing source
object exits 3; other storage failures exit 5.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any

import click

from .budget import detect_budget
from .chapters import ChapterPolicy
from .chunks import keyframe_times
from .colour import colour_of
from .config import X264_PRESETS, EncoderSettings, LadderPolicy, TranscodeConfig
from .decode import video_filters
from .encode import x264_options
from .errors import CancelledError, ConfigError, InputError, MediaError, OutputError, TranscodeError
from .execution import execution_plan
from .ladder import plan_ladder
from .models import Ladder, Progress, SourceInfo, TranscodeResult
from .opening import open_source
from .prediction import PREDICTED, still_gate
from .probe import probe
from .run import transcode
from .storage import S3Location, StorageConfig, StorageError, is_s3_uri
from .storyboard import StoryboardPlan, plan_storyboard
from .threadplan import plan_threads
from .tonemap import describe_filters

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_MEDIA = 4
EXIT_OUTPUT = 5
EXIT_CANCELLED = 6
EXIT_INTERNAL = 70


def exit_code_for(error: BaseException) -> int:
    """The exit code for ``error`` (the table in the module docstring)."""
    if isinstance(error, InputError):
        return EXIT_BAD_INPUT  # a missing source object too (SourceNotFoundError)
    if isinstance(error, CancelledError):
        return EXIT_CANCELLED
    if isinstance(error, (OutputError, StorageError)):
        return EXIT_OUTPUT
    if isinstance(error, ConfigError):
        return EXIT_USAGE
    if isinstance(error, (MediaError, TranscodeError)):
        return EXIT_MEDIA
    return EXIT_INTERNAL


def jsonable(value: Any) -> Any:
    """Dataclasses, fractions and tuples as JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in ("segment_count", "interlaced"):
            if hasattr(value, name):
                out[name] = getattr(value, name)
        return out
    if isinstance(value, Fraction):
        return float(value) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def _location(local: click.Path) -> Any:
    """A callback: ``s3://`` locations stay strings (checked), anything else goes through ``local``.

    (``click.Path`` alone would turn ``s3://b/k`` into a local path.)
    """

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | str | None:
        if value is None:
            return None
        if is_s3_uri(value):
            try:
                S3Location.parse(value, prefix=not local.file_okay)
            except ConfigError as exc:
                raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
            return value
        return Path(os.fsdecode(local.convert(value, param, ctx)))

    return convert


def _loudness_target(ctx: click.Context, param: click.Parameter, value: str) -> float | None:
    """``off`` or a number of LUFS (range-checked by the config)."""
    if value.strip().lower() == "off":
        return None
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a number of LUFS nor 'off'") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("source", callback=_location(click.Path(dir_okay=False, path_type=Path)))
@click.option(
    "-o",
    "--output",
    "output",
    callback=_location(click.Path(file_okay=False, path_type=Path)),
    metavar="DIR|s3://BUCKET/PREFIX/",
    help="Output directory or s3://bucket/prefix/.",
)
@click.option(
    "--endpoint-url",
    default=None,
    metavar="URL",
    help="S3 endpoint (e.g. R2's). Default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / the profile, as aws-cli.",
)
@click.option("--plan", "plan_only", is_flag=True, help="Print the ladder and exact encoder settings; encode nothing.")
@click.option("--preset", type=click.Choice(X264_PRESETS), default="veryfast", show_default=True, help="x264 preset.")
@click.option(
    "--crf", type=click.IntRange(0, 51), default=23, show_default=True, help="x264 quality (capped by maxrate)."
)
@click.option("--segment-seconds", type=float, default=4.0, show_default=True, help="Segment length (whole GOPs).")
@click.option("--gop-seconds", type=float, default=2.0, show_default=True, help="Keyframe interval.")
@click.option("--format", "segment_format", type=click.Choice(["ts", "fmp4"]), default="ts", show_default=True)
@click.option(
    "--threads", type=click.IntRange(1, 256), default=None, help="CPU budget (default: cgroup quota/affinity)."
)
@click.option("--cellular", is_flag=True, help="Add a 234p rung whose peak stays within 192 kb/s.")
@click.option(
    "--min-rung-saving",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.15,
    show_default=True,
    help="Publish a rung only if it saves this share of bits against the next larger published rung.",
)
@click.option(
    "--loudness-target",
    "loudness",
    callback=_loudness_target,
    default="-16",
    show_default=True,
    metavar="LUFS|off",
    help="Normalise speech to this integrated loudness (EBU R128, true peak <= -1 dBTP); off: leave the level.",
)
@click.option("--no-poster", is_flag=True, help="Do not write poster.jpg.")
@click.option(
    "--no-thumbnails", is_flag=True, help="Do not write storyboard sprite sheets, thumbnails.vtt and their playlist."
)
@click.option("--no-chapters", is_flag=True, help="Do not write chapters.vtt and chapters.json (slide changes).")
@click.option(
    "--checkpoint-seconds",
    type=click.FloatRange(0.0, 3600.0, min_open=True),
    default=30.0,
    show_default=True,
    help="Write a checkpoint record after every this much stored timeline; a rerun into OUTPUT resumes from them.",
)
@click.option("--no-checkpoint", is_flag=True, help="Write no checkpoint records and ignore any in OUTPUT.")
@click.option(
    "--parallel",
    type=click.Choice(["auto", "serial", "chunks"]),
    default="auto",
    show_default=True,
    help="One pass, or time chunks on worker processes; auto chooses from the budget (see --plan).",
)
@click.option("--workers", type=click.IntRange(1, 256), default=None, help="Chunk worker processes (default: planned).")
@click.option("--json", "as_json", is_flag=True, help="Print the result (or the plan) as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def cli(
    source: Path | str,
    output: Path | str | None,
    endpoint_url: str | None,
    plan_only: bool,
    preset: str,
    crf: int,
    segment_seconds: float,
    gop_seconds: float,
    segment_format: str,
    threads: int | None,
    cellular: bool,
    min_rung_saving: float,
    loudness: float | None,
    no_poster: bool,
    no_thumbnails: bool,
    no_chapters: bool,
    checkpoint_seconds: float,
    no_checkpoint: bool,
    parallel: str,
    workers: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Transcode SOURCE (a video file or s3://bucket/key) into an HLS ladder in OUTPUT."""
    if not plan_only and output is None:
        raise click.UsageError("missing option '-o' / '--output' (or use --plan)")
    try:
        config = TranscodeConfig(
            ladder=LadderPolicy(cellular_rung=cellular, min_rung_saving=min_rung_saving, loudness_lufs=loudness),
            encoder=EncoderSettings(preset=preset, crf=crf),
            segment_format="fmp4" if segment_format == "fmp4" else "ts",
            segment_s=segment_seconds,
            gop_s=gop_seconds,
            threads=threads,
            poster=not no_poster,
            thumbnails=not no_thumbnails,
            chapters=not no_chapters,
            checkpoint=not no_checkpoint,
            checkpoint_span_s=checkpoint_seconds,
            parallel="chunks" if parallel == "chunks" else "serial" if parallel == "serial" else "auto",
            workers=workers,
        )
        # No environment read here: with endpoint_url None botocore resolves
        # AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL itself.
        storage = StorageConfig(endpoint_url=endpoint_url)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if plan_only:
        code = _plan(source, config, storage, as_json)
    else:
        code = _run(source, output, config, storage, as_json, quiet)
    sys.exit(code)


def _fail(error: BaseException) -> int:
    code = exit_code_for(error)
    message = f"internal error: {type(error).__name__}: {error}" if code == EXIT_INTERNAL else str(error)
    click.echo(f"transcode: error: {message}", err=True)
    return code


def _plan(source: Path | str, config: TranscodeConfig, storage: StorageConfig, as_json: bool) -> int:
    try:
        with open_source(source, storage=storage) as opened:
            info = probe(opened, limits=config.limits)
            # The still gate reads only the index: what a run would encode with.
            still = not still_gate(opened, info, config.ladder)[1] and config.encoder.still_settings
            keyframes = keyframe_times(opened, info) if config.parallel != "serial" else None
        ladder = plan_ladder(info, config.ladder, gop_s=config.gop_s, segment_s=config.segment_s)
    except Exception as exc:
        return _fail(exc)
    budget = detect_budget(config.threads)
    threads = plan_threads(ladder, budget, preset=config.encoder.preset, still=still)
    execution = execution_plan(ladder, info, config, cores=budget.cores, mode=config.parallel, keyframes_s=keyframes)
    settings = {
        rung.name: x264_options(
            rung, gop_frames=ladder.gop_frames(rung), preset=config.encoder.preset, crf=config.encoder.crf, still=still
        )
        for rung in ladder.rungs
    }
    filters = [f"{name}={args}" if args else name for name, args in video_filters(info)]
    colour = colour_of(info.video)
    filters += describe_filters(colour)
    if as_json:
        payload = {
            "source": jsonable(info),
            "ladder": jsonable(ladder),
            "x264": settings,
            "filters": filters,
            "colour": {**jsonable(colour), "summary": colour.describe()},
            "threads": jsonable(threads),
            "execution": {**jsonable(execution), "summary": execution.describe()},
            "segment_format": config.segment_format,
            **_viewer_plan(info, ladder, config),
        }
        click.echo(json.dumps(payload, indent=2))
        return EXIT_OK
    click.echo(_describe_source(info))
    click.echo(f"filters before scaling: {', '.join(filters) if filters else 'none'}")
    click.echo(colour.describe())
    click.echo(
        f"segments: {config.segment_format}, {ladder.segment_s:g} s; keyframe every {ladder.gop_s:g} s; "
        f"scaler: {config.encoder.scaler}"
    )
    click.echo(_ladder_table(ladder))
    for name, options in settings.items():
        click.echo(f"x264 {name}: " + " ".join(f"{k}={v}" for k, v in options.items()))
    for plan in ladder.audio:
        level = (
            f"loudness {plan.loudness_lufs:g} LUFS, true peak <= {plan.true_peak_dbtp:g} dBTP"
            if plan.loudness_lufs is not None
            else "loudness as the source"
        )
        click.echo(
            f"audio {plan.name}: AAC-LC stereo {plan.sample_rate} Hz {plan.bitrate_kbps} kb/s, {level} (encoded once)"
        )
    for line in _viewer_lines(**_viewer_plan(info, ladder, config)):
        click.echo(line)
    for line in threads.describe():
        click.echo(line)
    for line in execution.describe():
        click.echo(line)
    return EXIT_OK


def _viewer_plan(info: SourceInfo, ladder: Ladder, config: TranscodeConfig) -> dict[str, Any]:
    """The thumbnails and chapters decisions, as ``--plan --json`` shows them (None when turned off)."""
    thumbnails = None
    if config.thumbnails:
        top = ladder.rungs[0]
        plan = plan_storyboard(info.duration_s, top.width, top.height, policy=config.storyboard)
        thumbnails = {**jsonable(plan), "max_sheets": config.storyboard.max_sheets}
    chapters = jsonable(config.chapter_policy) if config.chapters else None
    return {"thumbnails": thumbnails, "chapters": chapters}


def _viewer_lines(thumbnails: dict[str, Any] | None, chapters: dict[str, Any] | None) -> list[str]:
    if thumbnails is None:
        lines = ["thumbnails: off"]
    else:
        plan = StoryboardPlan(**{k: v for k, v in thumbnails.items() if k != "max_sheets"})
        lines = [
            f"thumbnails: one every {plan.interval_s} s, {plan.tile_width}x{plan.tile_height} tiles, "
            f"{plan.columns}x{plan.rows} per sheet; {plan.thumbnails} tiles on {plan.sheets} sheet(s) "
            f"(at most {thumbnails['max_sheets']}); thumbnails.vtt + storyboard/images.m3u8"
        ]
    if chapters is None:
        lines.append("chapters: off")
    else:
        policy = ChapterPolicy(**chapters)
        lines.append(
            f"chapters: slide changes (luma MAD >= {policy.min_change:g} on {policy.width}x{policy.height}, "
            f"{policy.spike_ratio:g}x its neighbours within {policy.window_s:g} s), at least "
            f"{policy.min_spacing_s:g} s apart; chapters.vtt + chapters.json (EXT-X-SESSION-DATA)"
        )
    return lines


def _run(
    source: Path | str,
    output: Path | str | None,
    config: TranscodeConfig,
    storage: StorageConfig,
    as_json: bool,
    quiet: bool,
) -> int:
    assert output is not None
    cancel = threading.Event()
    reporter = _Reporter(enabled=not quiet, stream=sys.stderr)
    try:
        with _cancel_on_signals(cancel):
            result = transcode(source, output, config=config, progress=reporter, cancel=cancel, storage=storage)
    except Exception as exc:
        reporter.close()
        return _fail(exc)
    reporter.close()
    if as_json:
        payload = jsonable(result)
        payload["master_path"] = _master_path(output, result.master_uri)
        payload["dropped_rungs"] = list(result.dropped_rungs)
        # The manifest as stored (not its text as a string), with its own size and hash beside it.
        if result.manifest is not None:
            payload["manifest"] = result.manifest.document()
            payload["manifest_file"] = {
                "key": result.manifest.key,
                "bytes": result.manifest.size_bytes,
                "sha256": result.manifest.sha256,
            }
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(_result_table(result, output))
    return EXIT_OK


@contextmanager
def _cancel_on_signals(cancel: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``cancel``: the run stops and publishes nothing."""
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        cancel.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _Reporter:
    """Progress: a redrawn bar on a terminal, a plain line every 10% otherwise."""

    def __init__(self, *, enabled: bool, stream: Any) -> None:
        self.enabled = enabled
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._last_step = -1
        self._last_draw = 0.0
        self._drawn = False

    def __call__(self, progress: Progress) -> None:
        if not self.enabled:
            return
        percent = progress.fraction * 100
        eta = f"{progress.eta_s:4.0f}s" if progress.eta_s is not None else "   ?"
        text = (
            f"{progress.phase:<12} {percent:5.1f}%  {progress.done_s:7.1f}/{progress.total_s:.1f}s  "
            f"{progress.speed:5.2f}x  ETA {eta}"
        )
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw < 0.2 and progress.phase == "transcoding":
                return
            self._last_draw = now
            width = 30
            filled = int(progress.fraction * width)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {text}")
            self.stream.flush()
            self._drawn = True
            return
        step = int(percent // 10)
        if step != self._last_step or progress.phase != "transcoding":
            self._last_step = step
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _describe_source(info: SourceInfo) -> str:
    v = info.video
    parts = [
        f"source: {info.container}, {info.duration_s:.3f} s",
        f"video: {v.codec} {v.coded_width}x{v.coded_height} -> display {v.display_width}x{v.display_height}"
        f" (rotation {v.rotation_deg}, SAR {v.sample_aspect_ratio}), {float(v.fps):.3f} fps"
        f"{' VFR' if v.is_vfr else ''}, {v.pix_fmt} ({v.bit_depth}-bit {v.chroma_subsampling}), {v.field_order}",
    ]
    if info.audio is not None:
        a = info.audio
        parts.append(f"audio: {a.codec} {a.channels} ch ({a.layout}) {a.sample_rate} Hz, starts at {a.start_s:.3f} s")
    else:
        parts.append("audio: none")
    return "\n".join(parts)


def _ladder_table(ladder: Ladder) -> str:
    rows = [("rung", "size", "fps", "kb/s", "maxrate", "bufsize", "level", "audio")]
    for r in ladder.rungs:
        rows.append(
            (
                r.name,
                f"{r.width}x{r.height}",
                f"{float(r.fps):.3f}",
                str(r.bitrate_kbps),
                str(r.maxrate_kbps),
                str(r.bufsize_kbps),
                f"{r.profile} {r.level}",
                r.audio.name if r.audio else "-",
            )
        )
    return _table(rows)


def _master_path(output: Path | str, master_uri: str) -> str:
    if isinstance(output, str) and is_s3_uri(output):
        return S3Location.parse(output, prefix=True).join(master_uri).uri
    return str(Path(output) / master_uri)


def _result_table(result: TranscodeResult, output: Path | str) -> str:
    rows = [("rendition", "size", "fps", "codecs", "segments", "peak kb/s", "avg kb/s", "MB")]
    for r in result.renditions:
        rows.append(
            (
                r.name,
                f"{r.width}x{r.height}" if r.width else "audio",
                f"{float(r.fps):.3f}" if r.fps else "-",
                r.codecs,
                str(r.segment_count),
                f"{r.peak_bps / 1000:.0f}",
                f"{r.average_bps / 1000:.0f}",
                f"{r.size_bytes / 1e6:.2f}",
            )
        )
    speed = result.source.duration_s / result.wall_s if result.wall_s > 0 else 0.0
    footer = (
        f"\nmaster playlist: {_master_path(output, result.master_uri)}\n"
        f"{result.source.duration_s:.1f} s of video in {result.wall_s:.1f} s ({speed:.2f}x realtime), "
        f"CPU {result.cpu_s:.1f} s, peak RSS {result.peak_rss_bytes / 2**20:.0f} MiB"
    )
    if result.chunks:
        worst = max(chunk.peak_rss_bytes for chunk in result.chunks)
        footer += f" (this process); {len(result.chunks)} chunks on worker processes, peak RSS {worst / 2**20:.0f} MiB"
    resumed = ""
    if result.resumed_segments:
        resumed = f"\nresumed: {result.resumed_segments} segments per rendition kept from an earlier run"
    return _table(rows) + _dropped_lines(result) + _loudness_lines(result) + resumed + footer


def _loudness_lines(result: TranscodeResult) -> str:
    def lufs(value: float | None) -> str:
        return "silence" if value is None else f"{value:.1f} LUFS"

    return "".join(
        f"\nloudness {r.name}: {lufs(r.loudness.input_lufs)} in, {lufs(r.loudness.output_lufs)} out "
        f"(target {r.loudness.target_lufs:g})"
        for r in result.renditions
        if r.loudness is not None
    )


_DROP_REASONS = {
    "pixels": "no fewer pixels than {larger}",
    "not_cheaper": "costs as much as {larger}",
    "small_saving": "saves less than the minimum against {larger}",
}


def _dropped_lines(result: TranscodeResult) -> str:
    """One line per rung measured but not published, with the rates the rule compared."""
    lines = []
    for d in result.rung_decisions:
        if d.kept:
            continue
        reason = d.reason.removeprefix(PREDICTED)
        why = _DROP_REASONS.get(reason, reason).format(larger=d.compared_with)
        if reason != d.reason:
            why = f"predicted before encoding, never encoded: {why}"
        lines.append(
            f"\ndropped {d.name} ({d.width}x{d.height}): {why}; BANDWIDTH {d.bandwidth_bps / 1000:.0f} kb/s "
            f"({(d.bandwidth_saving or 0.0):+.0%} saved), AVERAGE {d.average_bandwidth_bps / 1000:.0f} kb/s "
            f"({(d.average_saving or 0.0):+.0%} saved)"
        )
    return "".join(lines)


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(standalone_mode=True)
    except SystemExit:
        raise
    except Exception as exc:
        sys.exit(_fail(exc))
