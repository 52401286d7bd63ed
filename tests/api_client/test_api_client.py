"""The job API client over real HTTP on loopback: the reference server, and a scripted flaky server.

No HTTP mocks: retries are shown against a standard-library server that
answers from a script (503s, 429 with Retry-After, hangs, garbage). Waiting is
injected (``FakeTime``), so retry tests take no real sleeping time.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
import urllib3

from api_client import (
    ApiError,
    ApiUnavailableError,
    AuthenticationError,
    CompletionReport,
    ConflictError,
    InvalidResponseError,
    Job,
    JobApiClient,
    JobState,
    NotFoundError,
    RenditionReport,
    VideoStatus,
)
from api_client.models import manifest_errors
from api_client.schema import load_openapi
from api_reference import ReferenceServer

TOKEN = "client-test-token-9d8c7b6a5f4e"
SOURCE = "s3://academy-videos/uploads/7/lecture.mp4"
JOB_JSON = load_openapi()["paths"]["/api/v1/video-jobs/{job_id}"]["get"]["responses"]["200"]["content"][
    "application/json"
]["examples"]["queued"]["value"]

RESULT = CompletionReport(
    hls_path="videos/7/hls/job-1-attempt-1/master.m3u8",
    duration_s=600.5,
    renditions=(
        RenditionReport(
            name="720p",
            width=1280,
            height=720,
            bandwidth_bps=3_000_000,
            average_bandwidth_bps=2_400_000,
            codecs="avc1.64001f,mp4a.40.2",
        ),
        RenditionReport(
            name="360p",
            width=640,
            height=360,
            bandwidth_bps=900_000,
            average_bandwidth_bps=700_000,
            codecs="avc1.64001e,mp4a.40.2",
        ),
    ),
    total_bytes=225_000_000,
)


class FakeTime:
    """A monotonic clock that moves only when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# --------------------------------------------------------------- a flaky server


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = field(default_factory=lambda: JOB_JSON)  # bytes are sent as they are, anything else as JSON
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # wait (until the test ends) before answering: the client times out
    echo_auth: bool = False  # put the request's Authorization header in the body, as a broken proxy might


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FlakyServer:
    """A loopback HTTP server that answers request n with ``script[n]`` (then ``Answer()``)."""

    def __init__(self, *script: Answer) -> None:
        self.script = list(script)
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer._lock:
                    outer.seen.append(Seen(self.command, self.path, dict(self.headers), body))
                    answer = outer.script.pop(0) if outer.script else Answer()
                if answer.hang:
                    outer._release.wait(10)
                    self.close_connection = True
                    return
                if answer.echo_auth:
                    data = f"upstream said no to {self.headers.get('Authorization')} ".encode() * 40
                elif isinstance(answer.body, bytes):
                    data = answer.body
                else:
                    data = json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FlakyServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()


def flaky_client(url: str, fake: FakeTime, **kwargs: Any) -> JobApiClient:
    options: dict[str, Any] = {"timeout_s": 2.0, "deadline_s": 30.0, "backoff_initial_s": 0.5, "backoff_max_s": 4.0}
    options.update(kwargs)
    return JobApiClient(url, TOKEN, sleep=fake.sleep, clock=fake.monotonic, **options)


