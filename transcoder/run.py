"""``transcode``: probe, plan, run the ladder, measure what it cost."""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path

import psutil

from .config import TranscodeConfig
from .ladder import plan_ladder
from .models import TranscodeResult
from .output import LocalDirectory, OutputSink
from .pipeline import ProgressSink, run_ladder
from .probe import Source, probe
from .profiles import detect_budget, plan_threads


def transcode(
    source: Source,
    destination: str | os.PathLike[str] | OutputSink,
    *,
    config: TranscodeConfig | None = None,
    progress: ProgressSink | None = None,
    cancel: threading.Event | None = None,
) -> TranscodeResult:
    """Transcode ``source`` into an HLS ladder at ``destination``.

    ``source`` is a local path or a seekable binary file; ``destination`` a
    local directory (created if missing) or an :class:`OutputSink`.
    ``progress`` is called from the calling thread a few times a second.
    Setting ``cancel`` stops the run: nothing is published.

    Raises :class:`~transcoder.errors.InputError` for unusable input (before
    any output is written when the probe already shows it),
    :class:`~transcoder.errors.MediaError`,
    :class:`~transcoder.errors.OutputError` or
    :class:`~transcoder.errors.CancelledError`. A failed run leaves no master
    playlist behind and removes what it wrote.
    """
    config = config or TranscodeConfig()
    started_wall = time.monotonic()
    process = psutil.Process()
    cpu_start = process.cpu_times()
    info = probe(source, limits=config.limits)
    ladder = plan_ladder(info, config.ladder, gop_s=config.gop_s, segment_s=config.segment_s)
    threads = plan_threads(ladder, detect_budget(config.threads))
    sink: OutputSink
    if isinstance(destination, (str, os.PathLike)):
        Path(destination).mkdir(parents=True, exist_ok=True)
        sink = LocalDirectory(destination)
    else:
        sink = destination
    output = run_ladder(
        source, info, ladder, config=config, sink=sink, threads=threads, progress=progress, cancel=cancel
    )
    cpu_end = process.cpu_times()
    cpu_s = (cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system)
    return TranscodeResult(
        source=info,
        ladder=ladder,
        renditions=output.renditions,
        master_uri=output.master_uri,
        poster_uri=output.poster_uri,
        files=output.files,
        wall_s=time.monotonic() - started_wall,
        cpu_s=cpu_s,
        peak_rss_bytes=_peak_rss_bytes(),
        output_bytes=sum(r.size_bytes for r in output.renditions),
    )


def _peak_rss_bytes() -> int:
    # ru_maxrss is the process's high-water mark, in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
