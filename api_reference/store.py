"""The reference job store: the seed's job and video state machine on SQLite.

This is the behaviour the contract (openapi.json, its state tables) describes,
written once so the reference server, the tests and local end-to-end runs
share it. It is a reference and a test peer, not the production API: the web
app implements the same rules with its own models.

Thread-safe: one connection guarded by a lock; every change runs in one
``BEGIN IMMEDIATE`` transaction, so other processes using the same file (the
CLI's admin commands) are serialised by SQLite. Times are epoch seconds from
the injected ``clock``.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from os import PathLike
from typing import Any

from api_client.models import JobState, VideoStatus, manifest_errors

__all__ = ["CallError", "JobStore", "Outcome", "ScanTransition"]

ACTIONS = ("start", "progress", "complete", "fail")
SOURCE_URI_PATTERN = re.compile(r"^(s3|file)://\S+$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS videos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL,
    source_uri TEXT NOT NULL,
    hls_path TEXT,
    duration_s REAL,
    total_bytes INTEGER,
    renditions TEXT NOT NULL DEFAULT '[]',
    manifest TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id INTEGER NOT NULL REFERENCES videos(id),
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    batch_job_id TEXT,
    progress_percent REAL,
    progress_phase TEXT,
    failure_reason_code TEXT,
    failure_message TEXT,
    failure_retryable INTEGER,
    result_hls_path TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    heartbeat_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs(state);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs(id),
    at REAL NOT NULL,
    action TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""


class CallError(Exception):
    """A call the contract refuses; ``body()`` is the error response's JSON."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        job_state: JobState | None = None,
        current_attempt: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.job_state = job_state
        self.current_attempt = current_attempt

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.job_state is not None:
            error["job_state"] = self.job_state.value
            error["current_attempt"] = self.current_attempt
        return {"error": error}


@dataclass(frozen=True, slots=True)
class Outcome:
    """A call's answer: ``replayed`` when it is the stored answer of an earlier call with the same key."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanTransition:
    """One job the stuck-job scan moved; ``to_state`` RETRY_WAIT means "resubmit the Batch job"."""

    job_id: int
    video_id: int
    from_state: JobState
    to_state: JobState
    attempt: int  # the job's attempt after the move
    reason_code: str

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "video_id": self.video_id,
            "from_state": self.from_state.value,
            "to_state": self.to_state.value,
            "attempt": self.attempt,
            "reason_code": self.reason_code,
        }


def iso_time(epoch_s: float) -> str:
    """RFC 3339 UTC with milliseconds and a ``Z``."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _conflict(code: str, message: str, job: sqlite3.Row) -> CallError:
    return CallError(409, code, message, job_state=JobState(job["state"]), current_attempt=job["attempt"])


def _invalid_state(action: str, job: sqlite3.Row) -> CallError:
    return _conflict("invalid_state", f"{action} is not allowed in state {job['state']}", job)


def check_rules(action: str, body: Mapping[str, Any]) -> None:
    """The rules of a schema-valid body that JSON Schema cannot say (400 ``invalid_request``)."""
    if action != "complete":
        return
    names: set[str] = set()
    for index, rendition in enumerate(body["renditions"]):
        where = f"$.renditions[{index}]"
        if rendition["name"] in names:
            raise CallError(400, "invalid_request", f"{where}.name: {rendition['name']!r} is not unique")
        names.add(rendition["name"])
        if (rendition["width"] is None) != (rendition["height"] is None):
            raise CallError(400, "invalid_request", f"{where}: width and height must both be set or both be null")
        if rendition["average_bandwidth_bps"] > rendition["bandwidth_bps"]:
            raise CallError(400, "invalid_request", f"{where}: average_bandwidth_bps exceeds the peak bandwidth_bps")
    if body.get("manifest") is not None:
        errors = manifest_errors(body["manifest"])
        if errors:
            raise CallError(400, "invalid_request", "; ".join(errors[:5]))


