"""The worker's parts: settings, JSON logs and redaction, the prefix scheme, reading ladders back, reasons.

The whole worker against real servers is in test_worker_e2e.py. Here the
parts are checked one by one; the ones that touch files or HTTP use real ones
(a ladder transcoded into tmp_path, the reference API on loopback).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from api_client import WORKER_REASON_CODES, CompletionReport, JobApiClient, RenditionReport
from api_reference import ReferenceServer
from tests.support.media import ClipFactory
from tests.support.waiting import wait_until
from transcoder import (
    CancelledError,
    ConfigError,
    CredentialsError,
    EncoderSettings,
    InputError,
    MediaError,
    OutputError,
    SourceNotFoundError,
    StorageError,
    TranscodeConfig,
    UnsupportedInputError,
    transcode,
)
from transcoder.config import X264_PRESETS as ENGINE_PRESETS
from worker.child import classify
from worker.exit_codes import RETRYABLE, ExitCode
from worker.layout import MASTER, RunDir, job_stem, new_run_tag, parse_run_dir
from worker.log import Redactor, setup_logging
from worker.outputs import IncompleteLadderError, LocalStore, StoreError, find_complete_ladder, inspect_ladder
from worker.playlists import (
    completion_report,
    parse_attributes,
    parse_master,
    parse_media,
    rendition_name,
    resolve,
)
from worker.progress import ProgressReporter
from worker.reasons import REASONS, reason_for_child_error
from worker.run import WorkerRun
from worker.settings import ENVIRONMENT, X264_PRESETS, OutputRoot, SettingsError, read_settings

REPO = Path(__file__).resolve().parents[2]
TOKEN = "unit-worker-token-0f9e8d7c6b"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

ENV = {
    "JOB_API_URL": "https://api.example.com/",
    "JOB_API_TOKEN": TOKEN,
    "HLS_OUTPUT_URI": "s3://academy-videos/hls",
    "AWS_BATCH_JOB_ID": "8f1c2d3e-aaaa-bbbb-cccc-1234567890ab",
    "AWS_BATCH_JOB_ATTEMPT": "1",
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
}


# --------------------------------------------------------------------------- settings


def test_settings_read_from_the_environment_and_argv() -> None:
    settings = read_settings(["42"], ENV)
    assert settings.job_id == 42
    assert settings.api_url == "https://api.example.com"
    assert settings.output_root == OutputRoot(bucket="academy-videos", prefix="hls/")
    assert settings.batch_job_id == ENV["AWS_BATCH_JOB_ID"] and settings.batch_attempt == 1
    assert settings.deadline_s == 14400 - 600
    assert (settings.progress_interval_s, settings.grace_s) == (30.0, 20.0)
    assert (settings.threads, settings.preset) == (None, None)
    assert set(settings.secrets) == {TOKEN, AWS_SECRET}
    # The grace period's budget: stopping the child, then a short report, with a margin.
    assert settings.child_stop_s + settings.report_deadline_s < settings.grace_s
    text = repr(settings)
    assert TOKEN not in text and AWS_SECRET not in text


def test_settings_job_id_from_the_environment_and_options() -> None:
    env = {
        **ENV,
        "VIDEO_JOB_ID": "7",
        "WORKER_DEADLINE_S": "600",
        "WORKER_PROGRESS_INTERVAL_S": "0.5",
        "WORKER_GRACE_S": "12",
        "JOB_API_TIMEOUT_S": "2",
        "JOB_API_DEADLINE_S": "4",
        "TRANSCODE_THREADS": "4",
        "WORKER_PRESET": "ultrafast",
    }
    env.pop("AWS_BATCH_JOB_ID")
    settings = read_settings([], env)
    assert settings.job_id == 7
    assert (settings.deadline_s, settings.progress_interval_s, settings.grace_s) == (600, 0.5, 12)
    assert (settings.api_timeout_s, settings.api_deadline_s, settings.threads, settings.preset) == (
        2,
        4,
        4,
        "ultrafast",
    )
    assert settings.batch_job_id.startswith("local-")
    assert read_settings(["9"], env).job_id == 9  # the argument wins


def test_settings_name_every_problem_at_once_and_no_secret() -> None:
    env = {
        "JOB_API_TOKEN": "has space",
        "HLS_OUTPUT_URI": "https://cdn.example.com/x",
        "WORKER_GRACE_S": "soon",
        "TRANSCODE_THREADS": "0",
        "WORKER_PRESET": "placebo",
        "AWS_BATCH_JOB_ATTEMPT": "first",
    }
    with pytest.raises(SettingsError) as caught:
        read_settings([], env)
    problems = "\n".join(caught.value.problems)
    for needle in (
        "job id",
        "JOB_API_URL is missing",
        "JOB_API_TOKEN",
        "HLS_OUTPUT_URI",
        "WORKER_GRACE_S",
        "TRANSCODE_THREADS",
        "WORKER_PRESET",
        "AWS_BATCH_JOB_ATTEMPT",
    ):
        assert needle in problems
    assert "has space" not in problems


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"JOB_API_URL": "https://user:pw@api.example.com"}, "user info"),
        ({"JOB_API_URL": "https://api.example.com/?token=x"}, "query"),
        ({"JOB_API_URL": "ftp://api.example.com"}, "http(s)"),
        ({"HLS_OUTPUT_URI": "s3://Bad_Bucket/hls/"}, "bucket"),
        ({"HLS_OUTPUT_URI": "s3://bucket/../x/"}, "'..'"),
        ({"AWS_BATCH_JOB_ID": "no spaces allowed"}, "AWS_BATCH_JOB_ID"),
        ({"WORKER_GRACE_S": "20", "JOB_API_TIMEOUT_S": "15"}, "JOB_API_TIMEOUT_S"),
        ({"WORKER_DEADLINE_S": "-1"}, "WORKER_DEADLINE_S"),
        ({"WORKER_PROGRESS_INTERVAL_S": "nan"}, "WORKER_PROGRESS_INTERVAL_S"),
    ],
)
def test_settings_refuse_bad_values(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        read_settings(["1"], {**ENV, **env})
    assert problem in str(caught.value)


@pytest.mark.parametrize("job", ["0", "-3", "4.5", "abc", "1" * 20])
def test_settings_refuse_bad_job_ids(job: str) -> None:
    with pytest.raises(SettingsError, match="job id"):
        read_settings([job], ENV)


def test_output_roots(tmp_path: Path) -> None:
    assert OutputRoot.parse("s3://b-1/") == OutputRoot("b-1", "")
    assert OutputRoot.parse("s3://b-1/a/b") == OutputRoot("b-1", "a/b/")
    assert OutputRoot.parse("s3://b-1/a/b").uri == "s3://b-1/a/b/"
    local = OutputRoot.parse(str(tmp_path / "out"))
    assert local == OutputRoot(None, f"{tmp_path / 'out'}/") and not local.is_s3
    with pytest.raises(ValueError):
        OutputRoot.parse("gs://bucket/x")


def test_the_worker_knows_the_engines_presets() -> None:
    assert X264_PRESETS == ENGINE_PRESETS


def test_every_setting_is_documented() -> None:
    source = (REPO / "worker" / "settings.py").read_text()
    read = set(re.findall(r'(?:get|required|seconds|integer)\(\s*"([A-Z][A-Z0-9_]+)"', source))
    assert len(read) >= 12
    assert read <= set(ENVIRONMENT)


# --------------------------------------------------------------------------- logs


def test_redactor_removes_secrets_queries_and_signatures() -> None:
    redactor = Redactor([TOKEN, AWS_SECRET])
    text = redactor.text(
        f"token {TOKEN} secret {AWS_SECRET} "
        "https://bucket.r2.example.com/k.ts?X-Amz-Algorithm=AWS4&X-Amz-Signature=abcdef0123 "
        "Authorization: Bearer sk-live-123 X-Amz-Credential=AKIA/2025 https://u:p@host/x"
    )
    for secret in (TOKEN, AWS_SECRET, "abcdef0123", "sk-live-123", "AKIA/2025", "u:p@"):
        assert secret not in text
    assert "https://bucket.r2.example.com/k.ts?<redacted>" in text
    nested = redactor.value({"a": [TOKEN, {"b": f"x{AWS_SECRET}y"}], TOKEN: 1, "n": 3, "f": None})
    assert json.dumps(nested).count("***") == 3 and nested["n"] == 3 and nested["f"] is None


def test_logs_are_json_lines_with_context_and_no_secrets() -> None:
    stream = io.StringIO()
    log = setup_logging([TOKEN], stream=stream)
    try:
        log.bind(job_id=42, attempt=2)
        log.info("progress", phase="transcoding", percent=41.5)
        logging.getLogger("api_client.client").warning("job API POST %s: HTTP 503", "https://api.example.com/x?sig=abc")
        try:
            raise RuntimeError(f"boom with {TOKEN}")
        except RuntimeError:
            log.error("internal_error", "failed", exc_info=True)
        log.bind(attempt=None)
        log.info("after")
    finally:
        logging.getLogger().handlers.clear()
    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["event"] for r in records] == ["progress", "log", "internal_error", "after"]
    assert records[0]["job_id"] == 42 and records[0]["attempt"] == 2 and records[0]["percent"] == 41.5
    assert records[0]["ts"].endswith("Z") and records[0]["level"] == "info" and "uptime_s" in records[0]
    assert records[1]["logger"] == "api_client.client" and "sig=abc" not in records[1]["message"]
    assert "RuntimeError" in records[2]["traceback"]
    assert "attempt" not in records[3]
    assert TOKEN not in stream.getvalue()


# --------------------------------------------------------------------------- prefixes


def test_run_directories_and_hls_paths() -> None:
    run = RunDir(video_id=7, job_id=42, attempt=2, run_tag="3f9c0b1d")
    assert run.relative == "7/42-a2-3f9c0b1d/"
    s3 = OutputRoot("academy-videos", "hls/")
    assert run.destination(s3) == "s3://academy-videos/hls/7/42-a2-3f9c0b1d/"
    assert run.hls_path(s3) == "hls/7/42-a2-3f9c0b1d/master.m3u8"
    local = OutputRoot(None, "/srv/out/")
    assert run.destination(local) == "/srv/out/7/42-a2-3f9c0b1d/"
    assert run.hls_path(local) == "7/42-a2-3f9c0b1d/master.m3u8"
    # What the API accepts as an hls_path.
    CompletionReport(
        hls_path=run.hls_path(s3),
        duration_s=1.0,
        renditions=(
            RenditionReport(name="a", width=2, height=2, bandwidth_bps=2, average_bandwidth_bps=1, codecs="x"),
        ),
        total_bytes=1,
    )
    assert parse_run_dir(run.relative) == run
    for name in ("7/42-a2-3F9C0B1D/", "7/42-a2-3f9c0b1/", "7/42-a0-3f9c0b1d/", "7/42-a2-3f9c0b1d", "x/42-a2-3f9c0b1d/"):
        assert parse_run_dir(name) is None


def test_the_job_stem_matches_only_the_jobs_own_runs() -> None:
    stem = job_stem(7, 4)
    mine = RunDir(video_id=7, job_id=4, attempt=3, run_tag="00000000").relative
    other = RunDir(video_id=7, job_id=45, attempt=1, run_tag="00000000").relative
    assert mine.startswith(stem) and not other.startswith(stem)


def test_run_tags_are_random_and_well_formed() -> None:
    tags = {new_run_tag() for _ in range(200)}
    assert len(tags) == 200
    for tag in tags:
        RunDir(video_id=1, job_id=1, attempt=1, run_tag=tag)


# --------------------------------------------------------------------------- playlists

MASTER_TEXT = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="audio/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=430501,AVERAGE-BANDWIDTH=400000,CODECS="avc1.64000d,mp4a.40.2",RESOLUTION=320x180,FRAME-RATE=30.000,AUDIO="audio"
180p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=930501,CODECS="avc1.64001e,mp4a.40.2",RESOLUTION=640x360,FRAME-RATE=30.000,AUDIO="audio"
360p/index.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=12032,CODECS="avc1.64000d",RESOLUTION=320x180,URI="180p/iframes.m3u8"
"""

