"""Failure reasons: the code reported to the API, whether a retry could help, the exit code.

One table (:data:`REASONS`). The reported ``retryable`` flag and the exit
code always agree with ``worker.exit_codes.RETRYABLE``: a test checks it.

============== ========= ========== ====================================================================
reason_code    retryable exit code  when
============== ========= ========== ====================================================================
bad_input      no        3          the source is not a usable video (or missing, or not allowed)
media_error    no        4          decoding/encoding failed on accepted input
storage_error  yes       5          object storage kept failing (network, 5xx, 429), or the local disk
storage_denied no        2          the storage refused the credentials/permissions, or a bucket is missing
config_error   no        2          the transcoder refused a setting
terminated     yes       6          SIGTERM/SIGINT (Batch timeout, TerminateJob, Spot reclaim)
deadline       yes       8          the worker's own deadline (WORKER_DEADLINE_S) passed
crashed        yes       9          the transcoding child died (segfault, out-of-memory kill) or broke protocol
api_unavailable yes      7          the job API could not take the completion report
internal       no        1          a bug in the worker
============== ========= ========== ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

from .exit_codes import ExitCode

__all__ = ["REASONS", "Reason", "reason_for_child_error"]


@dataclass(frozen=True, slots=True)
class Reason:
    code: str  # the API's reason_code: [a-z][a-z0-9_]*
    retryable: bool
    exit_code: ExitCode


REASONS: dict[str, Reason] = {
    reason.code: reason
    for reason in (
        Reason("bad_input", False, ExitCode.BAD_INPUT),
        Reason("media_error", False, ExitCode.MEDIA),
        Reason("storage_error", True, ExitCode.STORAGE),
        Reason("storage_denied", False, ExitCode.USAGE),
        Reason("config_error", False, ExitCode.USAGE),
        Reason("terminated", True, ExitCode.TERMINATED),
        Reason("deadline", True, ExitCode.DEADLINE),
        Reason("crashed", True, ExitCode.CRASHED),
        Reason("api_unavailable", True, ExitCode.API),
        Reason("internal", False, ExitCode.INTERNAL),
    )
}

# The child's error kinds (worker.child classifies transcoder errors) -> reason codes.
_CHILD_KINDS = {
    "input": "bad_input",
    "media": "media_error",
    "storage": "storage_error",
    "storage_denied": "storage_denied",
    "output": "storage_error",
    "config": "config_error",
    "crashed": "crashed",  # MemoryError inside the child
    "internal": "internal",
}


def reason_for_child_error(kind: str) -> Reason:
    """The reason for an error event of the child (``cancelled`` is decided by the parent, not here)."""
    return REASONS[_CHILD_KINDS.get(kind, "internal")]
