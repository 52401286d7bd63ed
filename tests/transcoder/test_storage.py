"""Object storage: locations, R2-safe requests, the streaming reader and the uploader.

The R2 header checks run against a fake https endpoint (botocore's event
system answers before anything is sent); everything else runs against a real
SeaweedFS on loopback, with faults injected by a proxy in between.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse  # type: ignore[import-untyped]

from tests.support.faultproxy import FaultProxy, Rule
from tests.support.s3server import (
    ACCESS_KEY,
    SECRET_KEY,
    SeaweedServer,
    Space,
    client_for,
    fast_config,
)
from tests.support.waiting import wait_until
from transcoder.errors import ConfigError, InputError, OutputError
from transcoder.storage import (
    MIB,
    CredentialsError,
    S3Location,
    SourceChangedError,
    SourceNotFoundError,
    SourceReadError,
    StorageConfig,
    StorageError,
    UploadError,
)
from transcoder.storage.client import make_client, make_session, transfer_config
from transcoder.storage.objects import ObjectStore
from transcoder.storage.reader import S3Reader
from transcoder.storage.uploader import S3Sink, part_ranges

KIB = 1024

# ----------------------------------------------------------------------------- locations and settings


@pytest.mark.parametrize(
    ("uri", "bucket_name", "key"),
    [
        ("s3://videos/in/a.mp4", "videos", "in/a.mp4"),
        ("s3://my.bucket-1/x", "my.bucket-1", "x"),
        ("s3://abc/dir/with space.mov", "abc", "dir/with space.mov"),
    ],
)
def test_parse_object_location(uri: str, bucket_name: str, key: str) -> None:
    location = S3Location.parse(uri)
    assert (location.bucket, location.key) == (bucket_name, key)
    assert location.uri == uri


@pytest.mark.parametrize(
    ("uri", "key"),
    [("s3://out/jobs/1", "jobs/1/"), ("s3://out/jobs/1/", "jobs/1/"), ("s3://out", ""), ("s3://out/", "")],
)
def test_parse_prefix_location(uri: str, key: str) -> None:
    location = S3Location.parse(uri, prefix=True)
    assert location.key == key
    assert location.join("180p/seg_00000.ts").key == f"{key}180p/seg_00000.ts"


@pytest.mark.parametrize(
    "uri",
    ["s3://", "s3:///key", "s3://ab/key", "s3://Upper/key", "s3://bucket", "s3://bucket/dir/", "s3://b..x/k",
     "s3://bucket/a/../b", "http://bucket/key", "/local/path"],
)  # fmt: skip
def test_parse_rejects_bad_object_locations(uri: str) -> None:
    with pytest.raises(ConfigError):
        S3Location.parse(uri)


@pytest.mark.parametrize("relpath", ["../x", "/abs", "a/../../b", "", "dir/"])
def test_join_refuses_paths_outside_the_prefix(relpath: str) -> None:
    with pytest.raises(OutputError):
        S3Location.parse("s3://out/p/", prefix=True).join(relpath)


@pytest.mark.parametrize(
    "overrides",
    [
        {"part_size_bytes": 4 * MIB},  # R2 and S3 refuse parts under 5 MiB
        {"multipart_threshold_bytes": MIB},
        {"max_concurrency": 0},
        {"read_chunk_bytes": 1000},
        {"read_ahead_chunks": 0},
        {"read_concurrency": 9, "read_ahead_chunks": 4},
        {"endpoint_url": "r2.example.com"},
        {"retry_deadline_s": 0},
    ],
)
def test_storage_config_rejects_out_of_range_values(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        StorageConfig(**overrides)


@pytest.mark.parametrize(
    ("size", "part"),
    [(11 * MIB, 5 * MIB), (10 * MIB, 5 * MIB), (5 * MIB + 1, 5 * MIB), (64 * MIB, 16 * MIB), (3, 5 * MIB)],
)
def test_part_ranges_are_equal_but_the_last(size: int, part: int) -> None:
    ranges = part_ranges(size, part)
    sizes = [end - start for start, end in ranges]
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))  # contiguous
    assert len(set(sizes[:-1])) <= 1 and sizes[-1] <= sizes[0]


def test_part_ranges_grow_the_part_size_past_ten_thousand_parts() -> None:
    size = 200 * 1024 * MIB  # 200 GiB at 5 MiB would be 40,960 parts
    ranges = part_ranges(size, 5 * MIB)
    sizes = {end - start for start, end in ranges[:-1]}
    assert len(ranges) <= 10_000
    assert len(sizes) == 1 and sizes.pop() % MIB == 0


def _session() -> Any:
    return make_session(access_key_id="AKIDEXAMPLE", secret_access_key="fake-secret")


def test_client_settings_are_r2_safe() -> None:
    client = make_client(StorageConfig(endpoint_url="https://acct.r2.cloudflarestorage.com"), session=_session())
    config = client.meta.config
    assert client.meta.endpoint_url == "https://acct.r2.cloudflarestorage.com"
    assert client.meta.region_name == "auto"
    assert config.signature_version == "s3v4"
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.s3["payload_signing_enabled"] is True
    assert config.retries["mode"] == "standard"
    assert transfer_config().preferred_transfer_client == "classic"  # never CRT: it ignores endpoint_url


def test_endpoint_comes_from_botocore_environment_when_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    # The library reads no environment itself: botocore honours AWS_ENDPOINT_URL_S3 as aws-cli does.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://from-env.example.com")
    assert make_client(StorageConfig(), session=_session()).meta.endpoint_url == "https://from-env.example.com"
    explicit = make_client(StorageConfig(endpoint_url="https://explicit.example.com"), session=_session())
    assert explicit.meta.endpoint_url == "https://explicit.example.com"


# ----------------------------------------------------------------------------- what R2 would receive


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **kwargs: Any) -> Iterator[bytes]:
        yield self.body


@dataclass
class _Sent:
    operation: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeR2:
    """Answers every S3 request locally (botocore's before-send hook) and records it."""

    sent: list[_Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-send.s3.*", self.answer)
        return client

    def answer(self, request: Any, event_name: str, **kwargs: Any) -> AWSResponse:
        body = request.body
        if hasattr(body, "seek") and hasattr(body, "tell"):
            position = body.tell()
            data = body.read()
            body.seek(position)
        elif hasattr(body, "read"):
            data = b"<a stream>"  # boto3's aws-chunked wrapper (the control test): not replayable
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = bytes(body or b"")
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else str(v) for k, v in request.headers.items()}
        operation = event_name.rsplit(".", 1)[-1]
        with self.lock:
            self.sent.append(_Sent(operation, request.method, request.url, headers, data))
        reply = b""
        if operation == "CreateMultipartUpload":
            reply = (
                b"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
                b"<UploadId>U1</UploadId></InitiateMultipartUploadResult>"
            )
        elif operation == "CompleteMultipartUpload":
            reply = b'<CompleteMultipartUploadResult><ETag>"done-3"</ETag></CompleteMultipartUploadResult>'
        etag = '"' + hashlib.md5(data).hexdigest() + '"'
        return AWSResponse(request.url, 200, {"ETag": etag}, _Raw(reply))

    def of(self, operation: str) -> list[_Sent]:
        return [s for s in self.sent if s.operation == operation]


_R2 = "https://account.r2.cloudflarestorage.com"


def _forbidden_headers(headers: dict[str, str]) -> list[str]:
    bad = [
        k for k in headers if k.startswith("x-amz-checksum-") or k in ("x-amz-trailer", "x-amz-sdk-checksum-algorithm")
    ]
    if "aws-chunked" in headers.get("content-encoding", ""):
        bad.append("content-encoding: aws-chunked")
    return bad


def test_uploads_send_what_r2_accepts() -> None:
    fake = FakeR2()
    config = StorageConfig(endpoint_url=_R2, multipart_threshold_bytes=5 * MIB, part_size_bytes=5 * MIB)
    client = fake.attach(make_client(config, session=_session()))
    big = os.urandom(11 * MIB + 12345)  # three parts: 5 MiB, 5 MiB, the rest
    with S3Sink(client, S3Location.parse("s3://videos/job/1/", prefix=True), config) as sink:
        sink.put("180p/seg_00000.ts", b"\x47" * 188 * 50)
        sink.put("180p/index.m3u8", b"#EXTM3U\n")
        sink.put("video.mp4", big)
        sink.publish("master.m3u8", b"#EXTM3U\n#EXT-X-VERSION:3\n")

    writes = fake.of("PutObject") + fake.of("UploadPart")
    assert len(fake.of("PutObject")) == 3 and len(fake.of("UploadPart")) == 3
    for sent in writes:
        assert sent.url.startswith("https://")
        assert _forbidden_headers(sent.headers) == [], sent.url
        # SigV4 over the body's SHA-256: not UNSIGNED-PAYLOAD, not a STREAMING-* signature.
        digest = sent.headers["x-amz-content-sha256"]
        assert re.fullmatch(r"[0-9a-f]{64}", digest), digest
        assert digest == hashlib.sha256(sent.body).hexdigest()
        assert "x-amz-content-sha256" in sent.headers["authorization"].lower()
        assert "/auto/s3/aws4_request" in sent.headers["authorization"]

    part_sizes = [int(p.headers["content-length"]) for p in sorted(fake.of("UploadPart"), key=_part_number)]
    assert part_sizes == [5 * MIB, 5 * MIB, 11 * MIB + 12345 - 10 * MIB]
    assert len(set(part_sizes[:-1])) == 1 and part_sizes[-1] <= part_sizes[0]
    assert b"".join(p.body for p in sorted(fake.of("UploadPart"), key=_part_number)) == big

    by_key = {s.url.rsplit("/job/1/", 1)[1]: s.headers for s in fake.of("PutObject")}
    assert by_key["180p/seg_00000.ts"]["content-type"] == "video/mp2t"
    assert by_key["180p/seg_00000.ts"]["cache-control"] == "public, max-age=31536000, immutable"
    assert by_key["180p/index.m3u8"]["content-type"] == "application/vnd.apple.mpegurl"
    assert by_key["master.m3u8"]["cache-control"] == "public, max-age=60"
    create = fake.of("CreateMultipartUpload")[0].headers
    assert create["content-type"] == "video/mp4" and "immutable" in create["cache-control"]
    # The master playlist is the last request of all: after every part and object.
    assert fake.sent[-1].operation == "PutObject" and fake.sent[-1].url.endswith("/master.m3u8")


def test_the_header_check_catches_boto3_defaults() -> None:
    """A control: boto3's default checksum settings produce exactly what the test above forbids."""
    fake = FakeR2()
    client = fake.attach(_session().client("s3", endpoint_url=_R2, region_name="auto"))
    client.put_object(Bucket="videos", Key="k", Body=b"x" * 100)
    assert _forbidden_headers(fake.sent[0].headers) != []


def _part_number(sent: _Sent) -> int:
    match = re.search(r"partNumber=(\d+)", sent.url)
    assert match
    return int(match.group(1))


# ----------------------------------------------------------------------------- the reader, on SeaweedFS


def _put_random(client: Any, space: Space, path: str, size: int) -> bytes:
    data = os.urandom(size)
    client.put_object(Bucket=space.bucket, Key=space.key(path), Body=data)
    return data


def _ranges_requested(client: Any) -> list[str]:
    ranges: list[str] = []
    lock = threading.Lock()

    def record(params: dict[str, Any], **kwargs: Any) -> None:
        with lock:
            ranges.append(params["Range"])

    client.meta.events.register("provide-client-params.s3.GetObject", record)
    return ranges


def test_reader_reads_any_position_within_its_memory_bound(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    data = _put_random(s3, space, "in/source.bin", 1 * MIB + 12_345)
    config = fast_config(seaweed.endpoint, read_chunk_bytes=64 * KIB, read_ahead_chunks=3, read_concurrency=2)
    with S3Reader(s3, S3Location.parse(space.uri("in/source.bin")), config) as reader:
        assert (reader.size, reader.uri) == (len(data), space.uri("in/source.bin"))
        assert reader.read(1000) == data[:1000]
        for position, n in [(500_000, 70_000), (len(data) - 10, 100), (65_530, 20), (0, 5), (len(data), 10)]:
            reader.seek(position)
            got = b""
            while len(got) < n and (piece := reader.read(n - len(got))):
                got += piece
            assert got == data[position : position + n]
        reader.seek(0)
        assert reader.read() == data
        assert reader.seek(-3, os.SEEK_END) == len(data) - 3 and reader.read(10) == data[-3:]
        assert reader.stats.peak_buffered_bytes <= (3 + 2) * 64 * KIB


def test_reader_restarts_read_ahead_at_a_seek_and_reuses_chunks(seaweed: SeaweedServer, space: Space) -> None:
    client = seaweed.client()
    size = 20 * 64 * KIB
    data = _put_random(client, space, "moov-at-end.bin", size)
    ranges = _ranges_requested(client)
    config = fast_config(seaweed.endpoint, read_chunk_bytes=64 * KIB, read_ahead_chunks=2, read_concurrency=1)
    with S3Reader(client, S3Location.parse(space.uri("moov-at-end.bin")), config) as reader:
        # What FFmpeg does with an mp4 whose index is at the end: head, tail, back to the head.
        assert reader.read(32) == data[:32]
        wait_until(lambda: len(ranges) >= 3, what="the read-ahead window")  # chunks 0, 1, 2
        reader.seek(size - 1000)
        assert reader.read(1000) == data[-1000:]
        fetched_after_tail = len(ranges)
        reader.seek(32)
        assert reader.read(64 * KIB - 32) == data[32 : 64 * KIB]
    starts = [int(r.split("=")[1].split("-")[0]) // (64 * KIB) for r in ranges]
    assert starts[:3] == [0, 1, 2]
    assert 19 in starts[3:fetched_after_tail]  # the window jumped to the tail at once
    assert starts.count(0) == 1  # the head was kept: not fetched again after the tail
    assert len(starts) <= 6


def test_missing_source_is_a_clear_input_error(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    with pytest.raises(SourceNotFoundError) as caught:
        S3Reader(s3, S3Location.parse(space.uri("nope.mp4")), fast_config(seaweed.endpoint))
    error = caught.value
    assert isinstance(error, InputError) and not error.retryable
    assert space.uri("nope.mp4") in str(error)


def test_wrong_credentials_are_refused_and_never_shown(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    _put_random(s3, space, "a.bin", 1000)
    wrong = seaweed.client(secret_key="not-the-secret-at-all")
    with pytest.raises(CredentialsError) as caught:
        S3Reader(wrong, S3Location.parse(space.uri("a.bin")), fast_config(seaweed.endpoint))
    assert not caught.value.retryable
    assert "not-the-secret-at-all" not in str(caught.value) and ACCESS_KEY not in str(caught.value)
    unknown = seaweed.client(access_key="nobody-knows-me", secret_key=SECRET_KEY)
    sink = S3Sink(unknown, S3Location.parse(space.uri("out/"), prefix=True), fast_config(seaweed.endpoint))
    with pytest.raises(CredentialsError) as caught:
        sink.retract("master.m3u8")
    sink.close()
    assert SECRET_KEY not in str(caught.value) and "nobody-knows-me" not in str(caught.value)


def test_an_object_replaced_mid_read_fails_cleanly(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    data = _put_random(s3, space, "changing.bin", 16 * 64 * KIB)
    config = fast_config(seaweed.endpoint, read_chunk_bytes=64 * KIB, read_ahead_chunks=1, read_concurrency=1)
    with S3Reader(s3, S3Location.parse(space.uri("changing.bin")), config) as reader:
        assert reader.read(100) == data[:100]
        _put_random(s3, space, "changing.bin", 16 * 64 * KIB)  # replaced under the reader
        reader.seek(10 * 64 * KIB)
        with pytest.raises(SourceChangedError) as caught:
            reader.read(100)
        assert caught.value.retryable  # a new run reads the new object whole
        with pytest.raises(SourceChangedError):
            reader.read(100)  # sticky: no mixing of two files later either


@pytest.mark.parametrize(
    "rule",
    [
        Rule("reset_body", method="GET", times=3),  # download cut mid-stream
        Rule("reset", method="GET", times=3),  # connection reset before any answer
        Rule("status", method="GET", status=500, times=3),
        Rule("status", method="GET", status=503, times=3),
        Rule("status", method="GET", status=429, times=3),  # more than botocore's attempts: our retry
        Rule("delay", method="GET", delay_s=1.5, times=2),  # longer than the read timeout
        Rule("throttle", method="GET", bytes_per_s=2 * MIB, times=None),
    ],
    ids=lambda rule: f"{rule.action}-{rule.status}" if rule.action == "status" else rule.action,
)
def test_reader_rides_out_transient_faults(seaweed: SeaweedServer, s3: Any, space: Space, rule: Rule) -> None:
    data = _put_random(s3, space, "faulty.bin", 8 * 64 * KIB + 7)
    with FaultProxy(seaweed.s3_port) as proxy:
        config = fast_config(
            proxy.endpoint, read_chunk_bytes=64 * KIB, read_ahead_chunks=2, read_timeout_s=1.0, attempts_per_call=1
        )
        proxy.add(Rule(**{**_rule_args(rule), "path": r"/faulty\.bin"}))  # GETs only: the HEAD passes
        client = client_for(proxy.endpoint, config=config)
        with S3Reader(client, S3Location.parse(space.uri("faulty.bin")), config) as reader:
            assert reader.read() == data
            assert proxy.hits() > 0
            if rule.action != "throttle":
                assert reader.stats.retries >= 1


def test_reader_gives_up_after_its_deadline_and_says_a_retry_may_help(
    seaweed: SeaweedServer, s3: Any, space: Space
) -> None:
    _put_random(s3, space, "down.bin", 100_000)
    with FaultProxy(seaweed.s3_port) as proxy:
        config = fast_config(proxy.endpoint, retry_deadline_s=1.0, attempts_per_call=1)
        proxy.add(Rule("status", method="GET", status=503, times=None))
        client = client_for(proxy.endpoint, config=config)
        with S3Reader(client, S3Location.parse(space.uri("down.bin")), config) as reader:
            started = time.monotonic()
            with pytest.raises(SourceReadError) as caught:
                reader.read(10)
            assert time.monotonic() - started < 5
    error = caught.value
    assert error.retryable and isinstance(error, StorageError)
    assert space.uri("down.bin") in str(error) and "503" in str(error)


def test_closing_the_reader_stops_its_threads(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    _put_random(s3, space, "t.bin", 10 * 64 * KIB)
    config = fast_config(seaweed.endpoint, read_chunk_bytes=64 * KIB, read_ahead_chunks=4, read_concurrency=3)
    reader = S3Reader(s3, S3Location.parse(space.uri("t.bin")), config)
    reader.read(10)
    threads = list(reader._threads)
    assert len(threads) == 3 and all(t.name.startswith("s3-read-") for t in threads)
    reader.close()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(ValueError):
        reader.read(1)


# ----------------------------------------------------------------------------- the uploader, on SeaweedFS


def _mp_config(endpoint: str, **overrides: Any) -> StorageConfig:
    return fast_config(endpoint, multipart_threshold_bytes=5 * MIB, part_size_bytes=5 * MIB, **overrides)


def test_sink_uploads_objects_and_multipart_with_headers(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    big = os.urandom(11 * MIB)
    config = _mp_config(seaweed.endpoint)
    with S3Sink(seaweed.client(), S3Location.parse(space.uri("job/"), prefix=True), config) as sink:
        # Its upload workers are all started with the sink, in this thread, whoever calls put later.
        names = {p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")}
        assert {f"s3-upload_{n}" for n in range(config.max_concurrency)} <= names
        sink.retract("master.m3u8")
        sink.put("a/seg_00000.ts", b"\x47" * 1880)
        sink.put("a/rendition.mp4", big)
        sink.put("a/index.m3u8", b"#EXTM3U\n")
        sink.publish("master.m3u8", b"#EXTM3U\n")
        assert sink.describe("a/index.m3u8") == space.uri("job/a/index.m3u8")
        assert sink.stats.multipart_objects == 1 and sink.stats.parts == 3
    assert space.keys(s3) == ["job/a/index.m3u8", "job/a/rendition.mp4", "job/a/seg_00000.ts", "job/master.m3u8"]
    assert s3.get_object(Bucket=space.bucket, Key=space.key("job/a/rendition.mp4"))["Body"].read() == big
    head = s3.head_object(Bucket=space.bucket, Key=space.key("job/a/rendition.mp4"))
    assert head["ContentType"] == "video/mp4" and head["CacheControl"] == "public, max-age=31536000, immutable"
    head = s3.head_object(Bucket=space.bucket, Key=space.key("job/master.m3u8"))
    assert head["ContentType"] == "application/vnd.apple.mpegurl" and head["CacheControl"] == "public, max-age=60"
    assert space.open_uploads(s3) == []


def test_sink_uploads_concurrently_within_its_bound(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    with FaultProxy(seaweed.s3_port) as proxy:
        proxy.add(Rule("delay", method="PUT", delay_s=0.2, times=None))
        config = fast_config(proxy.endpoint, max_concurrency=3)
        prefix = S3Location.parse(space.uri("c/"), prefix=True)
        with S3Sink(client_for(proxy.endpoint, config=config), prefix, config) as sink:
            started = time.monotonic()
            for n in range(12):
                sink.put(f"v/seg_{n:05d}.ts", bytes([n]) * 1000)  # returns at once: queued
            queued_s = time.monotonic() - started
            sink.flush()
        assert queued_s < 0.2
        assert 2 <= proxy.peak_in_flight <= 3
    assert len(space.keys(s3)) == 12


def test_sink_put_blocks_when_its_memory_budget_is_spent(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    with FaultProxy(seaweed.s3_port) as proxy:
        proxy.add(Rule("delay", method="PUT", delay_s=0.1, times=None))
        config = fast_config(proxy.endpoint, max_concurrency=4, max_pending_upload_bytes=250_000)
        prefix = S3Location.parse(space.uri("m/"), prefix=True)
        with S3Sink(client_for(proxy.endpoint, config=config), prefix, config) as sink:
            for n in range(10):
                sink.put(f"seg_{n:05d}.ts", os.urandom(100_000))
            sink.flush()
            assert sink.stats.peak_pending_bytes <= 250_000
    assert len(space.keys(s3)) == 10


def test_failed_multipart_is_aborted_and_nothing_is_published(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    with FaultProxy(seaweed.s3_port) as proxy:
        proxy.add(Rule("status", method="PUT", path=r"partNumber=2", status=503, times=None))
        config = _mp_config(proxy.endpoint, retry_deadline_s=1.0, attempts_per_call=1)
        sink = S3Sink(client_for(proxy.endpoint, config=config), S3Location.parse(space.uri(), prefix=True), config)
        sink.put("a/seg_00000.ts", b"\x47" * 1880)
        sink.put("a/rendition.mp4", os.urandom(11 * MIB))
        with pytest.raises(UploadError) as caught:
            sink.flush()
        error = caught.value
        assert isinstance(error, OutputError) and error.retryable
        assert space.uri("a/rendition.mp4") in str(error) and "UploadPart" in str(error)
        with pytest.raises(UploadError):
            sink.put("a/seg_00001.ts", b"late")  # the first failure sticks
        with pytest.raises(UploadError):
            sink.publish("master.m3u8", b"#EXTM3U\n")
        sink.abort()
        sink.close()
        assert sink.open_upload_ids() == []
    assert space.open_uploads(s3) == []
    assert space.keys(s3) == []  # what it stored was deleted; the master never written


def test_abort_mid_upload_leaves_no_multipart_upload_open(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    with FaultProxy(seaweed.s3_port) as proxy:
        proxy.add(Rule("throttle", method="PUT", path=r"partNumber=", bytes_per_s=8 * MIB, times=None))
        config = _mp_config(proxy.endpoint)
        sink = S3Sink(client_for(proxy.endpoint, config=config), S3Location.parse(space.uri(), prefix=True), config)
        sink.put("big.mp4", os.urandom(16 * MIB))
        wait_until(lambda: space.open_uploads(s3) != [], what="a multipart upload to open")
        sink.abort()
        sink.close()
    assert space.open_uploads(s3) == []
    assert space.keys(s3) == []


@pytest.mark.parametrize(
    "rule",
    [
        Rule("reset", method="PUT", times=3),  # reset while the body is being sent
        Rule("status", method="PUT", status=500, times=3),
        Rule("status", method="PUT", status=503, times=3),
        Rule("status", method="PUT", status=429, times=3),
        Rule("delay", method="PUT", delay_s=1.5, times=2),
        Rule("status", method="POST", status=503, times=2),  # Create/CompleteMultipartUpload
    ],
    ids=lambda rule: f"{rule.action}-{rule.method}-{rule.status}" if rule.action == "status" else rule.action,
)
def test_sink_rides_out_transient_faults(seaweed: SeaweedServer, s3: Any, space: Space, rule: Rule) -> None:
    big = os.urandom(11 * MIB)
    with FaultProxy(seaweed.s3_port) as proxy:
        proxy.add(Rule(**_rule_args(rule)))
        config = _mp_config(proxy.endpoint, read_timeout_s=1.0, attempts_per_call=1)
        prefix = S3Location.parse(space.uri(), prefix=True)
        with S3Sink(client_for(proxy.endpoint, config=config), prefix, config) as sink:
            sink.put("a/seg_00000.ts", b"\x47" * 1880)
            sink.put("a/rendition.mp4", big)
            sink.publish("master.m3u8", b"#EXTM3U\n")
            assert sink.stats.retries >= 1
        assert proxy.hits() >= 1
    assert space.keys(s3) == ["a/rendition.mp4", "a/seg_00000.ts", "master.m3u8"]
    assert s3.get_object(Bucket=space.bucket, Key=space.key("a/rendition.mp4"))["Body"].read() == big
    assert space.open_uploads(s3) == []


def test_sink_reports_a_missing_bucket_as_not_retryable(seaweed: SeaweedServer, s3: Any) -> None:
    sink = S3Sink(s3, S3Location.parse("s3://no-such-bucket-here/x/", prefix=True), fast_config(seaweed.endpoint))
    sink.put("a.ts", b"x")
    with pytest.raises(UploadError) as caught:
        sink.flush()
    sink.close()
    assert not caught.value.retryable and "no-such-bucket-here" in str(caught.value)


# ----------------------------------------------------------------------------- the object API, on SeaweedFS


def _count_requests(client: Any, operation: str) -> list[dict[str, Any]]:
    """The parameters of every ``operation`` call ``client`` makes from now on (botocore's event hook)."""
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **kwargs: Any) -> None:
        seen.append(dict(params))

    client.meta.events.register(f"provide-client-params.s3.{operation}", record)
    return seen


def test_object_store_lists_every_page_reads_and_deletes(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    sizes = {
        "runs/1-a1/x.ts": 10,
        "runs/1-a1/sub/y.ts": 20,
        "runs/1-a2/z.ts": 30,
        "runs/1-a3/v.ts": 35,
        "runs/2-a1/w.ts": 40,
    }
    for path, size in sizes.items():
        s3.put_object(Bucket=space.bucket, Key=space.key(path), Body=b"k" * size)
    client = client_for(seaweed.endpoint)
    # Two keys a page, so every listing below needs more than one request.
    client.meta.events.register(
        "provide-client-params.s3.ListObjectsV2", lambda params, **kwargs: params.update(MaxKeys=2)
    )
    lists = _count_requests(client, "ListObjectsV2")
    store = ObjectStore(client, space.bucket, fast_config(seaweed.endpoint))

    runs = [space.key(f"runs/1-a{n}/") for n in (1, 2, 3)]
    assert store.list_prefixes(space.key("runs/1-a")) == runs
    assert sum(1 for params in lists if params["Prefix"] == space.key("runs/1-a")) >= 2  # 3 prefixes, 2 a page
    listed = store.list_objects(space.key("runs/"))
    assert [(o.key, o.size) for o in listed] == sorted((space.key(k), v) for k, v in sizes.items())
    assert all(abs(o.modified - time.time()) < 600 for o in listed)
    assert sum(1 for params in lists if params["Prefix"] == space.key("runs/")) >= 3  # 5 objects, 2 a page

    info = store.info(space.key("runs/1-a2/z.ts"))
    assert info is not None and info.size == 30 and info.modified == pytest.approx(listed[2].modified, abs=2)
    assert store.read(space.key("runs/1-a1/x.ts"), max_bytes=10) == b"k" * 10
    assert store.read(space.key("runs/nope.ts"), max_bytes=10) is None
    assert store.info(space.key("runs/nope.ts")) is None
    with pytest.raises(StorageError) as caught:
        store.read(space.key("runs/2-a1/w.ts"), max_bytes=39)
    assert not caught.value.retryable and space.uri("runs/2-a1/w.ts") in str(caught.value)

    store.delete([space.key("runs/1-a1/x.ts"), space.key("runs/1-a2/z.ts"), space.key("runs/never-was.ts")])
    assert space.keys(s3) == ["runs/1-a1/sub/y.ts", "runs/1-a3/v.ts", "runs/2-a1/w.ts"]
    store.delete([])


@pytest.mark.parametrize(
    "rule",
    [
        Rule("status", method="GET", status=503, times=3),  # more than botocore's one attempt: the package's retry
        Rule("status", method="GET", status=429, times=3),
        Rule("reset", method="GET", times=2),
    ],
    ids=lambda rule: f"{rule.action}-{rule.status}" if rule.action == "status" else rule.action,
)
def test_object_store_rides_out_transient_faults(seaweed: SeaweedServer, s3: Any, space: Space, rule: Rule) -> None:
    s3.put_object(Bucket=space.bucket, Key=space.key("d/a.m3u8"), Body=b"#EXTM3U\n")
    with FaultProxy(seaweed.s3_port) as proxy:
        config = fast_config(proxy.endpoint, attempts_per_call=1)
        store = ObjectStore(client_for(proxy.endpoint, config=config), space.bucket, config)
        proxy.add(Rule(**_rule_args(rule)))
        assert [o.key for o in store.list_objects(space.key("d/"))] == [space.key("d/a.m3u8")]
        assert proxy.hits() == rule.times
        proxy.add(Rule(**_rule_args(rule)))
        assert store.read(space.key("d/a.m3u8"), max_bytes=100) == b"#EXTM3U\n"
        assert proxy.hits() == 2 * (rule.times or 0)


def test_object_store_says_which_failures_a_retry_could_help(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    config = fast_config(seaweed.endpoint)
    wrong = ObjectStore(seaweed.client(secret_key="not-the-secret-at-all"), space.bucket, config)
    with pytest.raises(CredentialsError) as refused:
        wrong.list_objects(space.key(""))
    assert not refused.value.retryable and "not-the-secret-at-all" not in str(refused.value)

    with pytest.raises(StorageError) as missing:
        ObjectStore(s3, "no-such-bucket-here", config).list_prefixes("x/")
    assert not missing.value.retryable and not isinstance(missing.value, CredentialsError)
    assert "no-such-bucket-here" in str(missing.value)

    with FaultProxy(seaweed.s3_port) as proxy:
        down = fast_config(proxy.endpoint, attempts_per_call=1, retry_deadline_s=1.0)
        proxy.add(Rule("status", method="GET", status=503, times=None))
        started = time.monotonic()
        with pytest.raises(StorageError) as outage:
            ObjectStore(client_for(proxy.endpoint, config=down), space.bucket, down).read(space.key("a"), max_bytes=1)
        assert time.monotonic() - started < 10  # gave up at its deadline, not at a request timeout's multiple
        assert outage.value.retryable and proxy.hits() >= 2


# ----------------------------------------------------------------------------- one owner, no cycles, lazy boto3

_REPO = Path(__file__).resolve().parents[2]
_PACKAGE = _REPO / "transcoder" / "storage"
_BOTO = frozenset({"boto3", "botocore", "s3transfer"})


def _fresh_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter with this checkout first on the path; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(_REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=_REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _imported_modules(tree: ast.AST, *, package: str, top_level_only: bool) -> set[str]:
    """Absolute names of the modules ``tree`` imports (relative imports resolved against ``package``)."""
    nodes = ast.iter_child_nodes(tree) if top_level_only else ast.walk(tree)
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(str(node.module))
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            if node.module:
                names.add(f"{base}.{node.module}")
            else:  # "from . import x" imports the submodule x
                names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_importing_the_library_imports_no_boto3() -> None:
    code = (
        "import sys, transcoder, transcoder.cli, transcoder.run, transcoder.storage, worker.outputs\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'boto3', 'botocore', 's3transfer'}"
        " or m.startswith('transcoder.storage.')))\n"
        "import transcoder.storage.client\n"  # the control: the client does import boto3
        "print('boto3' in sys.modules and 'botocore' in sys.modules)\n"
    )
    light, control = _fresh_python(code).splitlines()
    assert light == "['transcoder.storage.config', 'transcoder.storage.errors']"
    assert control == "True"


def test_every_storage_module_imports_first_in_a_fresh_interpreter() -> None:
    modules = sorted(p.stem for p in _PACKAGE.glob("*.py") if p.stem != "__init__")
    assert {"client", "config", "errors", "objects", "reader", "uploader"} <= set(modules)
    for module in modules:
        name = f"transcoder.storage.{module}"
        assert _fresh_python(f"import {name}, sys; print({name!r} in sys.modules)") == "True", name


def test_storage_modules_import_downwards_only() -> None:
    graph: dict[str, set[str]] = {}
    for path in _PACKAGE.glob("*.py"):
        name = "transcoder.storage" if path.stem == "__init__" else f"transcoder.storage.{path.stem}"
        imported = _imported_modules(ast.parse(path.read_text()), package="transcoder.storage", top_level_only=True)
        graph[name] = {m for m in imported if m.startswith("transcoder.storage.")}
    # The package itself is light: it names the data and the errors only.
    assert graph["transcoder.storage"] == {"transcoder.storage.config", "transcoder.storage.errors"}
    assert graph["transcoder.storage.config"] == set() and graph["transcoder.storage.errors"] == set()
    order: list[str] = []
    left = dict(graph)
    while left:  # Kahn's algorithm: a module whose imports are all placed goes next
        ready = sorted(name for name, deps in left.items() if deps <= set(order))
        assert ready, f"an import cycle among {sorted(left)}"
        order.extend(ready)
        for name in ready:
            del left[name]
    assert order.index("transcoder.storage.client") < order.index("transcoder.storage.uploader")


def test_only_the_storage_client_imports_boto3() -> None:
    importers: set[str] = set()
    for path in _REPO.rglob("*.py"):
        relative = path.relative_to(_REPO)
        if any(part.startswith(".") or part in ("build", "out", "sample") for part in relative.parts):
            continue
        imported = _imported_modules(ast.parse(path.read_text()), package="", top_level_only=False)
        if any(name.split(".")[0] in _BOTO for name in imported):
            importers.add(relative.as_posix())
    # This module is the one exception: its fake R2 endpoint answers with botocore's own response type.
    assert importers == {"transcoder/storage/client.py", "tests/transcoder/test_storage.py"}


# ----------------------------------------------------------------------------- helpers


def _rule_args(rule: Rule) -> dict[str, Any]:
    """A fresh copy of a parametrized rule (its hit counter must not carry over)."""
    return {
        "action": rule.action,
        "method": rule.method,
        "path": rule.path,
        "times": rule.times,
        "status": rule.status,
        "delay_s": rule.delay_s,
        "bytes_per_s": rule.bytes_per_s,
    }