MEDIA_TEXT = """#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:4
#EXT-X-PLAYLIST-TYPE:VOD
#EXTINF:4.000000,
seg_00000.ts
#EXTINF:2.500000,
seg_00001.ts
#EXT-X-ENDLIST
"""


def test_attribute_lists() -> None:
    assert parse_attributes('A=1,B="x,y",C=0x1F,RESOLUTION=1x2') == {
        "A": "1",
        "B": "x,y",
        "C": "0x1F",
        "RESOLUTION": "1x2",
    }
    with pytest.raises(ValueError):
        parse_attributes('A="unterminated')


def test_master_playlists_read_back() -> None:
    master = parse_master(MASTER_TEXT)
    assert [(v.uri, v.bandwidth_bps, v.average_bandwidth_bps, v.width, v.height) for v in master.variants] == [
        ("180p/index.m3u8", 430501, 400000, 320, 180),
        ("360p/index.m3u8", 930501, None, 640, 360),
    ]
    assert master.variants[0].codecs == "avc1.64000d,mp4a.40.2"
    assert master.playlist_uris == ("180p/index.m3u8", "360p/index.m3u8", "audio/index.m3u8", "180p/iframes.m3u8")
    body = completion_report(master, hls_path="hls/1/2-a1-00000000/master.m3u8", duration_s=6.5, total_bytes=1000)
    report = CompletionReport(
        hls_path=body["hls_path"],
        duration_s=body["duration_s"],
        renditions=tuple(RenditionReport.from_json(r) for r in body["renditions"]),
        total_bytes=body["total_bytes"],
    )
    assert [r.name for r in report.renditions] == ["180p", "360p"]
    assert report.renditions[1].average_bandwidth_bps == report.renditions[1].bandwidth_bps  # no AVERAGE: the peak


