"""The contract and its reference server, over real HTTP on loopback.

Every reply to a contract path is checked against the response schema that
openapi.json documents for that operation and status, so these tests also
prove the document describes what the server does. The state table of the
document is replayed row by row; the stuck-job scan runs on an injected clock.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3

from api_client.models import BATCH_JOB_ID_PATTERN, CODE_PATTERN, HLS_PATH_PATTERN, RENDITION_NAME_PATTERN
from api_client.schema import load_openapi, resolve, schema_errors
from api_reference import ReferenceServer
from api_reference.server import MAX_COMPLETE_BODY_BYTES

TOKEN = "test-token-5f3c9a1e7d2b4c68"
ADMIN_TOKEN = "admin-token-0b1c2d3e4f5a6b7c"
SOURCE = "file:///srv/uploads/lecture-01.mp4"
HLS = "videos/1/hls/job-1-attempt-1/master.m3u8"
START_S = 1_746_090_000.0  # 2025-05-01T09:00:00Z
STALL_S = 600.0
DOC = load_openapi()
REPO = Path(__file__).resolve().parents[2]

RENDITIONS = [
    {
        "name": "720p",
        "width": 1280,
        "height": 720,
        "bandwidth_bps": 3_000_000,
        "average_bandwidth_bps": 2_400_000,
        "codecs": "avc1.64001f,mp4a.40.2",
    },
    {
        "name": "360p",
        "width": 640,
        "height": 360,
        "bandwidth_bps": 900_000,
        "average_bandwidth_bps": 700_000,
        "codecs": "avc1.64001e,mp4a.40.2",
    },
]


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = START_S) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: urllib3.HTTPHeaderDict


def _operation(method: str, path: str) -> dict[str, Any] | None:
    for template, item in DOC["paths"].items():
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            operation: dict[str, Any] | None = item.get(method.lower())
            return operation
    return None


def check_against_contract(method: str, path: str, reply: Reply) -> None:
    """The reply's status is documented for the operation and its body matches that schema."""
    operation = _operation(method, path)
    if operation is None:
        return  # admin and health paths are not part of the contract
    responses = operation["responses"]
    documented = responses.get(str(reply.status)) or responses.get(f"{str(reply.status)[0]}XX")
    assert documented is not None, f"{method} {path} answered {reply.status}, which the contract does not document"
    if "$ref" in documented:
        documented = resolve(DOC, documented["$ref"])
    schema = documented["content"]["application/json"]["schema"]
    errors = schema_errors(reply.body, schema, DOC)
    assert not errors, f"{method} {path} -> {reply.status}: {errors}"
    assert reply.headers.get("Content-Type") == "application/json"


class Api:
    """Raw HTTP calls (no client library): what a Django view must answer."""

    def __init__(self, server: ReferenceServer) -> None:
        self.server = server
        self.http = urllib3.PoolManager(retries=False)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        key: str | None = "new",
        raw: bytes | None = None,
    ) -> Reply:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if method == "POST" and key is not None:
            headers["Idempotency-Key"] = uuid.uuid4().hex if key == "new" else key
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        response = self.http.request(method, self.server.url + path, body=data, headers=headers, timeout=5.0)
        parsed = json.loads(response.data) if response.data else None
        reply = Reply(response.status, parsed, response.headers)
        check_against_contract(method, path, reply)
        return reply

    def get(self, job_id: int, **kwargs: Any) -> Reply:
        return self.request("GET", f"/api/v1/video-jobs/{job_id}", **kwargs)

    def job(self, job_id: int) -> dict[str, Any]:
        reply = self.get(job_id)
        assert reply.status == 200
        body: dict[str, Any] = reply.body
        return body

    def post(self, job_id: int, action: str, body: Any, **kwargs: Any) -> Reply:
        return self.request("POST", f"/api/v1/video-jobs/{job_id}/{action}", body, **kwargs)

    # The worker's calls with valid bodies; ``attempt`` defaults to the job's current one.
    def _attempt(self, job_id: int, attempt: int | None) -> int:
        return attempt if attempt is not None else int(self.job(job_id)["attempt"])

    def body(self, action: str, job_id: int, attempt: int | None = None, **changes: Any) -> dict[str, Any]:
        bodies: dict[str, dict[str, Any]] = {
            "start": {"batch_job_id": "batch-a"},
            "progress": {"percent": 50.0, "phase": "transcoding"},
            "complete": {"hls_path": HLS, "duration_s": 600.5, "renditions": RENDITIONS, "total_bytes": 225_000_000},
            "fail": {"reason_code": "storage_error", "message": "something broke", "retryable": True},
        }
        return {"attempt": self._attempt(job_id, attempt), **bodies[action], **changes}

    def call(
        self, action: str, job_id: int, attempt: int | None = None, *, key: str | None = "new", **changes: Any
    ) -> Reply:
        token = changes.pop("token", TOKEN)
        return self.post(job_id, action, self.body(action, job_id, attempt, **changes), key=key, token=token)

    def start(self, job_id: int, attempt: int | None = None, **changes: Any) -> Reply:
        return self.call("start", job_id, attempt, **changes)

    def progress(self, job_id: int, attempt: int | None = None, **changes: Any) -> Reply:
        return self.call("progress", job_id, attempt, **changes)

    def complete(self, job_id: int, attempt: int | None = None, **changes: Any) -> Reply:
        return self.call("complete", job_id, attempt, **changes)

    def fail(self, job_id: int, attempt: int | None = None, retryable: bool = True, **changes: Any) -> Reply:
        if not retryable:
            changes = {"reason_code": "bad_input", "retryable": False, **changes}
        return self.call("fail", job_id, attempt, **changes)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(tmp_path: Path, clock: FakeClock) -> Iterator[ReferenceServer]:
    with ReferenceServer(
        tmp_path / "jobs.db", TOKEN, admin_token=ADMIN_TOKEN, clock=clock, max_attempts=3, stall_after_s=STALL_S
    ) as running:
        yield running


