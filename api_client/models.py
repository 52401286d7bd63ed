"""Value objects of the job contract: what the API returns and what the worker reports.

Frozen, keyword-only dataclasses. Report types (``CompletionReport``,
``RenditionReport``) check themselves in ``__post_init__`` (``ValueError``), so
a bad report fails in the worker, not as a 400 after a network round trip.
Response types are built by ``Job.from_json``, which checks every field's type
and raises ``ValueError`` naming the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from .schema import load_openapi, schema_errors

__all__ = [
    "PROGRESS_MIN_INTERVAL_S",
    "TERMINAL_JOB_STATES",
    "WORKER_REASON_CODES",
    "CompletionReport",
    "Failure",
    "Job",
    "JobState",
    "Progress",
    "RenditionReport",
    "Video",
    "VideoStatus",
    "manifest_errors",
]

# The same rules as the schemas in openapi.json (tests check they agree).
HLS_PATH_PATTERN = re.compile(r"^(?!/)(?!(?:.*/)?\.{1,2}/)[^\s\\]*[^\s\\/]\.m3u8$")
RENDITION_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CODE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")  # reason codes and phases
BATCH_JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]*$")
MAX_MESSAGE_CHARS = 4000

_CONTRACT = load_openapi()
#: The reason codes a worker may report (``WorkerReasonCode`` in openapi.json, the one source).
WORKER_REASON_CODES: frozenset[str] = frozenset(_CONTRACT["components"]["schemas"]["WorkerReasonCode"]["enum"])
#: The least time between two progress posts of one worker, phase changes included.
PROGRESS_MIN_INTERVAL_S: float = float(
    _CONTRACT["paths"]["/api/v1/video-jobs/{job_id}/progress"]["post"]["x-min-interval-s"]
)
del _CONTRACT

_E = TypeVar("_E", bound=StrEnum)


def manifest_errors(document: Any) -> list[str]:
    """Every way ``document`` breaks the contract's ``Manifest``: its schema, then the rules a schema cannot say.

    The rules: keys are unique; only the manifest's own entry (the key named
    by ``manifest``) has null ``bytes`` and ``sha256``, every other entry has
    both; ``master`` and ``manifest`` are listed; ``total_bytes`` is the sum of
    the listed sizes. Empty when it conforms.
    """
    contract = load_openapi()
    errors = schema_errors(document, contract["components"]["schemas"]["Manifest"], contract, "$.manifest")
    if errors:
        return errors
    own = document["manifest"]
    keys = [entry["key"] for entry in document["objects"]]
    if len(set(keys)) != len(keys):
        errors.append("$.manifest.objects: a key is listed more than once")
    for index, entry in enumerate(document["objects"]):
        unsized = entry["bytes"] is None or entry["sha256"] is None
        if unsized != (entry["key"] == own):
            errors.append(
                f"$.manifest.objects[{index}]: only the manifest's own entry has null bytes and sha256"
                if unsized
                else f"$.manifest.objects[{index}]: the manifest's own entry must have null bytes and sha256"
            )
    for name in ("master", "manifest"):
        if document[name] not in keys:
            errors.append(f"$.manifest.{name}: {document[name]!r} is not listed in objects")
    if document["total_bytes"] != sum(entry["bytes"] or 0 for entry in document["objects"]):
        errors.append("$.manifest.total_bytes: not the sum of the listed sizes")
    return errors


class JobState(StrEnum):
    """VideoTranscodeJob.state; see the state table in openapi.json."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"  # the attempt failed retryably; the stuck-job scan decides
    RETRY_WAIT = "RETRY_WAIT"  # the scan granted another attempt; waiting for the resubmitted Batch job
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_JOB_STATES


TERMINAL_JOB_STATES: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})


class VideoStatus(StrEnum):
    """Video.status: UPLOADED -> PROCESSING -> READY or FAILED."""

    UPLOADED = "UPLOADED"
    PROCESSING = "PROCESSING"
    READY = "READY"
    FAILED = "FAILED"


