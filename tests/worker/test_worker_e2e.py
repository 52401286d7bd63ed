"""The worker end to end, with real parts: the reference job API, SeaweedFS, and ``python -m worker`` as a subprocess.

Nothing is mocked. Faults come from where they would in production: a signal
to the worker's process (Batch's SIGTERM, a container kill), a SIGKILL to the
transcoding child (the kernel's out-of-memory killer), a loopback proxy in
front of the API that resets or refuses the ``complete`` call, a source that is
not a video. Every run's stdout must be JSON lines only and must never show
the API token or the S3 secret.

Clips: the 2 s 320x180 clip encodes in well under a second at ``ultrafast``;
runs that are stopped mid-encode use an 8 s 640x360 clip at ``veryfast`` on one
thread (several seconds of encoding, stopped after the first progress).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import m3u8
import psutil
import pytest

from api_client import JobApiClient
from api_reference import ReferenceServer
from tests.support.faultproxy import FaultProxy, Rule
from tests.support.media import ClipFactory, make_random_bytes
from tests.support.s3server import ACCESS_KEY, SECRET_KEY, SeaweedServer, Space
from worker.exit_codes import ExitCode

pytestmark = pytest.mark.slow

TOKEN = "e2e-worker-token-7c1d9e4b2a6f"
REPO = Path(__file__).resolve().parents[2]
GRACE_S = 20.0
SMALL = {"width": 320, "height": 180, "seconds": 2.0}
HEAVY = {"width": 640, "height": 360, "seconds": 8.0}


# --------------------------------------------------------------------------- helpers


@dataclass
class WorkerProcess:
    """``python -m worker JOB_ID`` in a session of its own; stdout lines collected as they come."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    stderr: str = ""
    started: float = field(default_factory=time.monotonic)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _readers: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls, job_id: int, env: dict[str, str]) -> WorkerProcess:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", str(job_id)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        worker = cls(process)
        worker._readers = [
            threading.Thread(target=worker._read, daemon=True),
            threading.Thread(target=worker._read_stderr, daemon=True),
        ]
        for reader in worker._readers:
            reader.start()
        return worker

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines)]

    def events(self, name: str) -> list[dict[str, Any]]:
        return [record for record in self.records if record.get("event") == name]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 60.0) -> dict[str, Any]:
        """The first stdout record matching ``predicate`` (waiting for it)."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._changed:
            while True:
                while seen < len(self.lines):
                    record: dict[str, Any] = json.loads(self.lines[seen])
                    seen += 1
                    if predicate(record):
                        return record
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and seen >= len(self.lines)):
                    pytest.fail(f"no such log record; the worker said:\n{self.text()}")
                self._changed.wait(min(left, 0.2))

    def finish(self, timeout_s: float = 120.0) -> int:
        """Wait for the exit; check every stdout line is JSON without secrets; the exit status."""
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            pytest.fail(f"the worker did not exit within {timeout_s} s:\n{self.text()}")
        for reader in self._readers:
            reader.join(timeout=10)
        for line in self.lines:
            record = json.loads(line)  # every line is one JSON object
            assert isinstance(record, dict) and "event" in record and "ts" in record
        for secret in (TOKEN, SECRET_KEY):
            assert secret not in self.text(), "a secret reached the worker's stdout"
            assert secret not in self.stderr, "a secret reached the worker's stderr"
        return self.process.returncode

    def kill_group(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)

    def text(self) -> str:
        return "\n".join(self.lines) + ("\nSTDERR:\n" + self.stderr if self.stderr else "")


@dataclass
class Setup:
    """One test's API, bucket corner and environment."""

    api: ReferenceServer
    seaweed: SeaweedServer
    space: Space
    s3: Any
    clip: ClipFactory

    def env(self, *, api_url: str | None = None, **overrides: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JOB_API_", "WORKER_", "VIDEO_"))}
        base.update(
            JOB_API_URL=api_url or self.api.url,
            JOB_API_TOKEN=TOKEN,
            HLS_OUTPUT_URI=self.space.uri("hls/"),
            AWS_ENDPOINT_URL_S3=self.seaweed.endpoint,
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_BATCH_JOB_ID="e2e-batch-1",
            AWS_BATCH_JOB_ATTEMPT="1",
            WORKER_PRESET="ultrafast",
            WORKER_PROGRESS_INTERVAL_S="0.2",
            TRANSCODE_THREADS="1",
            JOB_API_DEADLINE_S="10",
            JOB_API_TIMEOUT_S="3",
        )
        base.update(overrides)
        return base

    def upload(self, path: Path, name: str = "in.mp4") -> str:
        key = self.space.key(f"src/{name}")
        self.s3.upload_file(str(path), self.space.bucket, key)
        return f"s3://{self.space.bucket}/{key}"

    def job(self, clip: dict[str, Any] | None = None) -> int:
        return self.api.create_job(self.upload(self.clip(**(clip or SMALL))))

    def hls_keys(self) -> list[str]:
        return self.space.keys(self.s3, "hls/")

    def masters(self) -> list[str]:
        return [key for key in self.hls_keys() if key.endswith("/master.m3u8")]

    def get(self, job_id: int) -> dict[str, Any]:
        return self.api.get_job(job_id)


@pytest.fixture
def setup(tmp_path: Path, seaweed: SeaweedServer, space: Space, clip: ClipFactory) -> Iterator[Setup]:
    with ReferenceServer(tmp_path / "jobs.db", token=TOKEN) as api:
        yield Setup(api=api, seaweed=seaweed, space=space, s3=seaweed.client(), clip=clip)


def api_proxy(api: ReferenceServer) -> FaultProxy:
    return FaultProxy(int(api.url.rsplit(":", 1)[1]))


def assert_manifest_reported(setup: Setup, video: dict[str, Any]) -> None:
    """``complete`` carried the ladder's manifest: the API stored exactly the manifest.json in the bucket,
    and it lists every object under the ladder's prefix."""
    base = video["hls_path"].rsplit("/", 1)[0] + "/"
    stored = setup.s3.get_object(Bucket=setup.space.bucket, Key=base + "manifest.json")["Body"].read()
    reported = setup.api.store.video_manifest(video["id"])
    assert reported is not None and reported == json.loads(stored)
    listed = sorted(base + entry["key"] for entry in reported["objects"])
    assert listed == [setup.space.prefix + key for key in setup.space.keys(setup.s3, base[len(setup.space.prefix) :])]


def first_transcoding_progress(record: dict[str, Any]) -> bool:
    return record.get("event") == "progress" and record.get("phase") == "transcoding"


# --------------------------------------------------------------------------- the scenarios


def test_happy_path_then_reruns_touch_nothing(setup: Setup) -> None:
    job_id = setup.job()
    worker = WorkerProcess.start(job_id, setup.env())
    assert worker.finish() == ExitCode.OK, worker.text()

    job = setup.get(job_id)
    assert job["state"] == "SUCCEEDED"
    video = job["video"]
    assert video["status"] == "READY"
    hls_path = video["hls_path"]
    # The documented key form: {HLS_OUTPUT_URI key prefix}{video}/{job}-a{attempt}-{8 hex}/master.m3u8
    prefix = f"{setup.space.prefix}hls/{video['id']}/{job_id}-a1-"
    assert hls_path.startswith(prefix) and hls_path.endswith("/master.m3u8") and len(hls_path) == len(prefix) + 20
    assert video["duration_s"] == pytest.approx(2.0, abs=0.1)
    assert video["renditions"] and video["renditions"][0]["width"] == 320

    # The master playlist is in the bucket, valid, and everything it names exists.
    keys = setup.hls_keys()
    body = setup.s3.get_object(Bucket=setup.space.bucket, Key=hls_path)["Body"].read().decode()
    master = m3u8.loads(body)
    assert master.is_variant and master.playlists
    base = hls_path.rsplit("/", 1)[0] + "/"
    for playlist in master.playlists:
        assert playlist.stream_info.bandwidth > 0 and playlist.stream_info.average_bandwidth
        assert base[len(setup.space.prefix) :] + playlist.uri in keys
    assert video["total_bytes"] == sum(
        obj["Size"] for obj in setup.s3.list_objects_v2(Bucket=setup.space.bucket, Prefix=base).get("Contents", [])
    )
    assert_manifest_reported(setup, video)

    # Progress reached the API (posted, and recorded on the job).
    # (at least the first: later phases wait for the contract's least gap, and a fast run may end first)
    assert worker.events("progress_summary")[0]["posted"] >= 1
    assert job["progress"]["percent"] is not None
    assert job["progress"]["phase"] in ("checking", "transcoding", "publishing")
    assert worker.events("worker_finished")[0]["reused"] is False
    # Every line says which job and Batch job it is about; from the GET on, which attempt too.
    records = worker.records
    assert all(r["job_id"] == job_id and r["batch_job_id"] == "e2e-batch-1" for r in records)
    assert all(r["attempt"] == 1 for r in records[records.index(worker.events("job_read")[0]) :])
    assert worker.events("worker_finished")[0]["timings"]["total_s"] > 0

    # A re-run of the SUCCEEDED job: exit 0, no new object, no call but GET.
    again = WorkerProcess.start(job_id, setup.env(AWS_BATCH_JOB_ID="e2e-batch-2"))
    assert again.finish() == ExitCode.OK, again.text()
    assert again.events("nothing_to_do") and not again.events("child_started")
    assert setup.hls_keys() == keys
    assert setup.get(job_id)["updated_at"] == job["updated_at"]

    # Another job for the READY video: completes with the stored result, uploads nothing.
    second = setup.api.create_job_for_video(video["id"])
    third = WorkerProcess.start(second, setup.env(AWS_BATCH_JOB_ID="e2e-batch-3"))
    assert third.finish() == ExitCode.OK, third.text()
    assert third.events("video_ready") and not third.events("child_started")
    assert setup.get(second)["state"] == "SUCCEEDED"
    assert setup.get(second)["video"]["hls_path"] == hls_path
    assert setup.hls_keys() == keys


@pytest.mark.parametrize("rerun", ["same_batch_job", "after_the_stuck_job_scan"])
def test_killed_after_uploading_before_completing_then_rerun_adopts_the_ladder(setup: Setup, rerun: str) -> None:
    job_id = setup.job()
    with api_proxy(setup.api) as proxy:
        proxy.add(Rule("reset", method="POST", path=r"/complete$", times=None))
        worker = WorkerProcess.start(job_id, setup.env(api_url=proxy.endpoint))
        deadline = time.monotonic() + 60
        while not proxy.wait_for_hits(1, timeout_s=0.5):
            assert worker.process.poll() is None and time.monotonic() < deadline, worker.text()
        worker.kill_group()  # the container dies with the completion report on the wire
        worker.finish()
    assert worker.process.returncode == -signal.SIGKILL
    masters = setup.masters()
    assert len(masters) == 1
    keys = setup.hls_keys()
    assert setup.get(job_id)["state"] == "RUNNING"

    env = setup.env()
    if rerun == "after_the_stuck_job_scan":
        moved = setup.api.scan_stuck_jobs(now=time.time() + 3600)
        assert [(m.job_id, m.to_state.value, m.attempt) for m in moved] == [(job_id, "RETRY_WAIT", 2)]
        env = setup.env(AWS_BATCH_JOB_ID="e2e-batch-retry")
    again = WorkerProcess.start(job_id, env)
    assert again.finish() == ExitCode.OK, again.text()
    assert again.events("ladder_adopted") and again.events("worker_finished")[0]["reused"] is True
    assert setup.hls_keys() == keys  # nothing encoded or uploaded again
    job = setup.get(job_id)
    assert job["state"] == "SUCCEEDED"
    assert setup.space.prefix + masters[0] == job["video"]["hls_path"]
    assert "-a1-" in job["video"]["hls_path"]
    assert_manifest_reported(setup, job["video"])  # read back from the adopted ladder


def stored_objects(setup: Setup) -> dict[str, tuple[str, Any]]:
    """Every key under hls/ with its ETag and modification time: what a rewrite would change."""
    found: dict[str, tuple[str, Any]] = {}
    paginator = setup.s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=setup.space.bucket, Prefix=setup.space.key("hls/")):
        for item in page.get("Contents", []):
            found[item["Key"][len(setup.space.prefix) :]] = (item["ETag"], item["LastModified"])
    return found


