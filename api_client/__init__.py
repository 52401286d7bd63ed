"""The job API contract, a typed client, and a reference server.

- ``openapi.json`` (read with ``schema.load_openapi()``): the HTTP contract the platform's Django web app
  implements, with the job/video state tables and examples for every call.
- ``JobApiClient``: the worker's client (urllib3; timeouts, jittered retries up to a deadline, typed results).
- The reference server that implements the contract for local runs and tests is the separate ``api_reference``
  package (not shipped in the worker image).

This package imports neither ``transcoder`` nor ``worker``.
"""

from __future__ import annotations

from .client import JobApiClient
from .errors import (
    ApiError,
    ApiUnavailableError,
    AuthenticationError,
    ConflictError,
    InvalidResponseError,
    NotFoundError,
)
from .models import (
    PROGRESS_MIN_INTERVAL_S,
    TERMINAL_JOB_STATES,
    WORKER_REASON_CODES,
    CompletionReport,
    Failure,
    Job,
    JobState,
    Progress,
    RenditionReport,
    Video,
    VideoStatus,
)

__all__ = [
    "PROGRESS_MIN_INTERVAL_S",
    "TERMINAL_JOB_STATES",
    "WORKER_REASON_CODES",
    "ApiError",
    "ApiUnavailableError",
    "AuthenticationError",
    "CompletionReport",
    "ConflictError",
    "Failure",
    "InvalidResponseError",
    "Job",
    "JobApiClient",
    "JobState",
    "NotFoundError",
    "Progress",
    "RenditionReport",
    "Video",
    "VideoStatus",
]