@pytest.fixture
def api(server: ReferenceServer) -> Api:
    return Api(server)


def job_in(state: str, server: ReferenceServer, api: Api) -> int:
    """A fresh job driven to ``state`` through the API and the web app's actions."""
    job_id = server.create_job(SOURCE)
    if state == "QUEUED":
        return job_id
    if state == "CANCELLED":
        server.cancel_job(job_id)
        return job_id
    assert api.start(job_id).status == 200
    if state == "SUCCEEDED":
        assert api.complete(job_id).status == 200
    elif state in ("FAILED", "RETRY_WAIT"):
        assert api.fail(job_id, retryable=True).status == 200
        if state == "RETRY_WAIT":
            assert [t.job_id for t in server.scan_stuck_jobs()] == [job_id]
    elif state == "DEAD":
        assert api.fail(job_id, retryable=False).status == 200
    assert api.job(job_id)["state"] == state
    return job_id


CALLS = ("start", "progress", "complete", "fail")

# The state table of openapi.json: (call, job state before) -> (status, job state after, video status after).
STATE_TABLE: dict[tuple[str, str], tuple[int, str, str]] = {
    ("start", "QUEUED"): (200, "RUNNING", "PROCESSING"),
    ("start", "RUNNING"): (200, "RUNNING", "PROCESSING"),  # same batch_job_id: a harmless repeat
    ("start", "RETRY_WAIT"): (200, "RUNNING", "PROCESSING"),
    ("start", "SUCCEEDED"): (409, "SUCCEEDED", "READY"),
    ("start", "FAILED"): (409, "FAILED", "PROCESSING"),
    ("start", "DEAD"): (409, "DEAD", "FAILED"),
    ("start", "CANCELLED"): (409, "CANCELLED", "UPLOADED"),
    ("progress", "QUEUED"): (409, "QUEUED", "UPLOADED"),
    ("progress", "RUNNING"): (200, "RUNNING", "PROCESSING"),
    ("progress", "RETRY_WAIT"): (409, "RETRY_WAIT", "PROCESSING"),
    ("progress", "SUCCEEDED"): (409, "SUCCEEDED", "READY"),
    ("progress", "FAILED"): (409, "FAILED", "PROCESSING"),
    ("progress", "DEAD"): (409, "DEAD", "FAILED"),
    ("progress", "CANCELLED"): (409, "CANCELLED", "UPLOADED"),
    ("complete", "QUEUED"): (409, "QUEUED", "UPLOADED"),  # the video is not READY: start first
    ("complete", "RUNNING"): (200, "SUCCEEDED", "READY"),
    ("complete", "RETRY_WAIT"): (409, "RETRY_WAIT", "PROCESSING"),
    ("complete", "SUCCEEDED"): (200, "SUCCEEDED", "READY"),  # same hls_path: idempotent
    ("complete", "FAILED"): (409, "FAILED", "PROCESSING"),
    ("complete", "DEAD"): (409, "DEAD", "FAILED"),
    ("complete", "CANCELLED"): (409, "CANCELLED", "UPLOADED"),
    ("fail", "QUEUED"): (409, "QUEUED", "UPLOADED"),
    ("fail", "RUNNING"): (200, "FAILED", "PROCESSING"),
    ("fail", "RETRY_WAIT"): (409, "RETRY_WAIT", "PROCESSING"),
    ("fail", "SUCCEEDED"): (409, "SUCCEEDED", "READY"),
    ("fail", "FAILED"): (409, "FAILED", "PROCESSING"),
    ("fail", "DEAD"): (409, "DEAD", "FAILED"),
    ("fail", "CANCELLED"): (409, "CANCELLED", "UPLOADED"),
}


def test_state_table_covers_every_call_in_every_state() -> None:
    states = DOC["components"]["schemas"]["JobState"]["enum"]
    assert set(STATE_TABLE) == {(call, state) for call in CALLS for state in states}


