"""Progress posts to the job API, throttled, from a thread of their own.

:class:`ProgressReporter` keeps only the latest progress it was offered and
posts it when ``interval_s`` passed since the last post, or, for a new phase,
when ``min_interval_s`` did (the contract's floor between two posts, phase
changes included: the phases of a short run would otherwise land a fraction
of a second apart). Each post also refreshes the job's heartbeat, which the
web app's stuck-job scan watches. Posting never blocks the worker's main loop, and a failed post
is logged, never fatal. A 409 that shows the job has moved on (CANCELLED, DEAD,
SUCCEEDED, or another attempt is current) is kept in :attr:`moved_on`: the
worker then stops early.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from api_client import PROGRESS_MIN_INTERVAL_S, ApiError, ConflictError, JobApiClient, JobState

from .log import EventLog

__all__ = ["Interrupted", "ProgressReporter", "interruptible_sleep"]

_MOVED_ON_STATES = frozenset({JobState.CANCELLED, JobState.DEAD, JobState.SUCCEEDED})


class Interrupted(Exception):
    """Raised by an :func:`interruptible_sleep` whose event is set: stop retrying, give up the call."""


def interruptible_sleep(event: threading.Event) -> Callable[[float], None]:
    """A ``sleep`` for JobApiClient that raises :class:`Interrupted` once ``event`` is set."""

    def sleep(seconds: float) -> None:
        if event.wait(seconds) or event.is_set():
            raise Interrupted("interrupted while waiting to retry")

    return sleep


class ProgressReporter:
    """Posts the latest progress of one attempt; see the module docstring. ``offer`` is thread-safe."""

    def __init__(
        self,
        client: JobApiClient,
        *,
        job_id: int,
        attempt: int,
        interval_s: float,
        deadline_s: float,
        log: EventLog,
        min_interval_s: float = PROGRESS_MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._job_id = job_id
        self._attempt = attempt
        self._interval_s = interval_s
        self._min_interval_s = min(min_interval_s, interval_s)
        self._deadline_s = deadline_s
        self._log = log
        self._clock = clock
        self._cond = threading.Condition()
        self._pending: tuple[float, str] | None = None
        self._last_phase: str | None = None
        self._last_at = -float("inf")
        self._stopping = False
        self.posted = 0
        self.failed = 0
        self.moved_on: ConflictError | None = None
        self._thread = threading.Thread(target=self._run, name="progress-reporter", daemon=True)
        self._thread.start()

    def offer(self, percent: float, phase: str) -> None:
        with self._cond:
            self._pending = (percent, phase)
            self._cond.notify()

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop posting (a post in flight is not waited for beyond ``timeout_s``)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=timeout_s)

    def _wait_s(self) -> float | None:
        """Seconds until the pending progress is due (0: now); None when nothing is pending."""
        if self._pending is None:
            return None
        gap = self._min_interval_s if self._pending[1] != self._last_phase else self._interval_s
        return max(0.0, self._last_at + gap - self._clock())

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (wait := self._wait_s()) != 0.0:
                    self._cond.wait(wait)
                if self._stopping or self._pending is None:
                    return
                percent, phase = self._pending
                self._pending = None
                self._last_phase, self._last_at = phase, self._clock()
            self._post(percent, phase)

    def _post(self, percent: float, phase: str) -> None:
        try:
            self._client.report_progress(
                self._job_id, attempt=self._attempt, percent=percent, phase=phase, deadline_s=self._deadline_s
            )
            self.posted += 1
        except ConflictError as exc:
            self.failed += 1
            moved = exc.job_state in _MOVED_ON_STATES or (
                exc.current_attempt is not None and exc.current_attempt != self._attempt
            )
            self._log.warning(
                "progress_refused",
                str(exc),
                job_state=exc.job_state.value if exc.job_state else None,
                current_attempt=exc.current_attempt,
                stopping=moved,
            )
            if moved:
                self.moved_on = exc
        except (ApiError, Interrupted) as exc:
            self.failed += 1
            self._log.warning("progress_not_posted", str(exc), error=type(exc).__name__)
        except Exception as exc:  # never let a progress post take the run down
            self.failed += 1
            self._log.error("progress_not_posted", f"{type(exc).__name__}: {exc}", exc_info=True)
