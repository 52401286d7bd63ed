"""Opening a source for the probe and the decoder: a local path or file as is, an ``s3://`` URI as a ranged reader."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, cast

from .probe import Source
from .storage import S3Location, StorageConfig, is_s3_uri

if TYPE_CHECKING:
    from .storage.client import S3Client


@contextmanager
def open_source(
    source: Source,
    *,
    storage: StorageConfig | None = None,
    s3_client: S3Client | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[Source]:
    """``source`` ready for :func:`~transcoder.probe.probe` and decoding.

    An ``s3://bucket/key`` string becomes an :class:`~transcoder.storage.reader.S3Reader`
    (its HEAD raises :class:`~transcoder.storage.SourceNotFoundError` for a
    missing object), closed on exit; anything else is passed through.
    ``s3_client`` is a client or a zero-argument factory for one.
    """
    if not is_s3_uri(source):
        yield source
        return
    from .storage.client import make_client
    from .storage.reader import S3Reader

    location = S3Location.parse(cast(str, source))
    client = s3_client() if callable(s3_client) else s3_client
    reader = S3Reader(client if client is not None else make_client(storage), location, storage, cancel=cancel)
    try:
        # An S3Reader is a binary file (io.RawIOBase); typeshed does not count
        # RawIOBase as IO[bytes], though it has every method the probe uses.
        yield cast(IO[bytes], reader)
    finally:
        reader.close()


__all__ = ["open_source"]