@pytest.mark.parametrize(
    "text",
    [
        "",
        "#EXTM3U\n",  # no variant
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n",  # no URI line
        "#EXTM3U\n#EXT-X-STREAM-INF:RESOLUTION=2x2\na.m3u8\n",  # no BANDWIDTH
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,RESOLUTION=big\na.m3u8\n",
        "#EXTM3U\na.m3u8\n",
        MEDIA_TEXT,
    ],
)
def test_master_playlists_that_are_not(text: str) -> None:
    with pytest.raises(ValueError):
        parse_master(text)


def test_media_playlists_read_back() -> None:
    media = parse_media(MEDIA_TEXT)
    assert media.segment_uris == ("seg_00000.ts", "seg_00001.ts") and media.ended
    assert media.duration_s == pytest.approx(6.5)
    fmp4 = parse_media('#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:4,\nseg.m4s\n')
    assert fmp4.map_uris == ("init.mp4",) and not fmp4.ended
    with pytest.raises(ValueError):
        parse_media(MASTER_TEXT)
    with pytest.raises(ValueError):
        parse_media("#EXTM3U\n#EXTINF:x,\nseg.ts\n")


def test_uris_stay_inside_the_ladder() -> None:
    assert resolve("7/1-a1-x/", "180p/index.m3u8", within="7/1-a1-x/") == "7/1-a1-x/180p/index.m3u8"
    assert resolve("7/1-a1-x/180p/", "../audio/a.ts", within="7/1-a1-x/") == "7/1-a1-x/audio/a.ts"
    for uri in ("../../etc/passwd", "/abs.ts", "https://evil/x.ts", "a.ts?x=1", ""):
        with pytest.raises(ValueError):
            resolve("7/1-a1-x/180p/", uri, within="7/1-a1-x/")
    assert rendition_name("720p/index.m3u8", 0) == "720p"
    assert rendition_name("v.m3u8", 1) == "v"
    assert rendition_name("_x/index.m3u8", 2) == "variant2"


