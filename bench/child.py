"""``python -m bench.child``: the measured work of the object-storage variants, one per process.

    python -m bench.child transcode SRC DEST PRESET CRF             # SRC/DEST local paths or s3:// URIs
    python -m bench.child get s3://bucket/key FILE                  # the plain download (T_download)
    python -m bench.child put DIR s3://bucket/prefix/               # the plain upload (T_upload)

The endpoint and credentials come from the environment (``AWS_ENDPOINT_URL_S3``,
``AWS_ACCESS_KEY_ID`` ...), as for any boto3 program. One JSON object goes to stdout:
``wall_s`` timed around the work only (after the imports and the client: a platform has
those already), the reader's and sink's ``stats`` for an s3→s3 transcode, and the moments
the first media was encoded (``startup_s``) and every rung was encoded (``encoded_s``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, cast

from transcoder import EncoderSettings, Progress, TranscodeConfig, transcode
from transcoder.storage import S3Location, StorageConfig, is_s3_uri
from transcoder.storage.client import make_client, transfer_config
from transcoder.storage.reader import S3Reader
from transcoder.storage.uploader import S3Sink


class _Phases:
    """A progress sink noting when the first media was encoded and when encoding ended."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.marks: dict[str, float] = {}

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic() - self.started
        if progress.done_s > 0:
            self.marks.setdefault("startup_s", now)
        if progress.phase != "transcoding":
            self.marks.setdefault("encoded_s", now)


def _transcode(source: str, dest: str, preset: str, crf: int, client: Any, storage: StorageConfig) -> dict[str, Any]:
    config = TranscodeConfig(encoder=EncoderSettings(preset=preset, crf=crf))
    cancel, phases, facts = threading.Event(), _Phases(), {}
    # The reader and sink transcode() would make for s3:// locations, made here to read their stats.
    src: Any = S3Reader(client, S3Location.parse(source), storage, cancel=cancel) if is_s3_uri(source) else source
    out: Any = S3Sink(client, S3Location.parse(dest, prefix=True), storage, cancel=cancel) if is_s3_uri(dest) else dest
    try:
        result = transcode(cast(IO[bytes], src), out, config=config, cancel=cancel, progress=phases)
    finally:
        for part, name in ((src, "reader"), (out, "sink")):
            if isinstance(part, S3Reader | S3Sink):
                part.close()
                facts[name] = dataclasses.asdict(part.stats)
    return {**facts, **phases.marks, "output_bytes": result.output_bytes, "files": len(result.files)}


def main(argv: Sequence[str] | None = None) -> int:
    """``argv``: ``transcode SRC DEST PRESET CRF``, ``get URI FILE`` or ``put DIR URI``."""
    work, source, dest, *options = sys.argv[1:] if argv is None else argv
    storage = StorageConfig()
    client = make_client(storage) if work != "transcode" or is_s3_uri(source) or is_s3_uri(dest) else None
    started = time.monotonic()
    if work == "transcode":
        facts = _transcode(source, dest, options[0], int(options[1]), client, storage)
    elif work == "get":
        where = S3Location.parse(source)
        cast(Any, client).download_file(where.bucket, where.key, dest, Config=transfer_config(storage))
        facts = {"source_bytes": Path(dest).stat().st_size}
    else:
        files = sorted(p for p in Path(source).rglob("*") if p.is_file())
        with S3Sink(cast(Any, client), S3Location.parse(dest, prefix=True), storage) as sink:
            for path in files:
                sink.put(path.relative_to(source).as_posix(), path.read_bytes())
            sink.flush()
        facts = {"files": len(files), "output_bytes": sink.stats.bytes}
    json.dump({"wall_s": time.monotonic() - started, **facts}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