@pytest.mark.parametrize(("call", "before"), sorted(STATE_TABLE))
def test_state_table(call: str, before: str, server: ReferenceServer, api: Api, clock: FakeClock) -> None:
    status, after, video_after = STATE_TABLE[(call, before)]
    job_id = job_in(before, server, api)
    previous = api.job(job_id)
    clock.now += 5
    reply = api.call(call, job_id)
    assert reply.status == status, reply.body
    job = api.job(job_id)
    assert (job["state"], job["video"]["status"]) == (after, video_after)
    if status == 409:
        assert reply.body["error"] == {
            "code": "invalid_state",
            "message": f"{call} is not allowed in state {before}",
            "job_state": before,
            "current_attempt": previous["attempt"],
        }
        assert job == previous, "a refused call changes nothing"
    else:
        assert reply.body == job


def test_happy_path(server: ReferenceServer, api: Api, clock: FakeClock) -> None:
    job_id = server.create_job(SOURCE)
    job = api.job(job_id)
    assert job["state"] == "QUEUED" and job["attempt"] == 1 and job["max_attempts"] == 3
    assert job["video"] == {
        "id": job["video"]["id"],
        "status": "UPLOADED",
        "source_uri": SOURCE,
        "hls_path": None,
        "duration_s": None,
        "total_bytes": None,
        "renditions": [],
    }
    assert job["created_at"] == "2025-05-01T09:00:00.000Z" and job["heartbeat_at"] is None

    clock.now += 10
    job = api.start(job_id, attempt=1, batch_job_id="batch-a").body
    assert (job["state"], job["batch_job_id"], job["video"]["status"]) == ("RUNNING", "batch-a", "PROCESSING")
    assert job["heartbeat_at"] == "2025-05-01T09:00:10.000Z"

    clock.now += 60
    job = api.progress(job_id, attempt=1, percent=37.5).body
    assert job["progress"] == {"percent": 37.5, "phase": "transcoding"}
    assert job["heartbeat_at"] == job["updated_at"] == "2025-05-01T09:01:10.000Z"

    job = api.complete(job_id, attempt=1).body
    assert job["state"] == "SUCCEEDED"
    assert job["video"] == {
        "id": job["video"]["id"],
        "status": "READY",
        "source_uri": SOURCE,
        "hls_path": HLS,
        "duration_s": 600.5,
        "total_bytes": 225_000_000,
        "renditions": RENDITIONS,
    }
    assert [(t["action"], t["to_state"]) for t in server.store.history(job_id)] == [
        ("create", "QUEUED"),
        ("start", "RUNNING"),
        ("complete", "SUCCEEDED"),
    ]
    # Terminal: the scan leaves it alone however much time passes.
    assert server.scan_stuck_jobs(now=clock.now + 10 * STALL_S) == []


def test_start_by_another_batch_job_is_refused(server: ReferenceServer, api: Api) -> None:
    job_id = job_in("RUNNING", server, api)  # started by batch-a
    reply = api.start(job_id, batch_job_id="batch-b")
    assert reply.status == 409
    assert reply.body["error"]["code"] == "attempt_taken"
    assert reply.body["error"]["job_state"] == "RUNNING"
    assert api.job(job_id)["batch_job_id"] == "batch-a"