# --------------------------------------------------------------------------- stored ladders


@pytest.fixture(scope="module")
def ladder_root(tmp_path_factory: pytest.TempPathFactory, clip: ClipFactory) -> Path:
    """A real ladder, as the worker lays it out: <root>/7/42-a1-0000000a/."""
    root = tmp_path_factory.mktemp("ladders")
    run = RunDir(video_id=7, job_id=42, attempt=1, run_tag="0000000a")
    config = TranscodeConfig(encoder=EncoderSettings(preset="ultrafast"), threads=1)
    transcode(clip(), root / run.relative, config=config)
    return root


def test_a_stored_ladder_reads_back_as_its_report(ladder_root: Path) -> None:
    root = OutputRoot(None, f"{ladder_root}/")
    run = RunDir(video_id=7, job_id=42, attempt=1, run_tag="0000000a")
    body = inspect_ladder(LocalStore(ladder_root), root, run)
    assert body["hls_path"] == "7/42-a1-0000000a/master.m3u8"
    assert body["duration_s"] == pytest.approx(2.0, abs=0.1)
    assert body["total_bytes"] == sum(p.stat().st_size for p in (ladder_root / run.relative).rglob("*") if p.is_file())
    [rendition] = body["renditions"]
    assert (rendition["name"], rendition["width"], rendition["height"]) == ("180p", 320, 180)
    assert rendition["codecs"].startswith("avc1.") and rendition["codecs"].endswith("mp4a.40.2")
    master = (ladder_root / run.relative / MASTER).read_text()
    assert f"BANDWIDTH={rendition['bandwidth_bps']}," in master