def test_killed_mid_encode_then_the_next_attempt_resumes(setup: Setup) -> None:
    """kill -9 at about 60% (three of five checkpoint spans stored); the next attempt keeps them."""
    job_id = setup.job({"width": 640, "height": 360, "seconds": 20.0})
    env = {"WORKER_PRESET": "medium", "WORKER_CHECKPOINT_S": "4"}  # 4 s segments: five spans, four recordable
    worker = WorkerProcess.start(job_id, setup.env(**env))
    deadline = time.monotonic() + 120
    while True:
        records = [key for key in setup.hls_keys() if "/.checkpoint/" in key]
        if len(records) >= 3:
            worker.kill_group()  # the instance is gone: no cancel, no cleanup, no report
            break
        assert worker.process.poll() is None and time.monotonic() < deadline, worker.text()
        time.sleep(0.02)
    worker.finish()
    assert worker.process.returncode == -signal.SIGKILL
    assert setup.masters() == []
    before = stored_objects(setup)
    recorded = len([key for key in before if "/.checkpoint/" in key])
    assert 3 <= recorded < 5

    moved = setup.api.scan_stuck_jobs(now=time.time() + 3600)
    assert [(m.job_id, m.to_state.value, m.attempt) for m in moved] == [(job_id, "RETRY_WAIT", 2)]
    again = WorkerProcess.start(job_id, setup.env(AWS_BATCH_JOB_ID="e2e-batch-retry", **env))
    assert again.finish() == ExitCode.OK, again.text()
    job = setup.get(job_id)
    assert job["state"] == "SUCCEEDED"
    hls_path = job["video"]["hls_path"]
    assert "-a1-" in hls_path  # the second attempt finished the first one's ladder, in its directory
    base = hls_path.rsplit("/", 1)[0][len(setup.space.prefix) :] + "/"
    after = stored_objects(setup)
    video = sorted(key for key in after if key.startswith(base + "360p/seg_"))
    assert len(video) == 5
    kept = [key for key in video if before.get(key) == after[key]]
    # The recorded segments were neither encoded nor uploaded again: at most 2 of 5 (40%) were.
    assert kept == video[:recorded]
    assert (len(video) - len(kept)) / len(video) <= 0.45
    assert not any("/.checkpoint/" in key for key in after)
    assert_manifest_reported(setup, job["video"])
    playlist = m3u8.loads(
        setup.s3.get_object(Bucket=setup.space.bucket, Key=setup.space.key(base + "360p/index.m3u8"))["Body"]
        .read()
        .decode()
    )
    assert [segment.uri for segment in playlist.segments] == [key.rsplit("/", 1)[1] for key in video]
    assert not any(segment.discontinuity for segment in playlist.segments)