def refused_url() -> str:
    """A loopback URL on which nothing listens (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ----------------------------------------------------------- the reference server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ReferenceServer]:
    with ReferenceServer(tmp_path / "jobs.db", TOKEN) as running:
        yield running


@pytest.fixture
def client(server: ReferenceServer) -> Iterator[JobApiClient]:
    with JobApiClient(server.url, TOKEN, deadline_s=5.0) as api:
        yield api


def test_happy_path(server: ReferenceServer, client: JobApiClient) -> None:
    job_id = server.create_job(SOURCE)
    job = client.get_job(job_id)
    assert isinstance(job, Job)
    assert (job.id, job.state, job.attempt, job.max_attempts, job.batch_job_id) == (job_id, JobState.QUEUED, 1, 3, None)
    assert (job.video.status, job.video.source_uri, job.video.hls_path) == (VideoStatus.UPLOADED, SOURCE, None)
    assert not job.is_terminal and not job.video.is_ready and job.video.stored_result() is None
    assert job.created_at.tzinfo is not None and job.heartbeat_at is None

    job = client.report_started(job_id, attempt=job.attempt, batch_job_id="3f2a9c1e-6b7d")
    assert (job.state, job.batch_job_id, job.video.status) == (
        JobState.RUNNING,
        "3f2a9c1e-6b7d",
        VideoStatus.PROCESSING,
    )
    job = client.report_progress(job_id, attempt=1, percent=42.0, phase="transcoding")
    assert (job.progress.percent, job.progress.phase) == (42.0, "transcoding")
    job = client.report_complete(job_id, attempt=1, result=RESULT)
    assert job.state is JobState.SUCCEEDED and job.is_terminal
    assert job.video.status is VideoStatus.READY and job.video.hls_path == RESULT.hls_path
    assert job.video.stored_result() == RESULT
    # The worker's progress thread may post once more after completion: a 409 it logs and ignores.
    with pytest.raises(ConflictError) as late:
        client.report_progress(job_id, attempt=1, percent=100.0, phase="publishing")
    assert (late.value.code, late.value.job_state, late.value.current_attempt) == ("invalid_state", "SUCCEEDED", 1)
    assert late.value.status == 409 and not late.value.retryable


def test_fail_reports(server: ReferenceServer, client: JobApiClient) -> None:
    retryable = server.create_job(SOURCE)
    client.report_started(retryable, attempt=1, batch_job_id="b-1")
    job = client.report_failed(retryable, attempt=1, reason_code="storage_error", message="R2 503", retryable=True)
    assert job.state is JobState.FAILED and job.failure is not None
    assert (job.failure.reason_code, job.failure.message, job.failure.retryable) == ("storage_error", "R2 503", True)
    fatal = server.create_job(SOURCE)
    client.report_started(fatal, attempt=1, batch_job_id="b-2")
    job = client.report_failed(fatal, attempt=1, reason_code="bad_input", message="x" * 5000, retryable=False)
    assert (job.state, job.video.status) == (JobState.DEAD, VideoStatus.FAILED)
    assert job.failure is not None and len(job.failure.message) == 4000 and job.failure.message.endswith("…")


def test_stale_attempt_is_a_conflict(server: ReferenceServer, client: JobApiClient) -> None:
    job_id = server.create_job(SOURCE)
    client.report_started(job_id, attempt=1, batch_job_id="b-1")
    server.scan_stuck_jobs(now=server.store.clock() + 3600)  # attempt 1 stalled -> RETRY_WAIT, attempt 2
    with pytest.raises(ConflictError) as stale:
        client.report_complete(job_id, attempt=1, result=RESULT)
    assert (stale.value.code, stale.value.job_state, stale.value.current_attempt) == (
        "attempt_mismatch",
        JobState.RETRY_WAIT,
        2,
    )
    client.report_started(job_id, attempt=2, batch_job_id="b-2")
    with pytest.raises(ConflictError) as taken:
        client.report_started(job_id, attempt=2, batch_job_id="b-3")
    assert taken.value.code == "attempt_taken"


def test_rule_two_a_ready_video_is_completed_with_its_stored_result(
    server: ReferenceServer, client: JobApiClient
) -> None:
    first = server.create_job(SOURCE)
    client.report_started(first, attempt=1, batch_job_id="b-1")
    client.report_complete(first, attempt=1, result=RESULT)
    second = server.create_job_for_video(client.get_job(first).video.id)  # a duplicate submit
    job = client.get_job(second)
    assert job.state is JobState.QUEUED and job.video.is_ready
    stored = job.video.stored_result()
    assert stored is not None
    done = client.report_complete(second, attempt=job.attempt, result=stored)
    assert done.state is JobState.SUCCEEDED and done.video == job.video
    # A retry of the same report (same key) replays; a repeat with a new key is a harmless 200.
    again = client.report_complete(second, attempt=1, result=stored, idempotency_key="complete-2-1")
    assert client.report_complete(second, attempt=1, result=stored, idempotency_key="complete-2-1") == again


def test_auth_errors_never_show_the_token(server: ReferenceServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    job_id = server.create_job(SOURCE)
    wrong = "wrong-token-0123456789abcdef"
    with JobApiClient(server.url, wrong) as client:
        assert wrong not in repr(client)
        calls: list[Callable[[], object]] = [
            lambda: client.get_job(job_id),
            lambda: client.report_started(job_id, attempt=1, batch_job_id="b-1"),
        ]
        for call in calls:
            with pytest.raises(AuthenticationError) as caught:
                call()
            error = caught.value
            assert (error.status, error.code, error.retryable) == (401, "unauthorized", False)
            for text in (str(error), repr(error), error.body_excerpt, error.url, *map(str, error.args)):
                assert wrong not in text and TOKEN not in text
    assert wrong not in caplog.text
    assert server.get_job(job_id)["state"] == "QUEUED"


def test_unknown_job_is_not_found(server: ReferenceServer, client: JobApiClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.get_job(424242)
    assert caught.value.status == 404 and caught.value.code == "job_not_found"
    assert caught.value.url == f"{server.url}/api/v1/video-jobs/424242"


# -------------------------------------------------------------------- retries


def test_retries_5xx_then_succeeds_with_the_same_idempotency_key() -> None:
    fake = FakeTime()
    with FlakyServer(Answer(503), Answer(502, b"<html>bad gateway</html>")) as flaky:
        job = flaky_client(flaky.url, fake).report_progress(42, attempt=1, percent=100.4, phase="transcoding")
    assert job.id == 42
    assert len(flaky.seen) == 3
    assert len({seen.headers["Idempotency-Key"] for seen in flaky.seen}) == 1
    assert {seen.headers["Authorization"] for seen in flaky.seen} == {f"Bearer {TOKEN}"}
    assert json.loads(flaky.seen[0].body) == {"attempt": 1, "percent": 100.0, "phase": "transcoding"}  # clamped
    # Equal jitter: each wait is between half the step and the step (0.5 s, then 1 s).
    assert len(fake.sleeps) == 2
    assert 0.25 <= fake.sleeps[0] <= 0.5 and 0.5 <= fake.sleeps[1] <= 1.0


def test_honours_retry_after_seconds() -> None:
    fake = FakeTime()
    with FlakyServer(Answer(429, headers={"Retry-After": "1"}), Answer(503, headers={"Retry-After": "3"})) as flaky:
        flaky_client(flaky.url, fake).get_job(42)
    assert fake.sleeps == [1.0, 3.0]
    assert len(flaky.seen) == 3


def test_honours_retry_after_http_date() -> None:
    fake = FakeTime()
    wall = 1_746_090_000.0
    later = email.utils.formatdate(wall + 7, usegmt=True)
    with FlakyServer(Answer(503, headers={"Retry-After": later})) as flaky:
        flaky_client(flaky.url, fake, wall_clock=lambda: wall).get_job(42)
    assert fake.sleeps == [7.0]


def test_retry_after_beyond_the_deadline_gives_up_at_once() -> None:
    fake = FakeTime()
    with (
        FlakyServer(
            Answer(429, {"error": {"code": "rate_limited", "message": "slow"}}, {"Retry-After": "120"})
        ) as flaky,
        pytest.raises(ApiUnavailableError) as caught,
    ):
        flaky_client(flaky.url, fake, deadline_s=60).get_job(42)
    assert fake.sleeps == []
    error = caught.value
    assert (error.attempts, error.status, error.code, error.retryable) == (1, 429, "rate_limited", True)


def test_connection_refused_until_the_deadline() -> None:
    fake = FakeTime()
    client = flaky_client(refused_url(), fake, deadline_s=10.0)
    with pytest.raises(ApiUnavailableError) as caught:
        client.report_started(42, attempt=1, batch_job_id="b-1")
    error = caught.value
    assert error.attempts == len(fake.sleeps) + 1 >= 5
    assert sum(fake.sleeps) < 10.0 and error.elapsed_s == pytest.approx(sum(fake.sleeps))
    assert error.status is None and error.retryable
    assert isinstance(error.__cause__, urllib3.exceptions.NewConnectionError)
    assert all(delay <= 4.0 for delay in fake.sleeps)
    # A per-call deadline overrides the client's.
    fake.sleeps.clear()
    with pytest.raises(ApiUnavailableError):
        client.report_progress(42, attempt=1, percent=1.0, phase="transcoding", deadline_s=1.0)
    assert sum(fake.sleeps) < 1.0


def test_read_timeout_is_retried() -> None:
    fake = FakeTime()
    with FlakyServer(Answer(hang=True)) as flaky:
        job = flaky_client(flaky.url, fake, timeout_s=0.2).get_job(42)
    assert job.id == 42 and len(flaky.seen) == 2 and len(fake.sleeps) == 1


def test_5xx_until_the_deadline_keeps_the_last_answer_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeTime()
    with FlakyServer(*[Answer(500, echo_auth=True)] * 50) as flaky, pytest.raises(ApiUnavailableError) as caught:
        flaky_client(flaky.url, fake, deadline_s=5.0).get_job(42)
    error = caught.value
    assert error.status == 500 and error.attempts == len(flaky.seen) > 1
    assert 0 < len(error.body_excerpt) <= 500 and "Bearer ***" in error.body_excerpt
    for text in (str(error), repr(error), error.body_excerpt, caplog.text):
        assert TOKEN not in text
    assert f"GET {flaky.url}/api/v1/video-jobs/42 -> 500" in str(error)


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, ApiError, "invalid_request"),
        (401, AuthenticationError, "unauthorized"),
        (403, AuthenticationError, None),
        (404, NotFoundError, "job_not_found"),
        (409, ConflictError, "invalid_state"),
        (422, ApiError, "idempotency_key_reused"),
    ],
)
def test_other_4xx_are_not_retried(status: int, kind: type[ApiError], code: str | None) -> None:
    fake = FakeTime()
    body = {"error": {"code": code, "message": "no"}} if code else b"forbidden"
    with FlakyServer(Answer(status, body)) as flaky, pytest.raises(kind) as caught:
        flaky_client(flaky.url, fake).report_progress(42, attempt=1, percent=1.0, phase="transcoding")
    assert len(flaky.seen) == 1 and fake.sleeps == []
    assert (type(caught.value), caught.value.status, caught.value.code) == (kind, status, code)
    assert not caught.value.retryable


@pytest.mark.parametrize("body", [b"<html>maintenance</html>", b'{"id": "not a job"}', b"[]"])
def test_a_2xx_that_is_not_a_job_is_invalid(body: bytes) -> None:
    fake = FakeTime()
    with FlakyServer(Answer(200, body)) as flaky, pytest.raises(InvalidResponseError) as caught:
        flaky_client(flaky.url, fake).get_job(42)
    assert len(flaky.seen) == 1 and caught.value.status == 200 and not caught.value.retryable


# ----------------------------------------------------------------- arguments


def test_constructor_keeps_secrets_out_of_urls_and_messages() -> None:
    with pytest.raises(ValueError, match="user info") as caught:
        JobApiClient("https://user:s3cret@api.example.com", TOKEN)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ValueError, match="query"):
        JobApiClient("https://api.example.com/?token=abc", TOKEN)
    with pytest.raises(ValueError, match="http"):
        JobApiClient("ftp://api.example.com", TOKEN)
    with pytest.raises(ValueError) as bad_token:
        JobApiClient("https://api.example.com", "my token\r\nX-Injected: 1")
    assert "my token" not in str(bad_token.value)
    client = JobApiClient("https://api.example.com/", TOKEN)
    assert client.base_url == "https://api.example.com" and TOKEN not in repr(client)


def test_arguments_are_checked_before_any_request() -> None:
    fake = FakeTime()
    with FlakyServer() as flaky:
        client = flaky_client(flaky.url, fake)
        calls: list[Callable[[], object]] = [
            lambda: client.get_job(0),
            lambda: client.report_started(1, attempt=0, batch_job_id="b"),
            lambda: client.report_started(1, attempt=1, batch_job_id="has space"),
            lambda: client.report_progress(1, attempt=1, percent=float("nan"), phase="x"),
            lambda: client.report_progress(1, attempt=1, percent=1.0, phase="Transcoding"),
            lambda: client.report_failed(1, attempt=1, reason_code="Bad Input", message="m", retryable=False),
            lambda: client.report_progress(1, attempt=1, percent=1.0, phase="x", idempotency_key="has space"),
        ]
        for call in calls:
            with pytest.raises(ValueError):
                call()
    assert flaky.seen == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hls_path": "/abs/master.m3u8"}, "hls_path"),
        ({"hls_path": "videos/../master.m3u8"}, "hls_path"),
        ({"duration_s": 0.0}, "duration_s"),
        ({"total_bytes": 0}, "total_bytes"),
        ({"renditions": ()}, "renditions"),
        ({"renditions": (RESULT.renditions[0], RESULT.renditions[0])}, "unique"),
    ],
)
def test_completion_report_checks_itself(change: dict[str, Any], message: str) -> None:
    fields = {
        "hls_path": RESULT.hls_path,
        "duration_s": RESULT.duration_s,
        "renditions": RESULT.renditions,
        "total_bytes": RESULT.total_bytes,
    }
    with pytest.raises(ValueError, match=message):
        CompletionReport(**{**fields, **change})


def test_rendition_report_checks_itself() -> None:
    base = {
        "name": "720p",
        "width": 1280,
        "height": 720,
        "bandwidth_bps": 10,
        "average_bandwidth_bps": 9,
        "codecs": "c",
    }
    audio_only: dict[str, Any] = {"width": None, "height": None}
    RenditionReport(**{**base, **audio_only})  # audio-only is fine
    changes: list[tuple[dict[str, Any], str]] = [
        ({"average_bandwidth_bps": 11}, "exceeds the peak"),
        ({"width": None}, "both"),
        ({"name": "../x"}, "name"),
        ({"bandwidth_bps": 0}, "bandwidth_bps"),
        ({"codecs": ""}, "codecs"),
    ]
    for change, message in changes:
        with pytest.raises(ValueError, match=message):
            RenditionReport(**{**base, **change})


def _contract_manifest() -> dict[str, Any]:
    operation = load_openapi()["paths"]["/api/v1/video-jobs/{job_id}/complete"]["post"]
    value: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["examples"]["with_manifest"][
        "value"
    ]
    return value


def test_completion_report_carries_a_manifest_and_checks_it() -> None:
    example = _contract_manifest()
    report = CompletionReport(
        hls_path=example["hls_path"],
        duration_s=example["duration_s"],
        renditions=tuple(RenditionReport.from_json(r) for r in example["renditions"]),
        total_bytes=example["total_bytes"],
        manifest=example["manifest"],
    )
    assert report.to_json()["manifest"] == example["manifest"]
    assert "manifest" not in RESULT.to_json()  # none: the body has no field (older servers accept it)
    assert manifest_errors(example["manifest"]) == []
    broken = json.loads(json.dumps(example["manifest"]))
    broken["objects"] = [e for e in broken["objects"] if e["key"] != "manifest.json"]
    with pytest.raises(ValueError, match=r"manifest\.json.*not listed"):
        CompletionReport(
            hls_path=report.hls_path,
            duration_s=report.duration_s,
            renditions=report.renditions,
            total_bytes=report.total_bytes,
            manifest=broken,
        )


def test_report_complete_sends_the_manifest(server: ReferenceServer, client: JobApiClient) -> None:
    example = _contract_manifest()
    job_id = server.create_job(SOURCE)
    client.report_started(job_id, attempt=1, batch_job_id="b-1")
    result = dataclasses.replace(RESULT, manifest=example["manifest"])
    job = client.report_complete(job_id, attempt=1, result=result)
    assert job.state is JobState.SUCCEEDED
    assert server.store.video_manifest(job.video.id) == example["manifest"]