def test_finding_the_newest_whole_ladder_of_the_job(ladder_root: Path, tmp_path: Path) -> None:
    store_root = tmp_path
    for name in ("7/42-a1-0000000a/", "7/42-a2-0000000b/", "7/42-a3-0000000c/", "7/420-a1-0000000d/"):
        _copy_tree(ladder_root / "7/42-a1-0000000a", store_root / name)
    # Attempt 3 died mid-run (no master); attempt 2 lost a segment; job 420 is another job.
    (store_root / "7/42-a3-0000000c" / MASTER).unlink()
    next((store_root / "7/42-a2-0000000b").rglob("*.ts")).unlink()
    now = time.time()
    os.utime(store_root / "7/42-a1-0000000a" / MASTER, (now - 100, now - 100))
    os.utime(store_root / "7/420-a1-0000000d" / MASTER, (now + 100, now + 100))
    skipped: list[str] = []
    root = OutputRoot(None, f"{store_root}/")
    found = find_complete_ladder(
        LocalStore(store_root), root, video_id=7, job_id=42, on_skip=lambda d, why: skipped.append(d)
    )
    assert found is not None and found.run.relative == "7/42-a1-0000000a/"
    assert found.report["hls_path"] == "7/42-a1-0000000a/master.m3u8"
    assert skipped == ["7/42-a2-0000000b/"]
    assert find_complete_ladder(LocalStore(store_root), root, video_id=7, job_id=43) is None
    assert find_complete_ladder(LocalStore(tmp_path / "nothing"), root, video_id=7, job_id=42) is None


def test_a_ladder_with_a_broken_master_is_not_whole(ladder_root: Path, tmp_path: Path) -> None:
    run = RunDir(video_id=7, job_id=42, attempt=1, run_tag="0000000a")
    _copy_tree(ladder_root / run.relative, tmp_path / run.relative)
    (tmp_path / run.relative / MASTER).write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n../../x.m3u8\n")
    with pytest.raises(IncompleteLadderError, match="leads outside"):
        inspect_ladder(LocalStore(tmp_path), OutputRoot(None, f"{tmp_path}/"), run)


