"""``transcode``: probe, plan, run the ladder, measure what it cost."""

from __future__ import annotations

import os
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import psutil

from .budget import detect_budget
from .config import TranscodeConfig
from .errors import OutputError
from .execution import prepare
from .inventory import HashingSink
from .ladder import plan_ladder
from .manifest import (
    MANIFEST,
    ObjectEntry,
    RunFacts,
    SourceIdentity,
    build_manifest,
    render_manifest,
    sha256_hex,
)
from .models import LoudnessResult, Manifest, RenditionResult, TranscodeResult
from .opening import open_source
from .output import LocalDirectory, OutputSink, content_type_for
from .pipeline import Coordinator, LadderOutput, ProgressSink
from .prediction import merge_decisions, predict_still_ladder
from .probe import Source, probe
from .storage import S3Location, StorageConfig, is_s3_uri
from .usage import peak_rss_bytes
from .version import __version__

if TYPE_CHECKING:
    from .storage.client import S3Client


def transcode(
    source: Source,
    destination: str | os.PathLike[str] | OutputSink,
    *,
    config: TranscodeConfig | None = None,
    progress: ProgressSink | None = None,
    cancel: threading.Event | None = None,
    storage: StorageConfig | None = None,
    s3_client: S3Client | None = None,
) -> TranscodeResult:
    """Transcode ``source`` into an HLS ladder at ``destination``.

    ``source`` is a local path, an ``s3://bucket/key`` string or a seekable
    binary file; ``destination`` a local directory (created if missing), an
    ``s3://bucket/prefix/`` string or an :class:`OutputSink`. Object storage is
    reached with ``s3_client`` if given, else a client made from ``storage``
    (:class:`~transcoder.storage.StorageConfig`; default settings and boto3's
    credential chain); the source is streamed by ranged GETs, the output
    uploaded as it is made. ``progress`` is called from the calling thread a
    few times a second. Setting ``cancel`` stops the run: nothing is published.
    Just before the master playlist, ``manifest.json`` lists everything stored
    (:mod:`transcoder.manifest`); it is returned as ``TranscodeResult.manifest``.

    Raises :class:`~transcoder.errors.InputError` for unusable input (before
    any output is written when the probe already shows it; a missing source
    object is a :class:`~transcoder.storage.SourceNotFoundError`),
    :class:`~transcoder.errors.MediaError`,
    :class:`~transcoder.errors.OutputError`,
    :class:`~transcoder.storage.StorageError` or
    :class:`~transcoder.errors.CancelledError`. A failed run leaves no master
    playlist behind, removes what it wrote and aborts its multipart uploads.
    """
    config = config or TranscodeConfig()
    # One event for the pipeline and the storage threads, so a cancel (or a
    # failed stage) also stops storage retries.
    cancel = cancel if cancel is not None else threading.Event()
    started_wall = time.monotonic()
    process = psutil.Process()
    cpu_start = process.cpu_times()
    clients = _Clients(storage, s3_client)
    with ExitStack() as stack:
        opened = stack.enter_context(open_source(source, storage=storage, s3_client=clients.get, cancel=cancel))
        info = probe(opened, limits=config.limits)
        ladder = plan_ladder(info, config.ladder, gop_s=config.gop_s, segment_s=config.segment_s)
        # Rungs a still source would drop anyway are never encoded (transcoder.prediction).
        prediction = predict_still_ladder(opened, info, ladder, config)
        encoded = prediction.encode_ladder(ladder)
        # A still source's settings (transcoder.still): x264 parameters and thread plan.
        still = prediction.still and config.encoder.still_settings
        budget = detect_budget(config.threads)
        sink: OutputSink
        if is_s3_uri(destination):
            from .storage.uploader import S3Sink  # boto3 is imported only when object storage is used

            location = S3Location.parse(cast(str, destination), prefix=True)
            s3_sink = S3Sink(clients.get(), location, storage, cancel=cancel)
            stack.callback(s3_sink.close)
            sink = s3_sink
        elif isinstance(destination, (str, os.PathLike)):
            try:
                Path(destination).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(
                    "could not create the output directory",
                    context={"path": os.fspath(destination), "error": exc.strerror},
                ) from exc
            sink = LocalDirectory(destination)
        else:
            sink = destination
        inventory = HashingSink(sink)
        identity = _identity(source, opened)
        execution = prepare(
            source=source,
            destination=destination,
            opened=opened,
            info=info,
            ladder=encoded,
            config=config,
            still=still,
            budget=budget,
            sink=sink,
            inventory=inventory,
            identity=identity,
            storage=storage,
            cancel=cancel,
            stack=stack,
        )
        manifests: list[Manifest] = []

        def write_manifest(published: LadderOutput, master: bytes) -> list[str]:
            """Store manifest.json: every object so far, the master about to be stored, the run's facts."""
            cpu_now = process.cpu_times()
            facts = RunFacts(
                objects=inventory.objects(),
                master=ObjectEntry(
                    key=published.master_uri,
                    size_bytes=len(master),
                    sha256=sha256_hex(master),
                    content_type=content_type_for(published.master_uri),
                ),
                renditions=published.renditions,
                source=info,
                identity=identity,
                ladder=ladder,
                encoder=config.encoder,
                segment_format=config.segment_format,
                engine_version=__version__,
                wall_s=time.monotonic() - started_wall,
                cpu_s=_cpu_s(cpu_now) - _cpu_s(cpu_start),
                poster_key=published.poster_uri,
                thumbnails=published.thumbnails,
                chapters=published.chapters,
                loudness=_loudness_of(published.renditions),
            )
            data = render_manifest(build_manifest(facts))
            inventory.put(MANIFEST, data)
            manifests.append(Manifest(key=MANIFEST, text=data.decode(), sha256=sha256_hex(data), size_bytes=len(data)))
            return [MANIFEST]

        output = Coordinator(
            opened,
            info,
            encoded,
            config=config,
            sink=inventory,
            threads=execution.threads,
            progress=progress,
            cancel=cancel,
            before_master=write_manifest,
            still=still,
            execution=execution,
        ).run()
    cpu_end = process.cpu_times()
    cpu_s = _cpu_s(cpu_end) - _cpu_s(cpu_start)  # chunk workers included
    return TranscodeResult(
        source=info,
        ladder=ladder,
        renditions=output.renditions,
        master_uri=output.master_uri,
        poster_uri=output.poster_uri,
        files=output.files,
        wall_s=time.monotonic() - started_wall,
        cpu_s=cpu_s,
        peak_rss_bytes=peak_rss_bytes(),
        output_bytes=sum(r.size_bytes for r in output.renditions),
        rung_decisions=merge_decisions(ladder, prediction, output.rung_decisions),
        thumbnails=output.thumbnails,
        chapters=output.chapters,
        manifest=manifests[-1] if manifests else None,
        resumed_segments=execution.resumed_segments,
        checkpoint=execution.note,
        execution=execution.plan.describe()[0].removeprefix("execution: "),
        chunks=execution.pool.stats if execution.pool is not None else (),
    )