def test_concurrent_starts_have_one_winner(server: ReferenceServer) -> None:
    job_id = server.create_job(SOURCE)
    barrier = threading.Barrier(4)
    replies: list[Reply] = []

    def race(name: str) -> None:
        api = Api(server)
        barrier.wait()
        replies.append(api.start(job_id, attempt=1, batch_job_id=name))

    threads = [threading.Thread(target=race, args=(f"batch-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(reply.status for reply in replies) == [200, 409, 409, 409]
    assert {reply.body["error"]["code"] for reply in replies if reply.status == 409} == {"attempt_taken"}


def test_stale_attempt_is_refused_after_the_scan_moved_on(server: ReferenceServer, api: Api, clock: FakeClock) -> None:
    job_id = job_in("RUNNING", server, api)
    clock.now += STALL_S + 1  # the worker went silent (OOM kill, lost instance)
    [moved] = server.scan_stuck_jobs()
    assert (moved.from_state, moved.to_state, moved.attempt, moved.reason_code) == (
        "RUNNING",
        "RETRY_WAIT",
        2,
        "stalled",
    )
    assert api.start(job_id, attempt=2, batch_job_id="batch-b").status == 200

    # The old worker wakes up: every call of attempt 1 is refused, and says what is current.
    for reply in (
        api.progress(job_id, attempt=1),
        api.complete(job_id, attempt=1),
        api.fail(job_id, attempt=1),
        api.start(job_id, attempt=1, batch_job_id="batch-a"),
    ):
        assert reply.status == 409
        assert reply.body["error"]["code"] == "attempt_mismatch"
        assert (reply.body["error"]["job_state"], reply.body["error"]["current_attempt"]) == ("RUNNING", 2)
    job = api.job(job_id)
    assert (job["state"], job["attempt"], job["batch_job_id"]) == ("RUNNING", 2, "batch-b")
    assert api.complete(job_id, attempt=2, hls_path="videos/1/hls/job-1-attempt-2/master.m3u8").status == 200


def test_scan_retries_failures_until_the_attempt_limit_then_dead(
    server: ReferenceServer, api: Api, clock: FakeClock
) -> None:
    job_id = job_in("RUNNING", server, api)
    for attempt in (1, 2):
        assert api.fail(job_id, attempt=attempt, retryable=True).body["state"] == "FAILED"
        clock.now += 30
        [moved] = server.scan_stuck_jobs()
        assert (moved.to_state, moved.attempt, moved.reason_code) == ("RETRY_WAIT", attempt + 1, "storage_error")
        job = api.job(job_id)
        assert (job["state"], job["attempt"], job["video"]["status"]) == ("RETRY_WAIT", attempt + 1, "PROCESSING")
        assert job["failure"] == {"reason_code": "storage_error", "message": "something broke", "retryable": True}
        assert server.scan_stuck_jobs() == []  # RETRY_WAIT waits for the resubmitted Batch job
        job = api.start(job_id, attempt=attempt + 1, batch_job_id=f"batch-{attempt + 1}").body
        assert job["failure"] is None and job["progress"] == {"percent": None, "phase": None}
    assert api.fail(job_id, attempt=3, retryable=True).status == 200
    [moved] = server.scan_stuck_jobs()
    assert (moved.from_state, moved.to_state, moved.attempt) == ("FAILED", "DEAD", 3)
    job = api.job(job_id)
    assert (job["state"], job["video"]["status"]) == ("DEAD", "FAILED")


def test_scan_detects_stalls_by_heartbeat(server: ReferenceServer, api: Api, clock: FakeClock) -> None:
    job_id = server.create_job(SOURCE, max_attempts=2)
    api.start(job_id)
    clock.now += STALL_S  # exactly at the limit: not yet stalled
    assert server.scan_stuck_jobs() == []
    assert api.progress(job_id).status == 200  # the heartbeat restarts the stall clock
    assert server.scan_stuck_jobs(now=clock.now + STALL_S) == []
    [moved] = server.scan_stuck_jobs(now=clock.now + STALL_S + 0.5)
    assert (moved.to_state, moved.attempt) == ("RETRY_WAIT", 2)
    failure = api.job(job_id)["failure"]
    assert failure["reason_code"] == "stalled" and failure["retryable"] is True
    assert "600" in failure["message"]

    clock.now += 2 * STALL_S
    api.start(job_id, attempt=2, batch_job_id="batch-b")
    clock.now += STALL_S + 1
    [moved] = server.scan_stuck_jobs()  # attempt 2 of 2 stalled too
    assert (moved.from_state, moved.to_state, moved.attempt) == ("RUNNING", "DEAD", 2)
    assert api.job(job_id)["video"]["status"] == "FAILED"


def test_non_retryable_failure_is_dead_at_once(server: ReferenceServer, api: Api) -> None:
    job_id = job_in("RUNNING", server, api)
    job = api.fail(job_id, retryable=False).body
    assert (job["state"], job["video"]["status"]) == ("DEAD", "FAILED")
    assert job["failure"] == {"reason_code": "bad_input", "message": "something broke", "retryable": False}
    assert server.scan_stuck_jobs() == []


def test_a_ready_video_stays_ready_when_another_job_fails(server: ReferenceServer, api: Api) -> None:
    first = job_in("SUCCEEDED", server, api)
    video_id = api.job(first)["video"]["id"]
    second = server.create_job_for_video(video_id)
    assert api.start(second).body["video"]["status"] == "READY"
    job = api.fail(second, retryable=False).body
    assert (job["state"], job["video"]["status"], job["video"]["hls_path"]) == ("DEAD", "READY", HLS)


def test_a_job_for_a_ready_video_completes_by_adopting_its_result(server: ReferenceServer, api: Api) -> None:
    """The worker's rule 2: the video is READY with an hls_path -> report complete (no start)."""
    first = job_in("SUCCEEDED", server, api)
    video = api.job(first)["video"]
    second = server.create_job_for_video(video["id"])
    other = api.complete(second, hls_path="videos/1/hls/job-2-attempt-1/master.m3u8")
    assert other.status == 409 and other.body["error"]["code"] == "invalid_state"
    job = api.complete(second).body  # the READY video's hls_path
    assert (job["state"], job["video"]) == ("SUCCEEDED", video)
    assert server.store.history(second)[-1]["detail"] == f"adopted {HLS}"


def test_complete_is_idempotent_for_the_same_result_only(server: ReferenceServer, api: Api) -> None:
    job_id = job_in("SUCCEEDED", server, api)
    before = api.job(job_id)
    again = api.complete(job_id)  # a new Idempotency-Key: not a replay, a repeat
    assert again.status == 200 and again.body == before and "Idempotent-Replayed" not in again.headers
    other = api.complete(job_id, hls_path="videos/1/hls/job-1-attempt-9/master.m3u8")
    assert other.status == 409 and other.body["error"]["code"] == "result_mismatch"
    assert api.job(job_id) == before


def test_idempotent_replay(server: ReferenceServer, api: Api, clock: FakeClock) -> None:
    job_id = job_in("RUNNING", server, api)
    body = {"attempt": 1, "percent": 10.0, "phase": "transcoding"}
    first = api.post(job_id, "progress", body, key="progress-key-1")
    assert first.status == 200 and "Idempotent-Replayed" not in first.headers

    clock.now += 30
    assert api.complete(job_id).status == 200
    # The same key and body, even spelled differently, replays the first answer unchanged.
    spelled = b'{ "phase": "transcoding",  "percent": 10.0, "attempt": 1 }'
    replay = api.request("POST", f"/api/v1/video-jobs/{job_id}/progress", raw=spelled, key="progress-key-1")
    assert replay.status == 200 and replay.body == first.body
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert api.job(job_id)["state"] == "SUCCEEDED"

    changed = api.post(job_id, "progress", {**body, "percent": 11.0}, key="progress-key-1")
    assert changed.status == 422 and changed.body["error"]["code"] == "idempotency_key_reused"
    elsewhere = api.fail(job_id, attempt=1, key="progress-key-1")  # the same key on another path
    assert elsewhere.status == 422


def test_errors_are_not_stored_under_the_key(server: ReferenceServer, api: Api) -> None:
    job_id = server.create_job(SOURCE)
    body = {"attempt": 1, "percent": 5.0, "phase": "downloading"}
    assert api.post(job_id, "progress", body, key="k-early").status == 409  # not started yet
    api.start(job_id)
    assert api.post(job_id, "progress", body, key="k-early").status == 200  # evaluated afresh


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "missing 'attempt'"),
        ({"attempt": 1, "percent": 104.2, "phase": "transcoding"}, "$.percent: 104.2 is greater than the maximum 100"),
        ({"attempt": 1, "percent": 1, "phase": "Transcoding"}, "$.phase"),
        ({"attempt": 0, "percent": 1, "phase": "x"}, "$.attempt"),
        ({"attempt": True, "percent": 1, "phase": "x"}, "$.attempt: expected integer"),
        ({"attempt": 1, "percent": 1, "phase": "x", "eta_s": 3}, "unexpected property 'eta_s'"),
        ([1, 2], "expected object"),
    ],
)
def test_invalid_bodies_are_400(body: Any, message: str, server: ReferenceServer, api: Api) -> None:
    job_id = job_in("RUNNING", server, api)
    reply = api.post(job_id, "progress", body)
    assert reply.status == 400
    assert reply.body["error"]["code"] == "invalid_request"
    assert message in reply.body["error"]["message"]