def test_sigterm_mid_encode_reports_a_retryable_failure_and_publishes_nothing(setup: Setup) -> None:
    job_id = setup.job(HEAVY)
    worker = WorkerProcess.start(job_id, setup.env(WORKER_PRESET="veryfast"))
    progress = worker.wait_for(first_transcoding_progress)
    assert progress["percent"] < 60
    sent = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)  # to the worker only, as Batch/ECS (through tini) does
    code = worker.finish(timeout_s=GRACE_S + 10)
    took = time.monotonic() - sent
    assert code == ExitCode.TERMINATED, worker.text()
    assert took < GRACE_S
    job = setup.get(job_id)
    assert job["state"] == "FAILED"
    assert job["failure"]["reason_code"] == "terminated" and job["failure"]["retryable"] is True
    assert setup.masters() == []
    assert not psutil.pid_exists(worker.events("child_started")[0]["child_pid"]) or _is_zombie(
        worker.events("child_started")[0]["child_pid"]
    )


def test_a_crashed_child_is_reported_as_crashed_and_retryable(setup: Setup) -> None:
    job_id = setup.job(HEAVY)
    worker = WorkerProcess.start(job_id, setup.env(WORKER_PRESET="veryfast"))
    worker.wait_for(first_transcoding_progress)
    children = psutil.Process(worker.process.pid).children()
    assert len(children) == 1
    children[0].send_signal(signal.SIGKILL)  # what the out-of-memory killer does
    assert worker.finish() == ExitCode.CRASHED, worker.text()
    crash = worker.events("child_crashed")[0]
    assert "SIGKILL" in crash["message"]
    job = setup.get(job_id)
    assert job["state"] == "FAILED"
    assert job["failure"]["reason_code"] == "crashed" and job["failure"]["retryable"] is True
    assert setup.masters() == []