class _Clients:
    """One S3 client per run, made on first use (none when no s3:// location is involved)."""

    def __init__(self, storage: StorageConfig | None, client: Any | None) -> None:
        self._storage = storage
        self._client = client

    def get(self) -> Any:
        if self._client is None:
            from .storage.client import make_client

            self._client = make_client(self._storage)
        return self._client


def _identity(source: Source, opened: Source) -> SourceIdentity:
    """The source's identity for the manifest: its URI, size and ETag (S3) or modification time (a path)."""
    etag = getattr(opened, "etag", None)  # an S3Reader pins the object's ETag
    if etag is not None:
        return SourceIdentity(
            uri=str(getattr(opened, "uri", source)), size_bytes=getattr(opened, "size", None), etag=etag
        )
    if isinstance(source, (str, os.PathLike)):
        try:
            stat = os.stat(source)
        except OSError:
            return SourceIdentity(uri=os.fspath(source), size_bytes=None)
        return SourceIdentity(uri=os.fspath(source), size_bytes=stat.st_size, modified_s=stat.st_mtime)
    return SourceIdentity(uri=None, size_bytes=None)  # a file object: the probe's size stands


def _loudness_of(renditions: tuple[RenditionResult, ...]) -> LoudnessResult | None:
    """The audio rendition's measured loudness (None when normalisation was off or there is no audio)."""
    return next((r.loudness for r in renditions if r.kind == "audio" and r.loudness is not None), None)


def _cpu_s(times: Any) -> float:
    """User and system CPU seconds of this process and its waited-for children (chunk workers)."""
    return float(times.user + times.system + times.children_user + times.children_system)