def test_a_stored_ladder_reports_its_manifest_and_is_checked_against_it(ladder_root: Path, tmp_path: Path) -> None:
    run = RunDir(video_id=7, job_id=42, attempt=1, run_tag="0000000a")
    root = OutputRoot(None, f"{ladder_root}/")
    body = inspect_ladder(LocalStore(ladder_root), root, run)
    stored = (ladder_root / run.relative / "manifest.json").read_bytes()
    assert body["manifest"] == json.loads(stored)
    CompletionReport(  # the contract accepts the report as the worker sends it
        hls_path=body["hls_path"],
        duration_s=body["duration_s"],
        renditions=tuple(RenditionReport.from_json(r) for r in body["renditions"]),
        total_bytes=body["total_bytes"],
        manifest=body["manifest"],
    )

    # An object the manifest lists is gone (the master's playlists and segments are all there): not whole.
    _copy_tree(ladder_root / run.relative, tmp_path / run.relative)
    (tmp_path / run.relative / "poster.jpg").unlink()
    with pytest.raises(IncompleteLadderError, match=r"lists .poster\.jpg., which is missing"):
        inspect_ladder(LocalStore(tmp_path), OutputRoot(None, f"{tmp_path}/"), run)
    # A listed object of another size: not whole either.
    (tmp_path / run.relative / "poster.jpg").write_bytes(b"not the poster")
    with pytest.raises(IncompleteLadderError, match="the manifest says"):
        inspect_ladder(LocalStore(tmp_path), OutputRoot(None, f"{tmp_path}/"), run)
    # A ladder without a manifest (an older engine) still reads back, with none.
    (tmp_path / run.relative / "poster.jpg").write_bytes((ladder_root / run.relative / "poster.jpg").read_bytes())
    (tmp_path / run.relative / "manifest.json").unlink()
    assert "manifest" not in inspect_ladder(LocalStore(tmp_path), OutputRoot(None, f"{tmp_path}/"), run)


def _copy_tree(source: Path, target: Path) -> None:
    for path in source.rglob("*"):
        if path.is_file():
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(path.read_bytes())


# --------------------------------------------------------------------------- reasons and errors


def test_the_reason_table_is_the_contracts_enum() -> None:
    assert set(REASONS) == WORKER_REASON_CODES
    assert "stalled" not in REASONS  # the web app's scan writes it, never a worker


def test_reasons_agree_with_the_exit_code_table() -> None:
    for reason in REASONS.values():
        assert reason.retryable == (reason.exit_code in RETRYABLE), reason
        assert reason.exit_code is not ExitCode.OK
    # Every exit code a failure can end in has a reason, except the ones that end a run before a job is known.
    assert {r.exit_code for r in REASONS.values()} == set(ExitCode) - {ExitCode.OK}
    # What the brief asks: bad input no; storage, network, termination yes.
    assert not REASONS["bad_input"].retryable
    assert REASONS["storage_error"].retryable and REASONS["terminated"].retryable
    assert REASONS["api_unavailable"].retryable and REASONS["crashed"].retryable


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (UnsupportedInputError("audio only"), "input", "bad_input"),
        (SourceNotFoundError("no such key"), "input", "bad_input"),
        (MediaError("decoder failed"), "media", "media_error"),
        (StorageError("503 until the deadline", retryable=True), "storage", "storage_error"),
        (CredentialsError("403"), "storage_denied", "storage_denied"),
        (StoreError("ListObjectsV2 failed: HTTP 500", retryable=True), "storage", "storage_error"),
        (
            StoreError("ListObjectsV2 failed: HTTP 403", retryable=False, denied=True),
            "storage_denied",
            "storage_denied",
        ),
        (OutputError("disk full"), "output", "storage_error"),
        (ConfigError("bad preset"), "config", "config_error"),
        (InputError("truncated"), "input", "bad_input"),
        (MemoryError(), "crashed", "crashed"),
        (KeyError("bug"), "internal", "internal"),
    ],
)
def test_child_errors_are_classified(error: BaseException, kind: str, reason: str) -> None:
    assert classify(error)[0] == kind
    assert reason_for_child_error(kind).code == reason


