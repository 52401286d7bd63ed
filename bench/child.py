"""``python -m bench.child``: the measured work of the object-storage variants, one per process.

    python -m bench.child transcode SRC DEST [--preset P --crf N]   # SRC/DEST local paths or s3:// URIs
    python -m bench.child get s3://bucket/key FILE                  # the plain download (T_download)
    python -m bench.child put DIR s3://bucket/prefix/               # the plain upload (T_upload)

The endpoint and credentials come from the environment (``AWS_ENDPOINT_URL_S3``,
``AWS_ACCESS_KEY_ID`` ...), as for any boto3 program. One JSON object goes to stdout:
``wall_s`` timed around the work only (after the imports and the client: a platform has
those already), the reader's and sink's ``stats`` for an s3→s3 transcode, and the moments
the first media was encoded (``startup_s``) and every rung was encoded (``encoded_s``).
"""

from __future__ import annotations

import argparse
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


def _transcode(args: argparse.Namespace, storage: StorageConfig) -> dict[str, Any]:
    config = TranscodeConfig(encoder=EncoderSettings(preset=args.preset, crf=args.crf))
    client = make_client(storage) if is_s3_uri(args.source) or is_s3_uri(args.dest) else None
    cancel = threading.Event()
    phases = _Phases()
    facts: dict[str, Any] = {}
    # The reader and sink transcode() would make for s3:// locations, made here to read their stats.
    source: Any = args.source
    if client is not None and is_s3_uri(args.source):
        source = S3Reader(client, S3Location.parse(args.source), storage, cancel=cancel)
    dest: Any = args.dest
    if client is not None and is_s3_uri(args.dest):
        dest = S3Sink(client, S3Location.parse(args.dest, prefix=True), storage, cancel=cancel)
    try:
        result = transcode(cast(IO[bytes], source), dest, config=config, cancel=cancel, progress=phases)
    finally:
        for part, name in ((source, "reader"), (dest, "sink")):
            if isinstance(part, S3Reader | S3Sink):
                part.close()
                facts[name] = dataclasses.asdict(part.stats)
    return {
        **facts,
        **phases.marks,
        "output_bytes": result.output_bytes,
        "files": len(result.files),
        "master": result.master_uri,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.child", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="work", required=True)
    run = sub.add_parser("transcode")
    run.add_argument("source")
    run.add_argument("dest")
    run.add_argument("--preset", default="veryfast")
    run.add_argument("--crf", type=int, default=23)
    get = sub.add_parser("get")
    get.add_argument("source")
    get.add_argument("dest", type=Path)
    put = sub.add_parser("put")
    put.add_argument("tree", type=Path)
    put.add_argument("dest")
    args = parser.parse_args(argv)
    storage = StorageConfig()
    client = make_client(storage) if args.work != "transcode" else None
    started = time.monotonic()
    if args.work == "transcode":
        facts = _transcode(args, storage)
    elif args.work == "get":
        where = S3Location.parse(args.source)
        assert client is not None
        client.download_file(where.bucket, where.key, str(args.dest), Config=transfer_config(storage))
        facts = {"source_bytes": args.dest.stat().st_size}
    else:
        files = sorted(p for p in args.tree.rglob("*") if p.is_file())
        with S3Sink(cast(Any, client), S3Location.parse(args.dest, prefix=True), storage) as sink:
            for path in files:
                sink.put(path.relative_to(args.tree).as_posix(), path.read_bytes())
            sink.flush()
        facts = {"files": len(files), "output_bytes": sink.stats.bytes}
    json.dump({"wall_s": time.monotonic() - started, **facts}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