def test_the_worker_deadline_stops_the_run(setup: Setup) -> None:
    job_id = setup.job(HEAVY)
    # "medium" keeps the child encoding well past the 3 s deadline (at "veryfast" a quiet machine can
    # finish and publish the whole ladder just before it, and a complete ladder is then rightly kept).
    worker = WorkerProcess.start(job_id, setup.env(WORKER_PRESET="medium", WORKER_DEADLINE_S="3"))
    assert worker.finish() == ExitCode.DEADLINE, worker.text()
    job = setup.get(job_id)
    assert job["failure"]["reason_code"] == "deadline" and job["failure"]["retryable"] is True
    assert setup.masters() == []


def test_a_job_cancelled_mid_encode_stops_the_worker(setup: Setup) -> None:
    job_id = setup.job(HEAVY)
    worker = WorkerProcess.start(job_id, setup.env(WORKER_PRESET="veryfast"))
    worker.wait_for(first_transcoding_progress)
    setup.api.cancel_job(job_id)  # the next progress post is refused: the job moved on
    assert worker.finish(timeout_s=GRACE_S + 10) == ExitCode.OK, worker.text()
    assert worker.events("job_moved_on")
    assert setup.get(job_id)["state"] == "CANCELLED"
    assert setup.masters() == []


@pytest.mark.parametrize("kind", ["not_a_video", "missing_object"])
def test_bad_input_is_a_final_failure(setup: Setup, tmp_path: Path, kind: str) -> None:
    if kind == "not_a_video":
        source = setup.upload(make_random_bytes(tmp_path / "noise.mp4"), "noise.mp4")
    else:
        source = setup.space.uri("src/nothing-here.mp4")
    job_id = setup.api.create_job(source)
    worker = WorkerProcess.start(job_id, setup.env())
    assert worker.finish() == ExitCode.BAD_INPUT, worker.text()
    job = setup.get(job_id)
    assert job["state"] == "DEAD"
    assert job["failure"]["reason_code"] == "bad_input" and job["failure"]["retryable"] is False
    assert job["video"]["status"] == "FAILED"
    assert setup.hls_keys() == []