@pytest.mark.parametrize("code", ["storage", "stalled", "media"])
def test_a_worker_may_report_only_the_contracts_reason_codes(code: str, server: ReferenceServer, api: Api) -> None:
    # "stalled" is the scan's own code; "storage" and "media" were the document's old examples.
    job_id = job_in("RUNNING", server, api)
    reply = api.fail(job_id, reason_code=code)
    assert reply.status == 400
    assert "$.reason_code" in reply.body["error"]["message"]
    assert api.job(job_id)["state"] == "RUNNING"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hls_path": "/abs/master.m3u8"}, "$.hls_path"),
        ({"hls_path": "videos/../master.m3u8"}, "$.hls_path"),
        ({"hls_path": "videos/1/master.mpd"}, "$.hls_path"),
        ({"renditions": []}, "at least 1 items"),
        ({"renditions": [RENDITIONS[0], RENDITIONS[0]]}, "is not unique"),
        ({"renditions": [{**RENDITIONS[0], "average_bandwidth_bps": 3_000_001}]}, "exceeds the peak"),
        ({"renditions": [{**RENDITIONS[0], "width": None}]}, "both be set or both be null"),
        ({"duration_s": 0}, "$.duration_s"),
    ],
)
def test_complete_rules(change: dict[str, Any], message: str, server: ReferenceServer, api: Api) -> None:
    job_id = job_in("RUNNING", server, api)
    body = {"attempt": 1, "hls_path": HLS, "duration_s": 1.0, "renditions": RENDITIONS, "total_bytes": 1, **change}
    reply = api.post(job_id, "complete", body)
    assert reply.status == 400, reply.body
    assert message in reply.body["error"]["message"]
    assert api.job(job_id)["state"] == "RUNNING"