def test_a_cancelled_run_is_its_own_kind() -> None:
    assert classify(CancelledError("stop")) == ("cancelled", True)


def test_sources_local_files_only_for_local_runs(tmp_path: Path) -> None:
    def source(uri: str, output: str) -> Any:
        settings = read_settings(["1"], {**ENV, "HLS_OUTPUT_URI": output})
        log = setup_logging(stream=io.StringIO())
        try:
            return WorkerRun(settings, log, started=time.monotonic(), environ={})._source(uri)
        finally:
            logging.getLogger().handlers.clear()

    assert source("s3://b/k.mp4", "s3://out/hls/") == "s3://b/k.mp4"
    assert source("file:///data/in%20put.mp4", str(tmp_path)) == "/data/in put.mp4"
    assert source("/data/in.mp4", str(tmp_path)) == "/data/in.mp4"
    for uri, output in (
        ("file:///data/in.mp4", "s3://out/hls/"),  # production never reads container files
        ("https://example.com/in.mp4", str(tmp_path)),
        ("file://host/in.mp4", str(tmp_path)),
        ("in.mp4", str(tmp_path)),
    ):
        failure = source(uri, output)
        assert not isinstance(failure, str) and failure.reason.code == "bad_input", uri


# --------------------------------------------------------------------------- progress posts


def test_progress_is_throttled_and_a_refusal_is_not_fatal(tmp_path: Path) -> None:
    stream = io.StringIO()
    log = setup_logging(stream=stream)
    gap_s = 0.3
    try:
        with ReferenceServer(tmp_path / "jobs.db", token=TOKEN) as server:
            job_id = server.create_job("s3://b/in.mp4")
            with JobApiClient(server.url, TOKEN) as client:
                client.report_started(job_id, attempt=1, batch_job_id="b1")
                reporter = ProgressReporter(
                    client, job_id=job_id, attempt=1, interval_s=60, min_interval_s=gap_s, deadline_s=2, log=log
                )
                first_offered = time.monotonic()
                reporter.offer(0, "transcoding")
                wait_until(lambda: reporter.posted == 1, what="the first post")
                for percent in range(1, 50):
                    reporter.offer(percent, "transcoding")
                reporter.offer(99, "publishing")
                reporter.offer(100, "publishing")
                wait_until(lambda: reporter.posted == 2, what="the phase change's post")
                # A new phase waits for the contract's least gap; then only the
                # latest offer goes out. Within a phase the rest wait for the
                # interval and are replaced.
                assert time.monotonic() - first_offered >= gap_s
                assert reporter.posted == 2 and reporter.moved_on is None
                assert server.get_job(job_id)["progress"] == {"percent": 100.0, "phase": "publishing"}
                server.cancel_job(job_id)
                reporter.offer(100, "done")
                wait_until(lambda: reporter.moved_on is not None, what="the refusal")
                # Still two posts: the publishing phase posted nothing more meanwhile (its interval is 60 s).
                assert reporter.failed == 1 and reporter.posted == 2
                reporter.close()
    finally:
        logging.getLogger().handlers.clear()
    refused = [json.loads(line) for line in stream.getvalue().splitlines() if "progress_refused" in line]
    assert refused and refused[0]["job_state"] == "CANCELLED" and refused[0]["stopping"] is True