def _positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RenditionReport:
    """One variant of the master playlist, bitrates measured from the written segments.

    ``bandwidth_bps`` is the peak segment bitrate (BANDWIDTH),
    ``average_bandwidth_bps`` the average (AVERAGE-BANDWIDTH), both bits per
    second. ``width``/``height`` are None together, for an audio-only variant.
    """

    name: str
    width: int | None
    height: int | None
    bandwidth_bps: int
    average_bandwidth_bps: int
    codecs: str

    def __post_init__(self) -> None:
        if not (1 <= len(self.name) <= 64 and RENDITION_NAME_PATTERN.match(self.name)):
            raise ValueError(f"rendition name {self.name!r} must be 1-64 of [A-Za-z0-9._-], not starting with . _ -")
        if (self.width is None) != (self.height is None):
            raise ValueError(f"rendition {self.name}: width and height must both be set or both be None")
        for label, size in (("width", self.width), ("height", self.height)):
            if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 16384):
                raise ValueError(f"rendition {self.name}: {label} must be 1-16384, got {size!r}")
        _positive_int(self.bandwidth_bps, f"rendition {self.name}: bandwidth_bps")
        _positive_int(self.average_bandwidth_bps, f"rendition {self.name}: average_bandwidth_bps")
        if self.average_bandwidth_bps > self.bandwidth_bps:
            raise ValueError(
                f"rendition {self.name}: average_bandwidth_bps {self.average_bandwidth_bps} exceeds "
                f"the peak bandwidth_bps {self.bandwidth_bps}"
            )
        if not 1 <= len(self.codecs) <= 128:
            raise ValueError(f"rendition {self.name}: codecs must be 1-128 characters")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "bandwidth_bps": self.bandwidth_bps,
            "average_bandwidth_bps": self.average_bandwidth_bps,
            "codecs": self.codecs,
        }

    @classmethod
    def from_json(cls, data: Any, path: str = "rendition") -> RenditionReport:
        fields = _Fields(data, path)
        return cls(
            name=fields.text("name"),
            width=fields.opt_integer("width"),
            height=fields.opt_integer("height"),
            bandwidth_bps=fields.integer("bandwidth_bps"),
            average_bandwidth_bps=fields.integer("average_bandwidth_bps"),
            codecs=fields.text("codecs"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CompletionReport:
    """What ``complete`` records: the master playlist key and the measured ladder.

    ``hls_path`` is the object key of the master playlist (relative, ending in
    ``.m3u8``); ``duration_s`` seconds of media; ``total_bytes`` every object
    written. Rendition names must be unique. ``manifest`` is the ladder's
    ``manifest.json`` document (the contract's ``Manifest``; checked with
    :func:`manifest_errors`), None for a ladder that has none. Treat it as
    read-only.
    """

    hls_path: str
    duration_s: float
    renditions: tuple[RenditionReport, ...]
    total_bytes: int
    manifest: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not (6 <= len(self.hls_path) <= 1024 and HLS_PATH_PATTERN.match(self.hls_path)):
            raise ValueError(f"hls_path {self.hls_path!r} must be a relative object key ending in .m3u8")
        if (
            isinstance(self.duration_s, bool)
            or not isinstance(self.duration_s, (int, float))
            or not math.isfinite(self.duration_s)
            or not 0 < self.duration_s <= 1_000_000
        ):
            raise ValueError(f"duration_s must be in (0, 1e6], got {self.duration_s!r}")
        if not isinstance(self.renditions, tuple) or not 1 <= len(self.renditions) <= 32:
            raise ValueError("renditions must be a tuple of 1-32 RenditionReport")
        names = [rendition.name for rendition in self.renditions]
        if len(set(names)) != len(names):
            raise ValueError(f"rendition names must be unique: {names}")
        _positive_int(self.total_bytes, "total_bytes")
        if self.manifest is not None:
            errors = manifest_errors(self.manifest)
            if errors:
                raise ValueError("manifest: " + "; ".join(errors[:5]))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "hls_path": self.hls_path,
            "duration_s": float(self.duration_s),
            "renditions": [rendition.to_json() for rendition in self.renditions],
            "total_bytes": self.total_bytes,
        }
        if self.manifest is not None:
            body["manifest"] = self.manifest
        return body


@dataclass(frozen=True, slots=True, kw_only=True)
class Video:
    """The video a job transcodes. ``hls_path`` and the result fields are set once READY."""

    id: int
    status: VideoStatus
    source_uri: str  # s3://bucket/key (R2 through the S3 API) or file:///path for local runs
    hls_path: str | None
    duration_s: float | None
    total_bytes: int | None
    renditions: tuple[RenditionReport, ...]

    @property
    def is_ready(self) -> bool:
        """READY with a master playlist: the worker's idempotency rule 2 applies."""
        return self.status is VideoStatus.READY and bool(self.hls_path)

    def stored_result(self) -> CompletionReport | None:
        """The READY video's recorded result, to echo in ``complete`` (rule 2); None if incomplete."""
        if not self.is_ready or self.hls_path is None or self.duration_s is None or self.total_bytes is None:
            return None
        if not self.renditions:
            return None
        return CompletionReport(
            hls_path=self.hls_path,
            duration_s=self.duration_s,
            renditions=self.renditions,
            total_bytes=self.total_bytes,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """The last progress report of the current attempt (both None before the first)."""

    percent: float | None
    phase: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """The last failure recorded on the job (by ``fail`` or by the scan: ``stalled``)."""

    reason_code: str
    message: str
    retryable: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A VideoTranscodeJob as the API returns it (GET and every successful POST)."""

    id: int
    state: JobState
    attempt: int
    max_attempts: int
    batch_job_id: str | None
    progress: Progress
    failure: Failure | None
    created_at: datetime
    updated_at: datetime
    heartbeat_at: datetime | None
    video: Video

    @property
    def is_terminal(self) -> bool:
        return self.state.is_terminal

    @classmethod
    def from_json(cls, data: Any) -> Job:
        """Build from the decoded JSON body; ``ValueError`` names the first bad field."""
        fields = _Fields(data, "job")
        progress = _Fields(fields.get("progress"), "job.progress")
        failure_data = fields.get("failure")
        failure = None
        if failure_data is not None:
            failure_fields = _Fields(failure_data, "job.failure")
            failure = Failure(
                reason_code=failure_fields.text("reason_code"),
                message=failure_fields.text("message"),
                retryable=failure_fields.boolean("retryable"),
            )
        video = _Fields(fields.get("video"), "job.video")
        renditions = video.get("renditions")
        if not isinstance(renditions, list):
            raise ValueError("job.video.renditions: expected a list")
        return cls(
            id=fields.integer("id"),
            state=fields.choice("state", JobState),
            attempt=fields.integer("attempt"),
            max_attempts=fields.integer("max_attempts"),
            batch_job_id=fields.opt_text("batch_job_id"),
            progress=Progress(percent=progress.opt_number("percent"), phase=progress.opt_text("phase")),
            failure=failure,
            created_at=fields.time("created_at"),
            updated_at=fields.time("updated_at"),
            heartbeat_at=fields.opt_time("heartbeat_at"),
            video=Video(
                id=video.integer("id"),
                status=video.choice("status", VideoStatus),
                source_uri=video.text("source_uri"),
                hls_path=video.opt_text("hls_path"),
                duration_s=video.opt_number("duration_s"),
                total_bytes=video.opt_integer("total_bytes"),
                renditions=tuple(
                    RenditionReport.from_json(item, f"job.video.renditions[{index}]")
                    for index, item in enumerate(renditions)
                ),
            ),
        )


class _Fields:
    """Typed reads from a decoded JSON object; errors name the field's path."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected an object, got {type(data).__name__}")
        self._data = data
        self._path = path

    def get(self, name: str) -> Any:
        if name not in self._data:
            raise ValueError(f"{self._path}.{name}: missing")
        return self._data[name]

    def _fail(self, name: str, expected: str) -> ValueError:
        return ValueError(f"{self._path}.{name}: expected {expected}, got {self._data.get(name)!r}"[:300])

    def integer(self, name: str) -> int:
        value = self.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(name, "an integer")
        return value

    def opt_integer(self, name: str) -> int | None:
        return None if self.get(name) is None else self.integer(name)

    def opt_number(self, name: str) -> float | None:
        value = self.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._fail(name, "a number")
        return float(value)

    def text(self, name: str) -> str:
        value = self.get(name)
        if not isinstance(value, str):
            raise self._fail(name, "a string")
        return value

    def opt_text(self, name: str) -> str | None:
        return None if self.get(name) is None else self.text(name)

    def boolean(self, name: str) -> bool:
        value = self.get(name)
        if not isinstance(value, bool):
            raise self._fail(name, "a boolean")
        return value

    def choice(self, name: str, kind: type[_E]) -> _E:
        value = self.text(name)
        try:
            return kind(value)
        except ValueError:
            raise self._fail(name, f"one of {[member.value for member in kind]}") from None

    def time(self, name: str) -> datetime:
        value = self.text(name)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise self._fail(name, "an RFC 3339 date-time") from None
        if parsed.tzinfo is None:
            raise self._fail(name, "a date-time with a time zone")
        return parsed

    def opt_time(self, name: str) -> datetime | None:
        return None if self.get(name) is None else self.time(name)
