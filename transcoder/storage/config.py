"""Object-storage locations and settings: data only, no boto3.

``s3://bucket/key`` names a source object, ``s3://bucket/prefix/`` a
destination. :class:`StorageConfig` carries every knob of the S3 client, the
reader and the uploader as data; nothing in this package reads the
environment. Credentials and, when ``endpoint_url`` is None, the endpoint come
from boto3's own chain (``AWS_ACCESS_KEY_ID``/profiles,
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``), as aws-cli users expect.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError, OutputError

S3_SCHEME = "s3://"
MIB = 1024 * 1024
#: S3 and R2 refuse multipart parts below 5 MiB (except the last one).
MIN_PART_BYTES = 5 * MIB
MAX_PART_BYTES = 5 * 1024 * MIB
MAX_PARTS = 10_000

# Bucket names as S3 and R2 accept them (3-63 characters, lower case, digits,
# dots and hyphens, starting and ending with a letter or digit).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_s3_uri(value: object) -> bool:
    """True for a string naming an object-storage location (``s3://...``)."""
    return isinstance(value, str) and value.startswith(S3_SCHEME)


@dataclass(frozen=True, slots=True)
class S3Location:
    """A bucket and a key (an object) or a key prefix (a "directory").

    A prefix is either empty (the bucket's root) or ends with ``/``.
    """

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str, *, prefix: bool = False) -> S3Location:
        """Parse ``s3://bucket/key``; with ``prefix`` the key is a destination prefix.

        Raises :class:`ConfigError` for anything that is not a usable location:
        no bucket, an invalid bucket name, no key for an object, ``..`` parts.
        """
        if not is_s3_uri(uri):
            raise ConfigError("not an s3:// location", context={"location": uri})
        bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise ConfigError("invalid bucket name", context={"location": uri})
        if any(part in (".", "..") for part in key.split("/")):
            raise ConfigError("'.' and '..' are not allowed in an object key", context={"location": uri})
        if prefix:
            key = key.lstrip("/")
            if key and not key.endswith("/"):
                key += "/"
        elif not key or key.endswith("/"):
            raise ConfigError("the location names no object (it ends with '/')", context={"location": uri})
        return cls(bucket=bucket, key=key)

    @property
    def uri(self) -> str:
        """``s3://bucket/key``: safe for messages (no endpoint, no credentials)."""
        return f"{S3_SCHEME}{self.bucket}/{self.key}"

    def join(self, relpath: str) -> S3Location:
        """The object ``relpath`` under this prefix; refuses paths that climb out."""
        if relpath.startswith("/") or ".." in relpath.split("/") or not relpath or relpath.endswith("/"):
            raise OutputError("refusing an object path outside the destination prefix", context={"path": relpath})
        return S3Location(bucket=self.bucket, key=posixpath.join(self.key, relpath) if self.key else relpath)


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageConfig:
    """How to reach object storage and how hard to push it. Holds no secrets.

    Client: ``endpoint_url`` None lets botocore resolve it (``AWS_ENDPOINT_URL_S3``,
    ``AWS_ENDPOINT_URL``, the profile's ``endpoint_url``; else AWS S3).
    ``region`` ``auto`` is what R2 expects. ``profile`` picks a named AWS profile.

    Uploads: at most ``max_concurrency`` requests in flight; objects larger
    than ``multipart_threshold_bytes`` go up in equal parts of
    ``part_size_bytes`` (R2 requires equal parts, >= 5 MiB). ``put`` blocks
    once ``max_pending_upload_bytes`` are queued: that bounds the uploader's
    memory whatever the network does.

    Downloads: ranged GETs of ``read_chunk_bytes``, ``read_ahead_chunks``
    ahead of the reader, ``read_concurrency`` at once. Memory:
    ``(read_ahead_chunks + 2) x read_chunk_bytes`` at most.

    Retries: botocore's standard mode (``attempts_per_call`` attempts per
    call), wrapped in our own retry with full-jitter exponential backoff
    between ``retry_base_delay_s`` and ``retry_max_delay_s`` until
    ``retry_deadline_s`` after the first attempt (botocore's retry quota runs
    out in long outages, and older versions do not retry a plain 429).
    """

    endpoint_url: str | None = None
    region: str = "auto"
    profile: str | None = None
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    max_concurrency: int = 8
    multipart_threshold_bytes: int = 64 * MIB
    part_size_bytes: int = 16 * MIB
    max_pending_upload_bytes: int = 256 * MIB
    read_chunk_bytes: int = 8 * MIB
    read_ahead_chunks: int = 4
    read_concurrency: int = 2
    cache_control_segments: str = "public, max-age=31536000, immutable"
    cache_control_playlists: str = "public, max-age=60"
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    attempts_per_call: int = 3
    retry_deadline_s: float = 300.0
    retry_base_delay_s: float = 0.25
    retry_max_delay_s: float = 20.0

    def __post_init__(self) -> None:
        if self.endpoint_url is not None and not re.match(r"^https?://[^/\s]+", self.endpoint_url):
            raise ConfigError("endpoint URL must be http(s)://host[:port]", context={"endpoint_url": self.endpoint_url})
        if not self.region:
            raise ConfigError("region must not be empty")
        if self.addressing_style not in ("path", "virtual", "auto"):
            raise ConfigError("unknown addressing style", context={"addressing_style": self.addressing_style})
        if not 1 <= self.max_concurrency <= 128:
            raise ConfigError("max_concurrency out of range", context={"max_concurrency": self.max_concurrency})
        if not MIN_PART_BYTES <= self.part_size_bytes <= MAX_PART_BYTES:
            raise ConfigError(
                "part size must be within 5 MiB..5 GiB (S3 and R2 refuse smaller parts)",
                context={"part_size_bytes": self.part_size_bytes},
            )
        if self.multipart_threshold_bytes < MIN_PART_BYTES:
            raise ConfigError(
                "multipart threshold must be >= 5 MiB",
                context={"multipart_threshold_bytes": self.multipart_threshold_bytes},
            )
        if self.max_pending_upload_bytes < 1:
            raise ConfigError("max_pending_upload_bytes must be positive")
        if not 64 * 1024 <= self.read_chunk_bytes <= 1024 * MIB:
            raise ConfigError(
                "read chunk must be within 64 KiB..1 GiB", context={"read_chunk_bytes": self.read_chunk_bytes}
            )
        if not 1 <= self.read_ahead_chunks <= 64:
            raise ConfigError("read_ahead_chunks out of range", context={"read_ahead_chunks": self.read_ahead_chunks})
        if not 1 <= self.read_concurrency <= self.read_ahead_chunks + 1:
            raise ConfigError(
                "read_concurrency must be within 1..read_ahead_chunks + 1",
                context={"read_concurrency": self.read_concurrency},
            )
        if min(self.connect_timeout_s, self.read_timeout_s, self.retry_deadline_s) <= 0:
            raise ConfigError("timeouts and the retry deadline must be positive")
        if not 1 <= self.attempts_per_call <= 20:
            raise ConfigError("attempts_per_call out of range", context={"attempts_per_call": self.attempts_per_call})
        if not 0 <= self.retry_base_delay_s <= self.retry_max_delay_s:
            raise ConfigError("retry delays out of order")