# --------------------------------------------------------------------------- processes


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def test_the_parent_imports_neither_the_engine_nor_pyav_nor_boto3() -> None:
    result = _python(
        "import sys, worker, worker.__main__, worker.run, worker.settings, worker.log\n"
        "engine = {'av', 'boto3', 'botocore', 'transcoder', 'numpy'}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in engine)\n"
        "print(bad)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_missing_settings_exit_usage_with_one_json_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOB_API_", "HLS_", "VIDEO_", "WORKER_"))}
    env["JOB_API_TOKEN"] = TOKEN  # present, so it must not show
    result = subprocess.run(
        [sys.executable, "-m", "worker"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == ExitCode.USAGE
    [line] = result.stdout.splitlines()
    record = json.loads(line)
    assert record["event"] == "bad_settings" and record["level"] == "error"
    assert any("JOB_API_URL" in p for p in record["problems"]) and any("job id" in p for p in record["problems"])
    assert TOKEN not in result.stdout + result.stderr


def test_the_child_transcodes_then_adopts_a_local_ladder(tmp_path: Path, clip: ClipFactory) -> None:
    source = clip()
    spec: dict[str, Any] = {
        "source": str(source),
        "output_root": {"bucket": None, "prefix": f"{tmp_path}/"},
        "video_id": 3,
        "job_id": 5,
        "attempt": 1,
        "run_tag": "0000beef",
        "preset": "ultrafast",
        "threads": 1,
    }

    def child(spec: dict[str, Any]) -> list[dict[str, Any]]:
        # stdin stays open until the run ends: its end-of-file would mean "the parent is gone".
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.child"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(spec) + "\n")
        process.stdin.flush()
        events = [json.loads(line) for line in process.stdout]
        process.stdin.close()
        assert process.wait(timeout=60) == 0
        return events

    events = child(spec)
    assert {e["event"] for e in events} <= {"progress", "log", "result"}
    [result] = [e for e in events if e["event"] == "result"]
    assert result["reused"] is False and result["report"]["hls_path"] == "3/5-a1-0000beef/master.m3u8"
    assert result["stats"]["rungs"] == ["180p"]
    assert any(e["event"] == "progress" and e["phase"] == "transcoding" for e in events)

    again = child({**spec, "attempt": 2, "run_tag": "0000cafe"})
    [adopted] = [e for e in again if e["event"] == "result"]
    assert adopted["reused"] is True and adopted["report"] == result["report"]
    assert not (tmp_path / "3/5-a2-0000cafe").exists()

    [error] = [
        e for e in child({**spec, "job_id": 6, "source": str(tmp_path / "missing.mp4")}) if e["event"] == "error"
    ]
    assert error["kind"] == "input" and error["retryable"] is False


def test_the_child_cancels_on_sigterm_and_when_its_parent_goes(tmp_path: Path, clip: ClipFactory) -> None:
    source = clip(width=640, height=360, seconds=8.0)
    spec = {
        "source": str(source),
        "output_root": {"bucket": None, "prefix": f"{tmp_path}/"},
        "video_id": 3,
        "job_id": 5,
        "attempt": 1,
        "run_tag": "0000beef",
        "preset": "veryfast",
        "threads": 1,
    }
    for how, tag in (("sigterm", "0000aaaa"), ("stdin_closed", "0000bbbb")):
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.child"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps({**spec, "run_tag": tag}) + "\n")
        process.stdin.flush()
        events: list[dict[str, Any]] = []
        for line in process.stdout:
            events.append(json.loads(line))
            if events[-1].get("phase") == "transcoding":
                break
        if how == "sigterm":
            process.terminate()
        else:
            process.stdin.close()
        rest = process.stdout.read()
        assert process.wait(timeout=30) == 0
        final = json.loads(rest.splitlines()[-1])
        assert final["event"] == "error" and final["kind"] == "cancelled", how
    assert not list(tmp_path.rglob(MASTER))


def test_sigterm_while_the_api_is_down_ends_the_retries_at_once(tmp_path: Path) -> None:
    with socket.socket() as holder:  # a port nobody answers on
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOB_API_", "HLS_", "VIDEO_", "WORKER_", "AWS_"))}
    env.update(
        JOB_API_URL=f"http://127.0.0.1:{port}",
        JOB_API_TOKEN=TOKEN,
        HLS_OUTPUT_URI=str(tmp_path),
        JOB_API_DEADLINE_S="120",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:  # the client is retrying the GET
        if "api_client.client" in line:
            break
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == ExitCode.TERMINATED
    assert time.monotonic() - sent < 5
    finished = json.loads(out.splitlines()[-1])
    assert finished["event"] == "worker_finished" and finished["reason_code"] == "terminated"
