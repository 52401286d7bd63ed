"""Object storage (S3, Cloudflare R2): the one owner of every request to it.

Importing this package imports no boto3 (~0.3 s): the run and the CLI name
its types and errors whether or not an ``s3://`` location is involved. The
modules that talk to storage are imported only when one is:

* :mod:`.config`: :class:`S3Location` and :class:`StorageConfig` (data only);
* :mod:`.errors`: :class:`StorageError` and its subclasses (no boto3);
* :mod:`.client`: the only module that imports boto3/botocore/s3transfer: the
  client with the settings R2 needs, the retry around every request and the
  mapping of S3 failures to the errors above;
* :mod:`.reader`: :class:`~.reader.S3Reader`, a seekable file over ranged GETs;
* :mod:`.uploader`: :class:`~.uploader.S3Sink`, the output sink uploading as
  objects are made;
* :mod:`.objects`: :class:`~.objects.ObjectStore`, the small list/read/delete
  API (finding a stored ladder and reading it back).

Modules import downwards only (config and errors, then client, then the
rest), so any one of them can be imported first.
"""

from __future__ import annotations

from typing import Any

from .config import (
    MAX_PART_BYTES,
    MAX_PARTS,
    MIB,
    MIN_PART_BYTES,
    S3_SCHEME,
    S3Location,
    StorageConfig,
    is_s3_uri,
)
from .errors import (
    CredentialsError,
    SourceChangedError,
    SourceNotFoundError,
    SourceReadError,
    StorageError,
    UploadError,
)

__all__ = [
    "MAX_PARTS",
    "MAX_PART_BYTES",
    "MIB",
    "MIN_PART_BYTES",
    "S3_SCHEME",
    "CredentialsError",
    "S3Location",
    "SourceChangedError",
    "SourceNotFoundError",
    "SourceReadError",
    "StorageConfig",
    "StorageError",
    "UploadError",
    "is_s3_uri",
    "make_s3_client",
]


def make_s3_client(config: StorageConfig | None = None) -> Any:
    """An S3 client with the settings R2 needs (see :func:`.client.make_client`).

    Imports boto3 on first use only, so ``import transcoder`` stays light for
    callers that never touch object storage.
    """
    from .client import make_client

    return make_client(config)