def test_protocol_errors(server: ReferenceServer, api: Api) -> None:
    job_id = job_in("RUNNING", server, api)
    path = f"/api/v1/video-jobs/{job_id}/progress"
    body = {"attempt": 1, "percent": 1.0, "phase": "x"}
    missing_key = api.request("POST", path, body, key=None)
    assert missing_key.status == 400 and missing_key.body["error"]["code"] == "idempotency_key_required"
    bad_key = api.request("POST", path, body, key="has space")
    assert bad_key.status == 400 and bad_key.body["error"]["code"] == "idempotency_key_required"
    for raw in (b"{not json", b'{"attempt": NaN}', b"\xff\xfe"):
        reply = api.request("POST", path, raw=raw)
        assert reply.status == 400 and reply.body["error"]["code"] == "invalid_request"
    huge = api.request("POST", path, raw=b" " * (64 * 1024 + 1))
    assert huge.status == 413 and huge.body["error"]["code"] == "payload_too_large"
    hopeless = api.request("POST", path, raw=b" " * (64 * 1024 + 1024 * 1024 + 1))  # too big even to drain
    assert hopeless.status == 413 and hopeless.headers.get("Connection") == "close"
    assert api.get(987654).status == 404
    assert api.get(987654).body["error"]["code"] == "job_not_found"
    assert api.post(987654, "start", {"attempt": 1, "batch_job_id": "b"}).status == 404
    wrong_method = api.request("DELETE", f"/api/v1/video-jobs/{job_id}")
    assert wrong_method.status == 405 and wrong_method.body["error"]["code"] == "method_not_allowed"
    assert api.request("GET", "/api/v2/nothing").status == 404
    assert api.request("GET", "/healthz", token=None).body == {"ok": True}
    assert api.progress(job_id).status == 200  # the connection pool survived all of the above


def test_auth(server: ReferenceServer, api: Api) -> None:
    job_id = server.create_job(SOURCE)
    for token in (None, "wrong-token", TOKEN + "x", ADMIN_TOKEN):
        for reply in (api.get(job_id, token=token), api.start(job_id, attempt=1, token=token)):
            assert reply.status == 401
            assert reply.body["error"]["code"] == "unauthorized"
            assert reply.headers["WWW-Authenticate"] == 'Bearer realm="video-jobs"'
            assert TOKEN not in json.dumps(reply.body) and TOKEN not in str(reply.headers)
    assert api.job(job_id)["state"] == "QUEUED"
    # Admin calls take the admin token, and only it.
    assert api.request("POST", "/admin/v1/scan", {}, token=TOKEN).status == 401
    assert api.request("POST", "/admin/v1/scan", {}, token=ADMIN_TOKEN).status == 200


def test_admin_http(server: ReferenceServer, api: Api, clock: FakeClock) -> None:
    created = api.request("POST", "/admin/v1/jobs", {"source_uri": SOURCE, "max_attempts": 1}, token=ADMIN_TOKEN)
    assert created.status == 201
    job_id = created.body["id"]
    assert not schema_errors(created.body, DOC["components"]["schemas"]["Job"], DOC)
    assert created.body["max_attempts"] == 1
    bad = api.request("POST", "/admin/v1/jobs", {"source_uri": "http://x/y.mp4"}, token=ADMIN_TOKEN)
    assert bad.status == 400
    api.start(job_id)
    scan = api.request("POST", "/admin/v1/scan", {"now": clock.now + STALL_S + 1}, token=ADMIN_TOKEN)
    assert scan.body == {
        "transitions": [
            {
                "job_id": job_id,
                "video_id": created.body["video"]["id"],
                "from_state": "RUNNING",
                "to_state": "DEAD",
                "attempt": 1,
                "reason_code": "stalled",
            }
        ]
    }
    again = api.request("POST", f"/admin/v1/videos/{created.body['video']['id']}/jobs", {}, token=ADMIN_TOKEN)
    assert again.status == 201 and again.body["video"]["id"] == created.body["video"]["id"]
    cancelled = api.request("POST", f"/admin/v1/jobs/{again.body['id']}/cancel", {}, token=ADMIN_TOKEN)
    assert cancelled.body["state"] == "CANCELLED"
    dead = api.request("POST", f"/admin/v1/jobs/{job_id}/cancel", {}, token=ADMIN_TOKEN)
    assert dead.status == 409
    history = api.request("GET", f"/admin/v1/jobs/{job_id}/history", token=ADMIN_TOKEN).body["transitions"]
    assert [step["to_state"] for step in history] == ["QUEUED", "RUNNING", "DEAD"]


# ----------------------------------------------------------- the document itself


def _media_examples(node: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], Any]]:
    """(name, schema, value) of every example under a requestBody or response object."""
    if "$ref" in node:
        node = resolve(DOC, node["$ref"])
    for media in node.get("content", {}).values():
        for name, example in media.get("examples", {}).items():
            yield name, media["schema"], example["value"]


def _operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            yield path, method.upper(), operation


def test_every_call_and_response_has_examples_that_match_their_schemas() -> None:
    seen = 0
    for path, method, operation in _operations():
        bodies = [operation["requestBody"]] if "requestBody" in operation else []
        for where in [*bodies, *operation["responses"].values()]:
            examples = list(_media_examples(where))
            assert examples, f"{method} {path}: a request or response without examples"
            for name, schema, value in examples:
                assert not schema_errors(value, schema, DOC), f"{method} {path} example {name}"
                seen += 1
    assert seen > 40


def test_the_models_use_the_documents_patterns() -> None:
    schemas = DOC["components"]["schemas"]
    assert HLS_PATH_PATTERN.pattern == schemas["HlsPath"]["pattern"]
    assert RENDITION_NAME_PATTERN.pattern == schemas["Rendition"]["properties"]["name"]["pattern"]
    assert all(CODE_PATTERN.match(code) for code in schemas["WorkerReasonCode"]["enum"])
    assert CODE_PATTERN.pattern == schemas["ProgressRequest"]["properties"]["phase"]["pattern"]
    assert BATCH_JOB_ID_PATTERN.pattern == schemas["StartRequest"]["properties"]["batch_job_id"]["pattern"]


