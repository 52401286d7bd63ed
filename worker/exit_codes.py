"""The worker's exit codes: one table, shared by the worker and the Batch job definition.

Batch never retries (retryStrategy attempts = 1); the web app's stuck-job
scan decides. The code still tells an operator reading the Batch console what
happened, and ``RETRYABLE`` says whether a retry could help.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # done, or nothing to do (job already SUCCEEDED, CANCELLED or DEAD; video already READY)
    INTERNAL = 1  # a bug in the worker
    USAGE = 2  # missing job id, API URL or token, bad settings
    BAD_INPUT = 3  # the source is not a usable video
    MEDIA = 4  # decoding/encoding failed on accepted input
    STORAGE = 5  # reading the source or writing the ladder failed (network, R2)
    TERMINATED = 6  # SIGTERM (Batch timeout, TerminateJob, Spot reclaim)
    API = 7  # the job API could not be reached or refused a report
    DEADLINE = 8  # the worker's own deadline passed before the job timeout
    CRASHED = 9  # the transcoding child died (segfault, out-of-memory kill)


RETRYABLE: frozenset[ExitCode] = frozenset(
    {ExitCode.STORAGE, ExitCode.TERMINATED, ExitCode.API, ExitCode.DEADLINE, ExitCode.CRASHED}
)
