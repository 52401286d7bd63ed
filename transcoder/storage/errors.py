"""The storage errors: what failed, on which object, and whether a retry could help. No boto3.

Which S3 responses become which of these is decided in one place,
:func:`transcoder.storage.client.storage_error`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InputError, OutputError, TranscodeError


class StorageError(TranscodeError):
    """Object storage failed (reading the source, writing the output, listing or reading objects back).

    ``retryable`` is set per instance: a fault that outlasted the retry
    deadline (connection resets, timeouts, 5xx, 429) may pass on a later run;
    a refused request (403, a missing bucket, a bad request) will not.
    ``context`` names the object (``s3://bucket/key``), the operation and the
    server's status and code; never credentials or signed URLs.
    """

    retryable = True

    def __init__(
        self, message: str, *, context: Mapping[str, Any] | None = None, retryable: bool | None = None
    ) -> None:
        super().__init__(message, context=context)
        if retryable is not None:
            self.retryable = retryable


class SourceNotFoundError(StorageError, InputError):
    """The source object (or its bucket) does not exist. Not retryable."""

    retryable = False


class SourceChangedError(StorageError):
    """The source object was replaced while it was being read (its ETag changed).

    Retryable: a new run reads the new object from its start.
    """

    retryable = True


class SourceReadError(StorageError):
    """Reading the source object failed (after retries, or refused)."""


class CredentialsError(StorageError):
    """The storage refused the credentials or their permissions (403), or there are none.

    Not retryable: the same credentials fail the same way.
    """

    retryable = False


class UploadError(StorageError, OutputError):
    """Storing an output object failed; ``context["key"]`` names the object."""