def _same_shape(actual: Any, example: Any, where: str = "$") -> None:
    """Objects have the same keys at every level (a null may stand for an object)."""
    if isinstance(actual, dict) and isinstance(example, dict):
        assert set(actual) == set(example), f"{where}: {sorted(actual)} != {sorted(example)}"
        for key in actual:
            _same_shape(actual[key], example[key], f"{where}.{key}")
    elif isinstance(actual, list) and isinstance(example, list):
        for index, (item, sample) in enumerate(zip(actual, example, strict=False)):
            _same_shape(item, sample, f"{where}[{index}]")


@pytest.mark.parametrize("action", CALLS)
def test_request_examples_are_accepted(action: str, server: ReferenceServer, api: Api) -> None:
    operation = DOC["paths"][f"/api/v1/video-jobs/{{job_id}}/{action}"]["post"]
    ok_examples = [value for _, _, value in _media_examples(operation["responses"]["200"])]
    for name, _, value in _media_examples(operation["requestBody"]):
        job_id = job_in("QUEUED" if action == "start" else "RUNNING", server, api)
        reply = api.post(job_id, action, value)
        assert reply.status == 200, (name, reply.body)
        for example in ok_examples:
            _same_shape(reply.body, example)


def test_get_examples_match_real_jobs(server: ReferenceServer, api: Api) -> None:
    operation = DOC["paths"]["/api/v1/video-jobs/{job_id}"]["get"]
    for name, _, example in _media_examples(operation["responses"]["200"]):
        job = api.job(job_in(example["state"], server, api))
        _same_shape(job, example)
        assert job["video"]["status"] == example["video"]["status"], name


def _provoke(action: str, status: int, code: str, server: ReferenceServer, api: Api) -> Reply:
    """Make the server answer ``action`` with ``status``/``code``."""
    path = f"/api/v1/video-jobs/{{}}/{action}"
    if status == 401:
        return api.post(job_in("RUNNING", server, api), action, {}, token=None)
    if status == 404:
        return api.post(424242, action, {})
    if status == 413:  # complete may carry a manifest: its limit is larger
        size = MAX_COMPLETE_BODY_BYTES + 1 if action == "complete" else 70000
        return api.request("POST", path.format(job_in("RUNNING", server, api)), raw=b"0" * size)
    if code == "idempotency_key_required":
        return api.post(job_in("RUNNING", server, api), action, {}, key=None)
    if code == "invalid_request":
        return api.post(job_in("RUNNING", server, api), action, {"attempt": 1})
    if code == "idempotency_key_reused":  # the same key with another valid body
        job_id = job_in("RUNNING", server, api)
        assert api.call(action, job_id, key="reused-key").status == 200
        others: dict[str, dict[str, Any]] = {
            "start": {"batch_job_id": "batch-other"},
            "progress": {"percent": 99.0},
            "complete": {"total_bytes": 1},
            "fail": {"message": "another message"},
        }
        return api.call(action, job_id, attempt=1, key="reused-key", **others[action])
    if code == "invalid_state":
        return api.call(action, job_in("CANCELLED", server, api))
    if code == "attempt_mismatch":  # a superseded worker
        job_id = job_in("RUNNING", server, api)
        server.scan_stuck_jobs(now=server.store.clock() + STALL_S + 1)
        return api.call(action, job_id, attempt=1)
    if code == "attempt_taken":
        return api.start(job_in("RUNNING", server, api), batch_job_id="batch-z")
    if code == "result_mismatch":
        return api.complete(job_in("SUCCEEDED", server, api), hls_path="videos/9/hls/other/master.m3u8")
    raise AssertionError(f"no way to provoke {status} {code}")


@pytest.mark.parametrize("action", CALLS)
def test_error_examples_match_real_errors(action: str, server: ReferenceServer, api: Api) -> None:
    operation = DOC["paths"][f"/api/v1/video-jobs/{{job_id}}/{action}"]["post"]
    provoked = 0
    for status_text, response in operation["responses"].items():
        if status_text in ("200", "429", "5XX"):  # the reference server neither throttles nor fails on purpose
            continue
        for name, _, example in _media_examples(response):
            reply = _provoke(action, int(status_text), example["error"]["code"], server, api)
            assert reply.status == int(status_text), (name, reply.body)
            assert reply.body["error"]["code"] == example["error"]["code"], name
            _same_shape(reply.body, example)
            provoked += 1
    assert provoked >= 8