class JobStore:
    """Jobs and videos, the worker's calls, and the web app's side (create, scan, cancel).

    ``max_attempts`` is the default for new jobs (each job keeps its own);
    ``stall_after_s`` is how long a RUNNING job may go without a heartbeat
    before the scan calls it stalled; idempotency keys older than
    ``idempotency_ttl_s`` are pruned by the scan.
    """

    def __init__(
        self,
        db_path: str | PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        max_attempts: int = 3,
        stall_after_s: float = 600.0,
        idempotency_ttl_s: float = 86400.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        if stall_after_s <= 0:
            raise ValueError(f"stall_after_s must be > 0, got {stall_after_s}")
        self.clock = clock
        self.max_attempts = max_attempts
        self.stall_after_s = stall_after_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(db_path, timeout=10.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA foreign_keys = ON")
        if str(db_path) != ":memory:":
            self._db.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: no fsync per commit; a power cut may lose the last calls, never corrupt.
            self._db.execute("PRAGMA synchronous = NORMAL")
        with self._lock:
            self._db.executescript(_SCHEMA)
            columns = {row["name"] for row in self._db.execute("PRAGMA table_info(videos)")}
            if "manifest" not in columns:  # a database made before videos kept their manifest
                self._db.execute("ALTER TABLE videos ADD COLUMN manifest TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------ web app side

    def create_job(self, source_uri: str, *, max_attempts: int | None = None) -> int:
        """A new UPLOADED video and its QUEUED job (attempt 1); returns the job id."""
        if not (6 <= len(source_uri) <= 2048 and SOURCE_URI_PATTERN.match(source_uri)):
            raise ValueError(f"source_uri must be s3://bucket/key or file:///path, got {source_uri!r}")
        now = self.clock()
        with self._tx() as db:
            cursor = db.execute(
                "INSERT INTO videos (status, source_uri, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (VideoStatus.UPLOADED.value, source_uri, now, now),
            )
            assert cursor.lastrowid is not None
            return self._insert_job(db, cursor.lastrowid, max_attempts, now)

    def create_job_for_video(self, video_id: int, *, max_attempts: int | None = None) -> int:
        """Another QUEUED job for an existing video (the web app's retry or a duplicate submit)."""
        now = self.clock()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM videos WHERE id = ?", (video_id,)).fetchone() is None:
                raise CallError(404, "not_found", f"video {video_id} does not exist")
            return self._insert_job(db, video_id, max_attempts, now)

    def _insert_job(self, db: sqlite3.Connection, video_id: int, max_attempts: int | None, now: float) -> int:
        limit = self.max_attempts if max_attempts is None else max_attempts
        if not 1 <= limit <= 1000:
            raise ValueError(f"max_attempts must be 1-1000, got {limit}")
        cursor = db.execute(
            "INSERT INTO jobs (video_id, state, attempt, max_attempts, created_at, updated_at) "
            "VALUES (?, ?, 1, ?, ?, ?)",
            (video_id, JobState.QUEUED.value, limit, now, now),
        )
        job_id = cursor.lastrowid
        assert job_id is not None
        self._log(db, job_id, now, "create", None, JobState.QUEUED, 1)
        return job_id

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        """QUEUED, RUNNING, FAILED or RETRY_WAIT -> CANCELLED (video unchanged); CANCELLED stays."""
        now = self.clock()
        with self._tx() as db:
            job = self._job_row(db, job_id)
            state = JobState(job["state"])
            if state in (JobState.SUCCEEDED, JobState.DEAD):
                raise _invalid_state("cancel", job)
            if state is not JobState.CANCELLED:
                self._set_job(db, job, now, "cancel", JobState.CANCELLED)
            return self._job_json(db, job_id)

    def scan_stuck_jobs(self, *, now: float | None = None) -> list[ScanTransition]:
        """The web app's stuck-job scan; returns the jobs it moved, by id.

        RUNNING without a heartbeat for more than ``stall_after_s``: failure
        ``stalled`` recorded, then handled as FAILED. FAILED: RETRY_WAIT with
        attempt + 1 while attempt < max_attempts, else DEAD (video FAILED
        unless READY). Also prunes expired idempotency keys.
        """
        now = self.clock() if now is None else now
        moved: list[ScanTransition] = []
        with self._tx() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE state = ? OR (state = ? AND ? - COALESCE(heartbeat_at, updated_at) > ?) "
                "ORDER BY id",
                (JobState.FAILED.value, JobState.RUNNING.value, now, self.stall_after_s),
            ).fetchall()
            for job in rows:
                before = JobState(job["state"])
                failure: dict[str, Any] = {}
                if before is JobState.RUNNING:
                    silent_s = now - (job["heartbeat_at"] or job["updated_at"])
                    failure = {
                        "failure_reason_code": "stalled",
                        "failure_message": f"no heartbeat for {silent_s:.0f} s (limit {self.stall_after_s:g} s)",
                        "failure_retryable": 1,
                    }
                reason = failure.get("failure_reason_code") or job["failure_reason_code"] or "failed"
                if job["attempt"] < job["max_attempts"]:
                    after, attempt = JobState.RETRY_WAIT, job["attempt"] + 1
                    self._set_job(
                        db,
                        job,
                        now,
                        "scan",
                        after,
                        attempt=attempt,
                        progress_percent=None,
                        progress_phase=None,
                        **failure,
                    )
                else:
                    after, attempt = JobState.DEAD, job["attempt"]
                    self._set_job(db, job, now, "scan", after, **failure)
                    self._video_failed(db, job["video_id"], now)
                moved.append(
                    ScanTransition(
                        job_id=job["id"],
                        video_id=job["video_id"],
                        from_state=before,
                        to_state=after,
                        attempt=attempt,
                        reason_code=reason,
                    )
                )
            db.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (now - self.idempotency_ttl_s,))
        return moved

    def history(self, job_id: int) -> list[dict[str, Any]]:
        """The job's transitions, oldest first (for people debugging a local run)."""
        with self._tx() as db:
            self._job_row(db, job_id)
            rows = db.execute("SELECT * FROM transitions WHERE job_id = ? ORDER BY id", (job_id,)).fetchall()
        return [
            {
                "at": iso_time(row["at"]),
                "action": row["action"],
                "from_state": row["from_state"],
                "to_state": row["to_state"],
                "attempt": row["attempt"],
                "detail": row["detail"],
            }
            for row in rows
        ]

    # -------------------------------------------------------------- the contract

    def video_manifest(self, video_id: int) -> dict[str, Any] | None:
        """The manifest the completion that made the video READY carried (None: none, or no such video).

        Kept out of the job's JSON: every POST answers with the job, and a
        manifest lists thousands of objects.
        """
        with self._tx() as db:
            row = db.execute("SELECT manifest FROM videos WHERE id = ?", (video_id,)).fetchone()
        if row is None or row["manifest"] is None:
            return None
        manifest: dict[str, Any] = json.loads(row["manifest"])
        return manifest

    def get_job(self, job_id: int) -> dict[str, Any]:
        """The job as GET returns it; ``CallError`` 404 if there is none."""
        with self._tx() as db:
            return self._job_json(db, job_id)

    def call(
        self, action: str, job_id: int, body: Mapping[str, Any], *, idempotency_key: str, fingerprint: str
    ) -> Outcome:
        """One worker call with a schema-valid body, under the idempotency rules.

        ``fingerprint`` identifies method, path and body; a stored key with the
        same fingerprint replays its answer, with another one is 422. Only
        successful answers are stored.
        """
        handler = {"start": self._start, "progress": self._progress, "complete": self._complete, "fail": self._fail}[
            action
        ]
        check_rules(action, body)
        now = self.clock()
        with self._tx() as db:
            stored = db.execute(
                "SELECT fingerprint, status, body FROM idempotency_keys WHERE key = ?", (idempotency_key,)
            ).fetchone()
            if stored is not None:
                if stored["fingerprint"] != fingerprint:
                    raise CallError(
                        422,
                        "idempotency_key_reused",
                        f"Idempotency-Key {idempotency_key!r} was used for a different request",
                    )
                return Outcome(stored["status"], json.loads(stored["body"]), replayed=True)
            job = self._job_row(db, job_id)
            if body["attempt"] != job["attempt"]:
                raise _conflict(
                    "attempt_mismatch",
                    f"attempt {body['attempt']} is not the job's current attempt {job['attempt']}",
                    job,
                )
            handler(db, job, body, now)
            answer = self._job_json(db, job_id)
            db.execute(
                "INSERT INTO idempotency_keys (key, fingerprint, status, body, created_at) VALUES (?, ?, ?, ?, ?)",
                (idempotency_key, fingerprint, 200, json.dumps(answer), now),
            )
            return Outcome(200, answer)

    def _start(self, db: sqlite3.Connection, job: sqlite3.Row, body: Mapping[str, Any], now: float) -> None:
        state = JobState(job["state"])
        if state in (JobState.QUEUED, JobState.RETRY_WAIT):
            self._set_job(
                db,
                job,
                now,
                "start",
                JobState.RUNNING,
                detail=f"batch job {body['batch_job_id']}",
                batch_job_id=body["batch_job_id"],
                heartbeat_at=now,
                progress_percent=None,
                progress_phase=None,
                failure_reason_code=None,
                failure_message=None,
                failure_retryable=None,
            )
            db.execute(
                "UPDATE videos SET status = ?, updated_at = ? WHERE id = ? AND status != ?",
                (VideoStatus.PROCESSING.value, now, job["video_id"], VideoStatus.READY.value),
            )
        elif state is JobState.RUNNING and job["batch_job_id"] == body["batch_job_id"]:
            db.execute("UPDATE jobs SET heartbeat_at = ?, updated_at = ? WHERE id = ?", (now, now, job["id"]))
        elif state is JobState.RUNNING:
            raise _conflict(
                "attempt_taken", f"attempt {job['attempt']} was started by Batch job {job['batch_job_id']}", job
            )
        else:
            raise _invalid_state("start", job)

    def _progress(self, db: sqlite3.Connection, job: sqlite3.Row, body: Mapping[str, Any], now: float) -> None:
        if job["state"] != JobState.RUNNING:
            raise _invalid_state("progress", job)
        db.execute(
            "UPDATE jobs SET progress_percent = ?, progress_phase = ?, heartbeat_at = ?, updated_at = ? WHERE id = ?",
            (float(body["percent"]), body["phase"], now, now, job["id"]),
        )

    def _complete(self, db: sqlite3.Connection, job: sqlite3.Row, body: Mapping[str, Any], now: float) -> None:
        state = JobState(job["state"])
        hls_path = body["hls_path"]
        if state is JobState.SUCCEEDED:
            if job["result_hls_path"] != hls_path:
                raise _conflict("result_mismatch", "job already SUCCEEDED with another hls_path", job)
            return
        if state is JobState.RUNNING:
            self._set_job(db, job, now, "complete", JobState.SUCCEEDED, detail=hls_path, result_hls_path=hls_path)
            db.execute(
                "UPDATE videos SET status = ?, hls_path = ?, duration_s = ?, total_bytes = ?, renditions = ?, "
                "manifest = ?, updated_at = ? WHERE id = ?",
                (
                    VideoStatus.READY.value,
                    hls_path,
                    float(body["duration_s"]),
                    int(body["total_bytes"]),
                    json.dumps(body["renditions"]),
                    None if body.get("manifest") is None else json.dumps(body["manifest"], separators=(",", ":")),
                    now,
                    job["video_id"],
                ),
            )
            return
        video = db.execute("SELECT status, hls_path FROM videos WHERE id = ?", (job["video_id"],)).fetchone()
        if (
            state in (JobState.QUEUED, JobState.RETRY_WAIT)
            and video["status"] == VideoStatus.READY
            and video["hls_path"] == hls_path
        ):
            self._set_job(
                db, job, now, "complete", JobState.SUCCEEDED, detail=f"adopted {hls_path}", result_hls_path=hls_path
            )
            return
        raise _invalid_state("complete", job)

    def _fail(self, db: sqlite3.Connection, job: sqlite3.Row, body: Mapping[str, Any], now: float) -> None:
        if job["state"] != JobState.RUNNING:
            raise _invalid_state("fail", job)
        after = JobState.FAILED if body["retryable"] else JobState.DEAD
        self._set_job(
            db,
            job,
            now,
            "fail",
            after,
            detail=body["reason_code"],
            failure_reason_code=body["reason_code"],
            failure_message=body["message"],
            failure_retryable=int(body["retryable"]),
        )
        if after is JobState.DEAD:
            self._video_failed(db, job["video_id"], now)

    # ------------------------------------------------------------------ helpers

    def _job_row(self, db: sqlite3.Connection, job_id: int) -> sqlite3.Row:
        row: sqlite3.Row | None = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise CallError(404, "job_not_found", f"video job {job_id} does not exist")
        return row

    def _set_job(
        self,
        db: sqlite3.Connection,
        job: sqlite3.Row,
        now: float,
        action: str,
        state: JobState,
        *,
        detail: str = "",
        **columns: Any,
    ) -> None:
        columns = {"state": state.value, "updated_at": now, **columns}
        assignments = ", ".join(f"{name} = ?" for name in columns)  # names are ours, never the caller's
        db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*columns.values(), job["id"]))
        attempt = columns.get("attempt", job["attempt"])
        self._log(db, job["id"], now, action, JobState(job["state"]), state, attempt, detail)

    def _log(
        self,
        db: sqlite3.Connection,
        job_id: int,
        now: float,
        action: str,
        before: JobState | None,
        after: JobState,
        attempt: int,
        detail: str = "",
    ) -> None:
        db.execute(
            "INSERT INTO transitions (job_id, at, action, from_state, to_state, attempt, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job_id, now, action, None if before is None else before.value, after.value, attempt, detail),
        )

    def _video_failed(self, db: sqlite3.Connection, video_id: int, now: float) -> None:
        db.execute(
            "UPDATE videos SET status = ?, updated_at = ? WHERE id = ? AND status != ?",
            (VideoStatus.FAILED.value, now, video_id, VideoStatus.READY.value),
        )

    def _job_json(self, db: sqlite3.Connection, job_id: int) -> dict[str, Any]:
        job = self._job_row(db, job_id)
        video = db.execute("SELECT * FROM videos WHERE id = ?", (job["video_id"],)).fetchone()
        failure = None
        if job["failure_reason_code"] is not None:
            failure = {
                "reason_code": job["failure_reason_code"],
                "message": job["failure_message"],
                "retryable": bool(job["failure_retryable"]),
            }
        return {
            "id": job["id"],
            "state": job["state"],
            "attempt": job["attempt"],
            "max_attempts": job["max_attempts"],
            "batch_job_id": job["batch_job_id"],
            "progress": {"percent": job["progress_percent"], "phase": job["progress_phase"]},
            "failure": failure,
            "created_at": iso_time(job["created_at"]),
            "updated_at": iso_time(job["updated_at"]),
            "heartbeat_at": None if job["heartbeat_at"] is None else iso_time(job["heartbeat_at"]),
            "video": {
                "id": video["id"],
                "status": video["status"],
                "source_uri": video["source_uri"],
                "hls_path": video["hls_path"],
                "duration_s": video["duration_s"],
                "total_bytes": video["total_bytes"],
                "renditions": json.loads(video["renditions"]),
            },
        }
