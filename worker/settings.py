"""The worker's settings: read from the environment (and argv) once, checked, frozen.

Every setting, its default and its meaning is in :data:`ENVIRONMENT` (the
README's table is rendered from the same text). A missing or bad value is a
:class:`SettingsError` naming every problem at once; the worker then exits
``ExitCode.USAGE`` with one JSON log line, before it touches the job.

Storage is configured the way boto3 and aws-cli users expect, and read by
botocore itself in the transcoding child: credentials from
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (or a role), the endpoint from
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``. The worker reads the AWS secrets
only to keep them out of its logs.

This module imports nothing media- or storage-related (the worker's parent
process never loads PyAV or boto3).
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "ENVIRONMENT",
    "X264_PRESETS",
    "OutputRoot",
    "Settings",
    "SettingsError",
    "read_settings",
]

DEFAULT_DEADLINE_S = 14400.0 - 600.0  # the job definition's 4 h timeout, less 10 min to report
DEFAULT_PROGRESS_INTERVAL_S = 30.0
DEFAULT_GRACE_S = 20.0
DEFAULT_API_TIMEOUT_S = 10.0
DEFAULT_API_DEADLINE_S = 60.0

#: x264's presets (as ``transcoder.config.X264_PRESETS``; a test keeps them equal). Repeated here
#: so a bad WORKER_PRESET fails before the job is touched, without importing the engine.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")

#: name -> (required, meaning). The single description of the worker's environment.
ENVIRONMENT: dict[str, tuple[bool, str]] = {
    "JOB_API_URL": (True, "root URL of the job API, e.g. https://api.example.com (no user info, no query)"),
    "JOB_API_TOKEN": (True, "bearer token of the job API (inject as a Batch secret; never logged)"),
    "VIDEO_JOB_ID": (False, "the job id, when it is not the first command-line argument"),
    "HLS_OUTPUT_URI": (True, "where ladders go: s3://bucket/prefix/ (or a local directory for local runs)"),
    "AWS_BATCH_JOB_ID": (False, "set by Batch; reported to the API with start (default: local-<random>)"),
    "AWS_BATCH_JOB_ATTEMPT": (False, "set by Batch (always 1: Batch never retries); logged"),
    "WORKER_DEADLINE_S": (False, f"the worker's own deadline, from its start (default {DEFAULT_DEADLINE_S:g})"),
    "WORKER_PROGRESS_INTERVAL_S": (
        False,
        f"least seconds between progress posts (default {DEFAULT_PROGRESS_INTERVAL_S:g})",
    ),
    "WORKER_GRACE_S": (False, f"seconds from SIGTERM to exit, reporting included (default {DEFAULT_GRACE_S:g})"),
    "JOB_API_TIMEOUT_S": (
        False,
        f"one API request's timeout (default {DEFAULT_API_TIMEOUT_S:g}; at most WORKER_GRACE_S / 2)",
    ),
    "JOB_API_DEADLINE_S": (False, f"one API call with its retries (default {DEFAULT_API_DEADLINE_S:g})"),
    "TRANSCODE_THREADS": (False, "CPU budget of the transcode (default: the affinity mask / cgroup quota)"),
    "WORKER_PRESET": (False, "x264 preset (default: the engine's, veryfast)"),
    "WORKER_CHECKPOINT_S": (
        False,
        "timeline seconds per checkpoint record: what a killed run can lose (default: the engine's, 30)",
    ),
}

_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BATCH_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{0,127}$")
_TOKEN = re.compile(r"^[!-~]+$")
# Environment variables whose values never appear in a log line.
_SECRET_NAMES = ("JOB_API_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


class SettingsError(ValueError):
    """One or more settings are missing or bad; ``problems`` lists each (names, never values of secrets)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class OutputRoot:
    """Where every ladder goes: an ``s3://bucket/prefix/`` or a local directory.

    ``bucket`` is None for a local directory; ``prefix`` is then the absolute
    directory path ending in ``/``. For S3 it is the key prefix ("" or ending in
    ``/``).
    """

    bucket: str | None
    prefix: str

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    @property
    def uri(self) -> str:
        """``s3://bucket/prefix/`` or the directory path: safe for logs."""
        return f"s3://{self.bucket}/{self.prefix}" if self.bucket is not None else self.prefix

    @classmethod
    def parse(cls, value: str) -> OutputRoot:
        """``s3://bucket[/prefix]`` or a local directory path (made absolute); ``ValueError`` if unusable."""
        if value.startswith("s3://"):
            bucket, _, key = value[len("s3://") :].partition("/")
            if not _S3_BUCKET.match(bucket) or ".." in bucket:
                raise ValueError("HLS_OUTPUT_URI: invalid bucket name")
            key = key.lstrip("/")
            if any(part in (".", "..") for part in key.split("/")) or any(c.isspace() for c in key):
                raise ValueError("HLS_OUTPUT_URI: '.', '..' and spaces are not allowed in the prefix")
            if key and not key.endswith("/"):
                key += "/"
            return cls(bucket=bucket, prefix=key)
        if "://" in value:
            raise ValueError("HLS_OUTPUT_URI: must be s3://bucket/prefix/ or a local directory")
        if not value:
            raise ValueError("HLS_OUTPUT_URI: empty")
        path = str(Path(value).expanduser().absolute())
        return cls(bucket=None, prefix=path.rstrip("/") + "/")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the worker reads from its environment. ``repr`` shows no secret."""

    job_id: int
    api_url: str
    api_token: str = field(repr=False)
    output_root: OutputRoot
    batch_job_id: str
    batch_attempt: int
    deadline_s: float = DEFAULT_DEADLINE_S
    progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S
    grace_s: float = DEFAULT_GRACE_S
    api_timeout_s: float = DEFAULT_API_TIMEOUT_S
    api_deadline_s: float = DEFAULT_API_DEADLINE_S
    threads: int | None = None
    preset: str | None = None
    checkpoint_s: float | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)  # values the log must never show

    @property
    def report_deadline_s(self) -> float:
        """The API deadline of the failure report after SIGTERM (short: the grace period is running)."""
        return min(5.0, self.grace_s / 4)

    @property
    def child_stop_s(self) -> float:
        """How long a cancelled child may take to stop before it is killed."""
        return max(1.0, self.grace_s - self.report_deadline_s - 1.5)


def read_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``argv`` (the job id may be ``argv[0]``) and ``environ`` (default ``os.environ``).

    Raises :class:`SettingsError` listing every missing or bad value.
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []
    reader = _Reader(env, problems)

    args = [arg for arg in argv if arg]
    if len(args) > 1:
        problems.append(f"expected at most one argument (the job id), got {len(args)}")
    raw_job = args[0] if args else env.get("VIDEO_JOB_ID", "").strip()
    job_id = 0
    if not raw_job:
        problems.append("the job id is missing: give it as the argument or in VIDEO_JOB_ID")
    elif not raw_job.isdigit() or not 1 <= int(raw_job) <= 10**18:
        problems.append(f"the job id must be a positive integer, got {raw_job[:40]!r}")
    else:
        job_id = int(raw_job)

    api_url = reader.required("JOB_API_URL")
    if api_url:
        parts = urlsplit(api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append("JOB_API_URL must be an http(s) URL with a host")
        elif parts.username is not None or parts.password is not None or parts.query or parts.fragment:
            problems.append("JOB_API_URL must not carry user info, a query or a fragment (keep secrets out of URLs)")
    token = reader.required("JOB_API_TOKEN")
    if token and not _TOKEN.match(token):
        problems.append("JOB_API_TOKEN must be visible ASCII without spaces")

    output_root = OutputRoot(bucket=None, prefix="/")
    raw_output = reader.required("HLS_OUTPUT_URI")
    if raw_output:
        try:
            output_root = OutputRoot.parse(raw_output)
        except ValueError as exc:
            problems.append(str(exc))

    batch_job_id = env.get("AWS_BATCH_JOB_ID", "").strip() or f"local-{uuid.uuid4().hex[:12]}"
    if not _BATCH_JOB_ID.match(batch_job_id):
        problems.append("AWS_BATCH_JOB_ID must be 1-128 of [A-Za-z0-9:._-]")
    batch_attempt = reader.integer("AWS_BATCH_JOB_ATTEMPT", 1, low=1)

    deadline_s = reader.seconds("WORKER_DEADLINE_S", DEFAULT_DEADLINE_S)
    progress_interval_s = reader.seconds("WORKER_PROGRESS_INTERVAL_S", DEFAULT_PROGRESS_INTERVAL_S)
    grace_s = reader.seconds("WORKER_GRACE_S", DEFAULT_GRACE_S)
    api_timeout_s = reader.seconds("JOB_API_TIMEOUT_S", DEFAULT_API_TIMEOUT_S)
    api_deadline_s = reader.seconds("JOB_API_DEADLINE_S", DEFAULT_API_DEADLINE_S)
    if grace_s < 4:
        problems.append("WORKER_GRACE_S must be >= 4 (stopping the transcode and reporting take time)")
    if api_timeout_s > grace_s / 2:
        # A request in flight when SIGTERM arrives must end in time to report within the grace period.
        problems.append("JOB_API_TIMEOUT_S must be at most WORKER_GRACE_S / 2")
    threads = reader.integer("TRANSCODE_THREADS", None, low=1, high=256)
    preset = env.get("WORKER_PRESET", "").strip() or None
    if preset is not None and preset not in X264_PRESETS:
        problems.append(f"WORKER_PRESET must be one of {', '.join(X264_PRESETS)}")

    checkpoint_s = reader.seconds("WORKER_CHECKPOINT_S", 0.0) or None
    if checkpoint_s is not None and not 1 <= checkpoint_s <= 3600:
        problems.append("WORKER_CHECKPOINT_S must be within 1..3600 seconds")

    if problems:
        raise SettingsError(problems)
    secrets = tuple(value for name in _SECRET_NAMES if len(value := env.get(name, "")) >= 4)
    return Settings(
        job_id=job_id,
        api_url=api_url.rstrip("/"),
        api_token=token,
        output_root=output_root,
        batch_job_id=batch_job_id,
        batch_attempt=batch_attempt or 1,
        deadline_s=deadline_s,
        progress_interval_s=progress_interval_s,
        grace_s=grace_s,
        api_timeout_s=api_timeout_s,
        api_deadline_s=api_deadline_s,
        threads=threads,
        preset=preset,
        checkpoint_s=checkpoint_s,
        secrets=secrets,
    )


def secret_values(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The secret values in ``environ``, for redacting logs written before settings are read."""
    env = os.environ if environ is None else environ
    return tuple(value for name in _SECRET_NAMES if len(value := env.get(name, "")) >= 4)


class _Reader:
    """Typed reads that collect problems instead of raising at the first."""

    def __init__(self, env: Mapping[str, str], problems: list[str]) -> None:
        self._env = env
        self._problems = problems

    def required(self, name: str) -> str:
        value = self._env.get(name, "").strip()
        if not value:
            self._problems.append(f"{name} is missing")
        return value

    def seconds(self, name: str, default: float) -> float:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            self._problems.append(f"{name} must be a positive number of seconds, got {raw[:40]!r}")
            return default
        return value

    def integer(self, name: str, default: int | None, *, low: int, high: int = 10**6) -> int | None:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        if not raw.isdigit() or not low <= int(raw) <= high:
            self._problems.append(f"{name} must be an integer in {low}..{high}, got {raw[:40]!r}")
            return default
        return int(raw)