def test_api_unreachable_during_completion_retries_then_fails_clearly(setup: Setup) -> None:
    job_id = setup.job()
    with api_proxy(setup.api) as proxy:
        proxy.add(Rule("status", method="POST", path=r"/complete$", status=503, times=None))
        worker = WorkerProcess.start(job_id, setup.env(api_url=proxy.endpoint, JOB_API_DEADLINE_S="3"))
        assert worker.finish() == ExitCode.API, worker.text()
        tries = [entry for entry in proxy.log if entry.target.endswith("/complete")]
    assert len(tries) >= 2  # retried
    failed = worker.events("complete_failed")[0]
    assert "unreachable" in failed["message"] and failed["tries"] == len(tries)
    job = setup.get(job_id)
    assert job["state"] == "FAILED"
    assert job["failure"]["reason_code"] == "api_unavailable" and job["failure"]["retryable"] is True

    # The ladder stays; the retry the scan grants adopts it without encoding again.
    keys = setup.hls_keys()
    setup.api.scan_stuck_jobs()
    again = WorkerProcess.start(job_id, setup.env(AWS_BATCH_JOB_ID="e2e-batch-retry"))
    assert again.finish() == ExitCode.OK, again.text()
    assert again.events("ladder_adopted")
    assert setup.hls_keys() == keys
    assert setup.get(job_id)["state"] == "SUCCEEDED"


@pytest.mark.parametrize("state", ["CANCELLED", "DEAD"])
def test_cancelled_or_dead_jobs_exit_0_without_work(setup: Setup, state: str) -> None:
    job_id = setup.api.create_job(setup.space.uri("src/never-read.mp4"))
    if state == "CANCELLED":
        setup.api.cancel_job(job_id)
    else:
        with JobApiClient(setup.api.url, TOKEN) as client:
            client.report_started(job_id, attempt=1, batch_job_id="earlier")
            client.report_failed(job_id, attempt=1, reason_code="bad_input", message="earlier", retryable=False)
    before = setup.get(job_id)
    worker = WorkerProcess.start(job_id, setup.env())
    assert worker.finish() == ExitCode.OK, worker.text()
    assert worker.events("nothing_to_do") and not worker.events("child_started")
    after = setup.get(job_id)
    assert after["state"] == state and after["updated_at"] == before["updated_at"]
    assert setup.hls_keys() == []


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_local_run_needs_no_object_storage(tmp_path: Path, clip: ClipFactory) -> None:
    """The demo path: a local source file and a local output directory, with the reference API."""
    with ReferenceServer(tmp_path / "jobs.db", token=TOKEN) as api:
        job_id = api.create_job(clip(**SMALL).as_uri())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "JOB_API_", "WORKER_", "VIDEO_"))}
        env.update(
            JOB_API_URL=api.url, JOB_API_TOKEN=TOKEN, HLS_OUTPUT_URI=str(tmp_path / "hls"), WORKER_PRESET="ultrafast"
        )
        worker = WorkerProcess.start(job_id, env)
        assert worker.finish() == ExitCode.OK, worker.text()
        job = api.get_job(job_id)
    assert job["state"] == "SUCCEEDED"
    master = tmp_path / "hls" / job["video"]["hls_path"]
    assert master.is_file() and m3u8.load(str(master)).is_variant


def test_refused_storage_credentials_are_a_deployment_failure(setup: Setup) -> None:
    job_id = setup.job()
    wrong = "wrong-secret-key-3e2d1c0b9a8f7e6d"
    worker = WorkerProcess.start(job_id, setup.env(AWS_SECRET_ACCESS_KEY=wrong))
    assert worker.finish() == ExitCode.USAGE, worker.text()
    assert wrong not in worker.text()
    job = setup.get(job_id)
    assert job["failure"]["reason_code"] == "storage_denied" and job["failure"]["retryable"] is False
    assert setup.hls_keys() == []
