"""The worker's run: the platform's rules, the transcoding child, the reports, the exit code.

The rules, in order (the API's contract, openapi.json, "The worker's rules"):

1. GET the job. SUCCEEDED, CANCELLED or DEAD: exit 0, touching nothing.
2. The video is READY with an hls_path: report ``complete`` with the video's
   stored result (nothing is uploaded), exit 0.
3. Report ``start`` (a 409 means another worker owns the attempt or the job
   moved on: exit 0).
4. Start the child (``python -m worker.child``). It adopts a whole ladder an
   earlier run of this job left (see worker.layout: a run killed after
   uploading but before reporting), or transcodes the source into this run's
   own prefix. Progress is posted, throttled; a failed post is only logged.
5. Report ``complete`` with what the child read back from storage, exit 0.

Failures are reported with ``fail`` (reason code and retryable flag from
worker.reasons) and end in that reason's exit code. A 409 on ``complete`` or
``fail`` means the job moved on meanwhile: logged, exit 0.

SIGTERM/SIGINT (Batch timeout, TerminateJob, Spot reclaim): the child is asked
to stop (it cancels, aborts its uploads, publishes nothing) and killed if it
is not gone within the grace period less the report's share; then ``fail``
(``terminated``, retryable) is reported with a short deadline and the worker
exits ``TERMINATED``, all within ``WORKER_GRACE_S`` (20 s; ECS sends SIGKILL
30 s after SIGTERM). The worker's own deadline (``WORKER_DEADLINE_S``) ends the
run the same way with ``deadline``. A child that dies without reporting
(segfault, out-of-memory kill) is reported as ``crashed``.

The API being unreachable: the client retries until ``JOB_API_DEADLINE_S``;
before ``start`` the worker can only exit ``API``; at ``complete`` it also
tries to report ``api_unavailable`` (the stored ladder stays, and the retry the
web app schedules adopts it without encoding again).
"""

from __future__ import annotations

import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from api_client import (
    ApiError,
    ApiUnavailableError,
    AuthenticationError,
    CompletionReport,
    ConflictError,
    Job,
    JobApiClient,
    JobState,
    NotFoundError,
    RenditionReport,
)

from .exit_codes import ExitCode
from .layout import RunDir, new_run_tag
from .log import EventLog, Redactor
from .progress import Interrupted, ProgressReporter, interruptible_sleep
from .reasons import REASONS, Reason, reason_for_child_error
from .settings import Settings
from .supervise import CHILD_COMMAND, ChildProcess, describe_status

__all__ = ["WorkerRun", "run"]

_POLL_S = 0.1
_CHILD_EXIT_WAIT_S = 10.0  # after its last event, the child only has to exit
_MAX_STDERR_LINES_LOGGED = 200
# The child needs storage credentials, never the job API's token.
_CHILD_ENV_DROP = ("JOB_API_TOKEN",)


class Terminated(Exception):
    """SIGTERM/SIGINT arrived."""


class DeadlineReached(Exception):
    """WORKER_DEADLINE_S passed."""


class JobMovedOn(Exception):
    """A 409 showed the job is no longer this run's (cancelled, dead, done, superseded)."""

    def __init__(self, conflict: ConflictError) -> None:
        super().__init__(str(conflict))
        self.conflict = conflict


@dataclass(frozen=True, slots=True)
class Failure:
    reason: Reason
    message: str


@dataclass
class ChildOutcome:
    returncode: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None


def run(
    settings: Settings,
    log: EventLog,
    *,
    started: float | None = None,
    environ: Mapping[str, str] | None = None,
    child_command: Sequence[str] = CHILD_COMMAND,
    install_signal_handlers: bool = True,
) -> ExitCode:
    """Run the job ``settings.job_id``; the exit code. Never raises (a bug is ``INTERNAL``)."""
    worker = WorkerRun(
        settings,
        log,
        started=time.monotonic() if started is None else started,
        environ=os.environ if environ is None else environ,
        child_command=child_command,
    )
    if install_signal_handlers:
        with worker.signals_handled():
            return worker.run()
    return worker.run()