# --------------------------------------------------------------- CLI and imports


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api_reference", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def test_cli(tmp_path: Path) -> None:
    db = str(tmp_path / "cli.db")
    created = _run("create-job", "--db", db, "--source-uri", SOURCE)
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    assert (job["id"], job["state"]) == (1, "QUEUED")
    assert _run("create-job", "--db", db, "--source-uri", "ftp://x/y").returncode == 1
    assert json.loads(_run("create-job", "--db", db, "--video-id", "1").stdout)["video"]["id"] == 1

    env = {**os.environ, "JOB_API_TOKEN": TOKEN}
    serve = subprocess.Popen(
        [sys.executable, "-m", "api_reference", "--db", db, "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        line = json.loads(serve.stdout.readline())
        assert line["event"] == "listening"
        http = urllib3.PoolManager(retries=False)
        reply = http.request(
            "GET", line["url"] + "/api/v1/video-jobs/1", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5.0
        )
        assert reply.status == 200 and json.loads(reply.data)["id"] == 1
        # Admin commands work on the file while the server runs.
        assert _run("cancel", "--db", db, "--job-id", "2").returncode == 0
        reply = http.request(
            "GET", line["url"] + "/api/v1/video-jobs/2", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5.0
        )
        assert json.loads(reply.data)["state"] == "CANCELLED"
    finally:
        serve.send_signal(signal.SIGTERM)
        _, stderr = serve.communicate(timeout=10)
    assert serve.returncode == 0, stderr
    assert TOKEN not in stderr
    shown = json.loads(_run("show", "--db", db, "--job-id", "2").stdout)
    assert [step["to_state"] for step in shown["transitions"]] == ["QUEUED", "CANCELLED"]
    assert json.loads(_run("scan", "--db", db).stdout) == {"transitions": []}
    no_token = _run("--db", db, env={k: v for k, v in os.environ.items() if k != "JOB_API_TOKEN"})
    assert no_token.returncode == 2 and "JOB_API_TOKEN" in no_token.stderr


def test_api_client_and_the_reference_server_import_neither_transcoder_nor_worker() -> None:
    code = (
        "import sys, api_client, api_reference\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'transcoder', 'worker', 'av', 'boto3', 'click'})\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------- the manifest


def _example_manifest() -> dict[str, Any]:
    """The contract's own example: a real engine manifest (a fresh copy)."""
    operation = DOC["paths"]["/api/v1/video-jobs/{job_id}/complete"]["post"]
    manifest: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["examples"]["with_manifest"][
        "value"
    ]["manifest"]
    copy: dict[str, Any] = json.loads(json.dumps(manifest))
    return copy


def _with_segments(manifest: dict[str, Any], count: int) -> dict[str, Any]:
    """``manifest`` listing ``count`` more segments (a long lecture's ladder), still consistent."""
    extra = [
        {"key": f"180p/seg_{1000 + i:05d}.ts", "bytes": 50_000, "sha256": f"{i:064x}", "content_type": "video/mp2t"}
        for i in range(count)
    ]
    manifest["objects"] = sorted(manifest["objects"] + extra, key=lambda entry: entry["key"])
    manifest["total_bytes"] += 50_000 * count
    return manifest


def test_complete_stores_the_manifest_and_keeps_it_out_of_the_job(server: ReferenceServer, api: Api) -> None:
    job_id = job_in("RUNNING", server, api)
    manifest = _with_segments(_example_manifest(), 2000)  # a body well over the other calls' 64 KiB limit
    assert len(json.dumps(manifest)) > 200 * 1024
    reply = api.complete(job_id, manifest=manifest)
    assert reply.status == 200, reply.body
    assert "manifest" not in reply.body["video"]  # every POST answers with the job: it stays small
    video_id = reply.body["video"]["id"]
    assert server.store.video_manifest(video_id) == manifest
    admin = api.request("GET", f"/admin/v1/videos/{video_id}/manifest", token=ADMIN_TOKEN)
    assert admin.status == 200 and admin.body == manifest
    queued = api.job(job_in("QUEUED", server, api))["video"]["id"]
    nothing = api.request("GET", f"/admin/v1/videos/{queued}/manifest", token=ADMIN_TOKEN)
    assert nothing.status == 404


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["objects"][0].update(bytes=None, sha256=None), "only the manifest's own entry"),
        (
            lambda m: next(e for e in m["objects"] if e["key"] == "manifest.json").update(bytes=1, sha256="0" * 64),
            "own entry must have null",
        ),
        (lambda m: m["objects"].append(dict(m["objects"][0])), "more than once"),
        (lambda m: m.update(total_bytes=m["total_bytes"] + 1), "total_bytes"),
        (lambda m: m.update(objects=[e for e in m["objects"] if e["key"] != "master.m3u8"]), "not listed"),
        (lambda m: m["objects"][0].update(sha256="xyz"), "does not match"),
        (lambda m: m.update(version=2), "must be 1"),
    ],
)
def test_a_manifest_breaking_the_contract_is_refused(
    server: ReferenceServer, api: Api, change: Any, message: str
) -> None:
    manifest = _example_manifest()
    change(manifest)
    reply = api.complete(job_in("RUNNING", server, api), manifest=manifest)
    assert reply.status == 400 and reply.body["error"]["code"] == "invalid_request"
    assert message in reply.body["error"]["message"]