class WorkerRun:
    """One run of the worker for one job. ``terminate()`` may be called from a signal handler."""

    def __init__(
        self,
        settings: Settings,
        log: EventLog,
        *,
        started: float,
        environ: Mapping[str, str],
        child_command: Sequence[str] = CHILD_COMMAND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.log = log
        self._started = started
        self._environ = environ
        self._child_command = tuple(child_command)
        self._clock = clock
        self._deadline = started + settings.deadline_s
        self._terminate = threading.Event()
        self._terminated_by = ""
        self._redactor = Redactor(settings.secrets)
        self._client = self._new_client(sleep=interruptible_sleep(self._terminate))
        self._job: Job | None = None
        self._started_reported = False
        self._child: ChildProcess | None = None
        self._timings: dict[str, float] = {}
        self._stats: dict[str, Any] | None = None
        self._reused: bool | None = None
        self._stderr_lines = 0

    # ------------------------------------------------------------ entry points

    def terminate(self, signum: int = signal.SIGTERM) -> None:
        """Ask the run to stop (safe in a signal handler: only sets an event)."""
        if not self._terminate.is_set():
            self._terminated_by = signal.Signals(signum).name
            self._terminate.set()

    @contextmanager
    def signals_handled(self) -> Iterator[None]:
        """SIGTERM and SIGINT call :meth:`terminate` while the block runs (main thread only)."""

        def handler(signum: int, frame: Any) -> None:
            self.terminate(signum)

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def run(self) -> ExitCode:
        code = ExitCode.INTERNAL
        reason: str | None = None
        try:
            code, reason = self._run()
        except BaseException as exc:  # a bug: still report it, and exit with a code
            self.log.error("internal_error", f"{type(exc).__name__}: {exc}", exc_info=True)
            reason = "internal"
            try:
                code = self._fail(REASONS["internal"], f"worker bug: {type(exc).__name__}: {exc}")
            except BaseException:
                self.log.error("failure_not_reported", "reporting the internal error failed", exc_info=True)
        finally:
            if self._child is not None and self._child.returncode is None:
                self._child.kill()
            self._client.close()
            self.log.info(
                "worker_finished",
                exit_code=int(code),
                exit_name=code.name,
                reason_code=reason,
                reused=self._reused,
                timings={**self._timings, "total_s": round(self._clock() - self._started, 3)},
                transcode=self._stats,
            )
        return code

    # --------------------------------------------------------------- the rules

    def _run(self) -> tuple[ExitCode, str | None]:
        settings = self.settings
        self.log.bind(job_id=settings.job_id, batch_job_id=settings.batch_job_id)
        self.log.info(
            "worker_started",
            batch_attempt=settings.batch_attempt,
            output_root=settings.output_root.uri,
            api=settings.api_url,
            deadline_s=settings.deadline_s,
            grace_s=settings.grace_s,
            pid=os.getpid(),
        )
        try:
            return self._rules()
        except Terminated:
            return self._stop_for("terminated", f"stopped by {self._terminated_by or 'a signal'}"), "terminated"
        except DeadlineReached:
            message = f"the worker's deadline of {settings.deadline_s:g} s passed"
            return self._stop_for("deadline", message), "deadline"
        except JobMovedOn as exc:
            self._stop_child()
            self._log_conflict("job_moved_on", exc.conflict)
            return ExitCode.OK, None

    def _rules(self) -> tuple[ExitCode, str | None]:
        settings = self.settings
        job = self._api("get_job", lambda: self._client.get_job(settings.job_id))
        if isinstance(job, ExitCode):
            return job, None
        self._job = job
        self._raise_if_terminated()
        self.log.bind(attempt=job.attempt, video_id=job.video.id)
        self.log.info("job_read", state=job.state.value, video_status=job.video.status.value, phase="checking")

        if job.state is JobState.SUCCEEDED:
            self.log.info("nothing_to_do", "the job already SUCCEEDED", hls_path=job.video.hls_path)
            return ExitCode.OK, None
        if job.state in (JobState.CANCELLED, JobState.DEAD):
            self.log.info("nothing_to_do", f"the job is {job.state.value}", state=job.state.value)
            return ExitCode.OK, None
        stored = job.video.stored_result()
        if stored is not None:
            self.log.info("video_ready", "the video is READY: reporting its stored result", hls_path=stored.hls_path)
            self._reused = True
            return self._complete(stored)
        if job.video.is_ready:
            self.log.warning("video_ready_incomplete", "the video is READY but its stored result is incomplete")

        started = self._api(
            "report_started",
            lambda: self._client.report_started(
                settings.job_id, attempt=job.attempt, batch_job_id=settings.batch_job_id
            ),
        )
        if isinstance(started, ExitCode):
            return started, None
        self._started_reported = True
        self._raise_if_terminated()
        self.log.info("job_started", phase="starting")

        source = self._source(job.video.source_uri)
        if isinstance(source, Failure):
            return self._fail(source.reason, source.message), source.reason.code

        run_dir = RunDir(video_id=job.video.id, job_id=job.id, attempt=job.attempt, run_tag=new_run_tag())
        self.log.bind(output=run_dir.destination(settings.output_root))
        outcome = self._run_child(run_dir, source)
        return self._finish(outcome)

    def _finish(self, outcome: ChildOutcome) -> tuple[ExitCode, str | None]:
        if outcome.result is not None:
            # The ladder was read back whole from storage: a child that died after saying so (a crash at
            # interpreter exit) does not make it less whole.
            if outcome.returncode != 0:
                self.log.warning("child_exit_after_result", describe_status(outcome.returncode))
            result = outcome.result
            self._reused = bool(result.get("reused"))
            stats = result.get("stats")
            self._stats = stats if isinstance(stats, dict) else None
            try:
                report = _completion_report(result.get("report"))
            except (TypeError, ValueError, KeyError) as exc:
                message = f"the child's report is not a valid completion: {exc}"
                return self._fail(REASONS["internal"], message), "internal"
            if self._reused:
                self.log.info("ladder_adopted", "an earlier run left this ladder whole", hls_path=report.hls_path)
            return self._complete(report)
        if outcome.error is not None:
            error = outcome.error
            kind = str(error.get("kind", "internal"))
            if kind == "cancelled":  # signalled by someone else (a process-group signal)
                return self._stop_for("terminated", "the transcoding child was cancelled"), "terminated"
            reason = reason_for_child_error(kind)
            message = f"{error.get('type', 'Error')}: {error.get('message', '')}"
            return self._fail(reason, message), reason.code
        status = describe_status(outcome.returncode)
        tail = self._child.stderr_tail() if self._child is not None else []
        message = f"the transcoding child {status} without reporting a result"
        if tail:
            message += "; stderr tail: " + " | ".join(tail[-5:])
        self.log.error("child_crashed", message, returncode=outcome.returncode, stderr_tail=tail)
        return self._fail(REASONS["crashed"], message), "crashed"

    # ----------------------------------------------------------------- the child

    def _source(self, source_uri: str) -> str | Failure:
        """The child's source: ``s3://...`` as is; a local file (``file:///abs`` or ``/abs``) for local runs only.

        A run writing to S3 (production) never reads local files: a job row
        naming one would otherwise make the worker read its container's files.
        """
        if source_uri.startswith("s3://"):
            return source_uri
        parts = urlsplit(source_uri)
        path = unquote(parts.path)
        if parts.scheme not in ("", "file") or parts.netloc or not Path(path).is_absolute():
            message = f"source {source_uri[:200]!r} is neither an s3:// URI nor an absolute file path"
            return Failure(REASONS["bad_input"], message)
        if self.settings.output_root.is_s3:
            message = f"source {source_uri[:200]!r} refused: local files are read only when HLS_OUTPUT_URI is local"
            return Failure(REASONS["bad_input"], message)
        return path

    def _run_child(self, run_dir: RunDir, source: str) -> ChildOutcome:
        settings = self.settings
        assert self._job is not None
        spec = {
            "source": source,
            "output_root": {"bucket": settings.output_root.bucket, "prefix": settings.output_root.prefix},
            "video_id": run_dir.video_id,
            "job_id": run_dir.job_id,
            "attempt": run_dir.attempt,
            "run_tag": run_dir.run_tag,
            "preset": settings.preset,
            "threads": settings.threads,
            "checkpoint_s": settings.checkpoint_s,
        }
        env = {k: v for k, v in self._environ.items() if k not in _CHILD_ENV_DROP}
        progress_stop = threading.Event()
        progress_client = self._new_client(sleep=interruptible_sleep(progress_stop))
        reporter = ProgressReporter(
            progress_client,
            job_id=settings.job_id,
            attempt=self._job.attempt,
            interval_s=settings.progress_interval_s,
            deadline_s=min(settings.api_deadline_s, max(settings.progress_interval_s, 5.0)),
            log=self.log,
        )
        began = self._clock()
        self.log.info("child_starting", phase="transcoding", preset=settings.preset, threads=settings.threads)
        self._child = ChildProcess(spec, env=env, command=self._child_command, on_stderr=self._child_stderr)
        self.log.info("child_started", child_pid=self._child.pid)
        try:
            return self._supervise(self._child, reporter)
        except (Terminated, DeadlineReached, JobMovedOn):
            self._child.request_stop()  # at once; _stop_child waits for it (and kills it if need be)
            raise
        finally:
            self._timings["child_s"] = round(self._clock() - began, 3)
            progress_stop.set()
            reporter.close()
            progress_client.close()
            self.log.info("progress_summary", posted=reporter.posted, failed=reporter.failed)

    def _supervise(self, child: ChildProcess, reporter: ProgressReporter) -> ChildOutcome:
        result: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        last_logged = -float("inf")
        last_phase = ""
        while True:
            self._check_stop()
            if reporter.moved_on is not None:
                raise JobMovedOn(reporter.moved_on)
            try:
                event = child.events.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if event is None:
                break
            kind = event.get("event")
            if kind == "progress":
                phase = str(event.get("phase") or "transcoding")
                percent = _number(event.get("percent"))
                if phase != "done":
                    reporter.offer(percent, phase)
                now = self._clock()
                if phase != last_phase or now - last_logged >= self.settings.progress_interval_s:
                    last_logged, last_phase = now, phase
                    self.log.bind(phase=phase)
                    facts = {k: event[k] for k in ("done_s", "total_s", "speed") if event.get(k) is not None}
                    self.log.info("progress", phase=phase, percent=percent, **facts)
            elif kind == "log":
                self._relay_log(event)
            elif kind == "result":
                result = event
            elif kind == "error":
                error = event
        # The child closed its stdout: it has only to exit.
        returncode: int | None = None
        waited_until = self._clock() + _CHILD_EXIT_WAIT_S
        while returncode is None:
            self._check_stop()
            returncode = child.wait(min(_POLL_S, max(0.0, waited_until - self._clock())))
            if returncode is None and self._clock() >= waited_until:
                self.log.warning("child_lingering", "the child closed its output but did not exit: killing it")
                returncode = child.kill()
        child.close()
        self.log.info("child_exited", status=describe_status(returncode), returncode=returncode)
        return ChildOutcome(returncode=returncode, result=result, error=error)

    def _raise_if_terminated(self) -> None:
        if self._terminate.is_set():
            raise Terminated()

    def _check_stop(self) -> None:
        self._raise_if_terminated()
        if self._clock() >= self._deadline:
            raise DeadlineReached()

    def _stop_child(self) -> None:
        child = self._child
        if child is None or child.returncode is not None:
            return
        began = self._clock()
        self.log.info("child_stopping", child_pid=child.pid, timeout_s=self.settings.child_stop_s)
        returncode = child.stop(self.settings.child_stop_s)
        child.close(timeout_s=0.5)
        self.log.info("child_stopped", status=describe_status(returncode), took_s=round(self._clock() - began, 3))

    def _stop_for(self, reason_code: str, message: str) -> ExitCode:
        """Stop the child, report ``reason_code`` with a short deadline, return its exit code."""
        reason = REASONS[reason_code]
        self.log.warning("stopping", message, reason_code=reason_code)
        self._stop_child()
        return self._fail(reason, message, deadline_s=self.settings.report_deadline_s)

    # ------------------------------------------------------------------ reports

    def _complete(self, report: CompletionReport) -> tuple[ExitCode, str | None]:
        assert self._job is not None
        job = self._job
        began = self._clock()
        try:
            self._client.report_complete(job.id, attempt=job.attempt, result=report)
        except ConflictError as exc:
            self._log_conflict("complete_refused", exc)
            return ExitCode.OK, None
        except ApiUnavailableError as exc:
            self._timings["complete_s"] = round(self._clock() - began, 3)
            message = (
                f"could not report completion: the job API is unreachable ({exc.message}); "
                f"the ladder stays at {report.hls_path} for the next attempt to adopt"
            )
            self.log.error("complete_failed", message, hls_path=report.hls_path, tries=exc.attempts)
            if self._started_reported:
                self._fail(REASONS["api_unavailable"], message, deadline_s=self.settings.report_deadline_s)
            return ExitCode.API, "api_unavailable"
        except (AuthenticationError, NotFoundError) as exc:
            self.log.error("complete_failed", str(exc), status=exc.status)
            return ExitCode.USAGE, None
        except ApiError as exc:
            self.log.error("complete_failed", str(exc), status=exc.status)
            return ExitCode.API, None
        except Interrupted:
            raise Terminated() from None
        self._timings["complete_s"] = round(self._clock() - began, 3)
        self.log.info(
            "job_completed",
            phase="done",
            hls_path=report.hls_path,
            duration_s=report.duration_s,
            total_bytes=report.total_bytes,
            renditions=[r.name for r in report.renditions],
        )
        return ExitCode.OK, None

    def _fail(self, reason: Reason, message: str, *, deadline_s: float | None = None) -> ExitCode:
        """Report ``fail`` if this run reported ``start``; the reason's exit code either way."""
        message = self._redactor.text(message)
        self.log.error("job_failed", message, reason_code=reason.code, retryable=reason.retryable)
        if self._job is None or not self._started_reported:
            return reason.exit_code
        if not self._terminate.is_set():
            try:
                self._send_failure(self._client, reason, message, deadline_s)
                return reason.exit_code
            except Interrupted:
                pass  # SIGTERM while retrying: report once more, briefly, below
        # The main client gives up at once after SIGTERM: a fresh one, with the grace period's short deadline.
        with self._new_client(sleep=time.sleep) as client:
            self._send_failure(client, reason, message, self.settings.report_deadline_s)
        return reason.exit_code

    def _send_failure(self, client: JobApiClient, reason: Reason, message: str, deadline_s: float | None) -> None:
        """One ``fail`` call; API errors are logged (the exit code tells the rest)."""
        assert self._job is not None
        try:
            client.report_failed(
                self._job.id,
                attempt=self._job.attempt,
                reason_code=reason.code,
                message=message,
                retryable=reason.retryable,
                deadline_s=deadline_s,
            )
            self.log.info("failure_reported", reason_code=reason.code, retryable=reason.retryable)
        except ConflictError as exc:
            self._log_conflict("fail_refused", exc)
        except ApiError as exc:
            self.log.error("failure_not_reported", str(exc), error=type(exc).__name__)

    # ------------------------------------------------------------------ helpers

    def _api(self, name: str, call: Callable[[], Job]) -> Job | ExitCode:
        """One API call before the child runs: its answer, or the exit code that ends the run."""
        began = self._clock()
        try:
            return call()
        except ConflictError as exc:
            self._log_conflict(f"{name}_refused", exc)
            return ExitCode.OK
        except ApiUnavailableError as exc:
            self.log.error("api_unavailable", f"{name}: {exc}", call=name, tries=exc.attempts)
            return ExitCode.API
        except (AuthenticationError, NotFoundError) as exc:
            self.log.error("api_refused", f"{name}: {exc}", call=name, status=exc.status)
            return ExitCode.USAGE
        except ApiError as exc:
            self.log.error("api_error", f"{name}: {exc}", call=name, status=exc.status)
            return ExitCode.API
        except Interrupted:
            raise Terminated() from None
        finally:
            self._timings[f"{name}_s"] = round(self._clock() - began, 3)

    def _log_conflict(self, event: str, exc: ConflictError) -> None:
        self.log.warning(
            event,
            f"the job moved on: {exc}",
            job_state=exc.job_state.value if exc.job_state else None,
            current_attempt=exc.current_attempt,
            code=exc.code,
        )

    def _relay_log(self, event: Mapping[str, Any]) -> None:
        level = str(event.get("level", "info"))
        logger, traceback = event.get("logger"), event.get("traceback")
        message = str(event.get("message", ""))
        if level in ("error", "critical"):
            self.log.error("child_log", message, logger=logger, traceback=traceback)
        elif level == "warning":
            self.log.warning("child_log", message, logger=logger, traceback=traceback)
        else:
            self.log.info("child_log", message, logger=logger, traceback=traceback)

    def _child_stderr(self, line: str) -> None:
        self._stderr_lines += 1
        if self._stderr_lines <= _MAX_STDERR_LINES_LOGGED:
            self.log.warning("child_stderr", line)
        elif self._stderr_lines == _MAX_STDERR_LINES_LOGGED + 1:
            self.log.warning("child_stderr", "more stderr lines follow; only the tail is kept")

    def _new_client(self, *, sleep: Callable[[float], None]) -> JobApiClient:
        return JobApiClient(
            self.settings.api_url,
            self.settings.api_token,
            timeout_s=self.settings.api_timeout_s,
            deadline_s=self.settings.api_deadline_s,
            sleep=sleep,
        )


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _completion_report(data: Any) -> CompletionReport:
    if not isinstance(data, dict):
        raise ValueError("expected an object")
    renditions = data["renditions"]
    if not isinstance(renditions, list):
        raise ValueError("renditions: expected a list")
    return CompletionReport(
        hls_path=str(data["hls_path"]),
        duration_s=float(data["duration_s"]),
        renditions=tuple(RenditionReport.from_json(item, f"renditions[{i}]") for i, item in enumerate(renditions)),
        total_bytes=int(data["total_bytes"]),
        manifest=data.get("manifest"),
    )
