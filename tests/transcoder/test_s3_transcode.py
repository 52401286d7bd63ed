"""End to end through object storage: s3:// sources and destinations on a real SeaweedFS.

Every successful run must give the very bytes a local run gives (the engine is
deterministic at a fixed thread budget), whatever the network did on the way;
every failed run must end with no master playlist, nothing left under the
destination prefix and no multipart upload open. Faults come from a loopback
proxy between the engine and SeaweedFS (:mod:`tests.support.faultproxy`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import m3u8
import pytest
from click.testing import CliRunner

from tests.support.faultproxy import FaultProxy, Rule
from tests.support.media import ClipFactory, mp4_top_level_boxes
from tests.support.s3server import (
    ACCESS_KEY,
    SECRET_KEY,
    SeaweedServer,
    Space,
    client_for,
    fast_config,
)
from transcoder import EncoderSettings, InputError, LadderPolicy, OutputError, RungSpec, TranscodeConfig, transcode
from transcoder.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_OUTPUT, cli
from transcoder.storage import (
    CredentialsError,
    SourceChangedError,
    SourceNotFoundError,
    SourceReadError,
    StorageConfig,
    UploadError,
)
from transcoder.storage.client import transfer_config

pytestmark = pytest.mark.slow

KIB = 1024
CONFIG = TranscodeConfig(
    encoder=EncoderSettings(preset="ultrafast"),
    ladder=LadderPolicy(rungs=(RungSpec(short_side=180, bitrate_kbps=300),)),
    threads=2,  # a fixed budget: x264's output depends on it
    segment_s=1.0,
    gop_s=1.0,
)
SOURCE = "in/source.mp4"
OUT = "out/"


@pytest.fixture(scope="module")
def source(clip: ClipFactory) -> Path:
    """4 s of 320x180 with audio, its index (moov) at the end: ~300 KB, several 64 KiB chunks."""
    path = clip(seconds=4.0)
    kinds = [box.kind for box in mp4_top_level_boxes(path)]
    assert kinds.index("moov") > kinds.index("mdat")  # FFmpeg must seek to the end and back
    return path


@pytest.fixture(scope="module")
def reference(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The local run's output: relative path -> bytes."""
    out = tmp_path_factory.mktemp("reference")
    transcode(source, out, config=CONFIG)
    return _tree(out)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _objects(client: Any, space: Space, under: str = OUT) -> dict[str, bytes]:
    return {
        key[len(under) :]: client.get_object(Bucket=space.bucket, Key=space.key(key))["Body"].read()
        for key in space.keys(client, under)
    }


def _comparable(tree: dict[str, bytes]) -> dict[str, Any]:
    """``tree`` with its manifest cut to what two runs of one plan share: the objects and hashes, the plan.

    The rest of the manifest (timing, the source's location and ETag or
    modification time) differs from run to run by design.
    """
    out: dict[str, Any] = dict(tree)
    document = json.loads(tree["manifest.json"])
    out["manifest.json"] = {key: document[key] for key in ("objects", "renditions", "plan_hash", "total_bytes")}
    return out


def _stage(client: Any, space: Space, path: Path) -> None:
    # boto3's managed transfer with the engine's settings: the classic client, never CRT.
    client.upload_file(str(path), space.bucket, space.key(SOURCE), Config=transfer_config(StorageConfig()))


def _storage(endpoint: str, **overrides: Any) -> StorageConfig:
    # Small chunks so the moov-at-end source spans several; short timeouts so faults resolve fast.
    settings: dict[str, Any] = {"read_chunk_bytes": 64 * KIB, "read_ahead_chunks": 2, "read_timeout_s": 1.0}
    settings.update(overrides)
    return fast_config(endpoint, attempts_per_call=1, **settings)


def _assert_clean_failure(client: Any, space: Space) -> None:
    assert space.keys(client, OUT) == []  # no master, and what the run stored was removed
    assert space.open_uploads(client) == []


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("src", "dst"), [("s3", "s3"), ("local", "s3"), ("s3", "local")])
def test_output_through_storage_is_identical_to_local_output(
    seaweed: SeaweedServer,
    s3: Any,
    space: Space,
    source: Path,
    reference: dict[str, bytes],
    tmp_path: Path,
    src: str,
    dst: str,
) -> None:
    _stage(s3, space, source)
    storage = _storage(seaweed.endpoint)
    result = transcode(
        space.uri(SOURCE) if src == "s3" else source,
        space.uri(OUT) if dst == "s3" else tmp_path / "out",
        config=CONFIG,
        storage=storage,
        s3_client=seaweed.client(config=storage),
    )
    produced = _objects(s3, space) if dst == "s3" else _tree(tmp_path / "out")
    assert produced.keys() == reference.keys()
    assert _comparable(produced) == _comparable(reference)
    assert sorted(result.files) == sorted(reference)
    if dst == "s3":
        _assert_master_names_only_stored_objects(produced)
        _assert_object_headers(s3, space)
        assert space.open_uploads(s3) == []


def _assert_master_names_only_stored_objects(objects: dict[str, bytes]) -> None:
    master = m3u8.loads(objects["master.m3u8"].decode())
    playlists = [p.uri for p in master.playlists] + [p.uri for p in master.iframe_playlists]
    playlists += [m.uri for m in master.media if m.uri]
    assert playlists
    for uri in playlists:
        assert uri in objects, uri
        base = uri.rsplit("/", 1)[0]
        for segment in m3u8.loads(objects[uri].decode()).segments:
            assert f"{base}/{segment.uri}" in objects, segment.uri


def _assert_object_headers(client: Any, space: Space) -> None:
    expected = {
        "master.m3u8": ("application/vnd.apple.mpegurl", "public, max-age=60"),
        "180p/index.m3u8": ("application/vnd.apple.mpegurl", "public, max-age=60"),
        "180p/seg_00000.ts": ("video/mp2t", "public, max-age=31536000, immutable"),
        "poster.jpg": ("image/jpeg", "public, max-age=60"),
    }
    for path, (content_type, cache_control) in expected.items():
        head = client.head_object(Bucket=space.bucket, Key=space.key(OUT + path))
        assert (head["ContentType"], head.get("CacheControl")) == (content_type, cache_control), path


# ----------------------------------------------------------------------------- clear failures


def test_missing_source_object_is_bad_input_and_writes_nothing(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    with pytest.raises(SourceNotFoundError) as caught:
        transcode(space.uri("in/missing.mp4"), space.uri(OUT), config=CONFIG, s3_client=s3)
    error = caught.value
    assert isinstance(error, InputError) and not error.retryable
    assert space.uri("in/missing.mp4") in str(error)
    _assert_clean_failure(s3, space)


@pytest.mark.parametrize("side", ["source", "destination"])
def test_wrong_credentials_fail_clearly_and_write_nothing(
    seaweed: SeaweedServer, s3: Any, space: Space, source: Path, side: str
) -> None:
    _stage(s3, space, source)
    wrong = seaweed.client(secret_key="definitely-not-the-secret")
    with pytest.raises(CredentialsError) as caught:
        transcode(space.uri(SOURCE) if side == "source" else source, space.uri(OUT), config=CONFIG, s3_client=wrong)
    error = caught.value
    assert not error.retryable
    assert "definitely-not-the-secret" not in str(error) and ACCESS_KEY not in str(error)
    assert space.uri() in str(error)
    _assert_clean_failure(s3, space)


def test_a_source_replaced_mid_transcode_fails_cleanly(
    seaweed: SeaweedServer, s3: Any, space: Space, source: Path
) -> None:
    _stage(s3, space, source)
    storage = _storage(seaweed.endpoint, read_ahead_chunks=1)  # 3 chunks held: the decoder must fetch again
    client = seaweed.client(config=storage)
    replaced = threading.Event()

    def replace_once_decoding(params: dict[str, Any], **kwargs: Any) -> None:
        decoding = any(t.name == "decoder" for t in threading.enumerate())
        if decoding and not replaced.is_set() and params["Key"] == space.key(SOURCE):
            replaced.set()
            s3.put_object(Bucket=space.bucket, Key=space.key(SOURCE), Body=source.read_bytes() + b"\0")

    client.meta.events.register("provide-client-params.s3.GetObject", replace_once_decoding)
    with pytest.raises(SourceChangedError) as caught:
        transcode(space.uri(SOURCE), space.uri(OUT), config=CONFIG, storage=storage, s3_client=client)
    assert replaced.is_set()
    assert caught.value.retryable and space.uri(SOURCE) in str(caught.value)
    _assert_clean_failure(s3, space)


# ----------------------------------------------------------------------------- faults on the wire


_SOURCE_GETS = r"/in/source\.mp4"
_OUTPUT_PUTS = r"/out/"

FAULTS = {
    # download (ranged GETs of the source; its HEAD passes)
    "get-reset-mid-body": Rule("reset_body", method="GET", path=_SOURCE_GETS, times=2),
    "get-reset": Rule("reset", method="GET", path=_SOURCE_GETS, times=2),
    "get-500": Rule("status", method="GET", path=_SOURCE_GETS, status=500, times=2),
    "get-503": Rule("status", method="GET", path=_SOURCE_GETS, status=503, times=2),
    "get-429": Rule("status", method="GET", path=_SOURCE_GETS, status=429, times=3),
    "get-slow": Rule("delay", method="GET", path=_SOURCE_GETS, delay_s=1.5, times=1),
    "get-throttled": Rule("throttle", method="GET", path=_SOURCE_GETS, bytes_per_s=512 * KIB, times=None),
    # upload (segment, playlist, poster and master PUTs)
    "put-reset": Rule("reset", method="PUT", path=_OUTPUT_PUTS, times=2),
    "put-500": Rule("status", method="PUT", path=_OUTPUT_PUTS, status=500, times=2),
    "put-503": Rule("status", method="PUT", path=_OUTPUT_PUTS, status=503, times=2),
    "put-429": Rule("status", method="PUT", path=_OUTPUT_PUTS, status=429, times=3),
    "put-slow": Rule("delay", method="PUT", path=_OUTPUT_PUTS, delay_s=1.5, times=1),
    "put-throttled": Rule("throttle", method="PUT", path=_OUTPUT_PUTS, bytes_per_s=512 * KIB, times=None),
    "master-503": Rule("status", method="PUT", path=r"/out/master\.m3u8", status=503, times=2),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_transient_faults_give_the_same_output(
    seaweed: SeaweedServer, s3: Any, space: Space, source: Path, reference: dict[str, bytes], fault: str
) -> None:
    _stage(s3, space, source)
    rule = FAULTS[fault]
    with FaultProxy(seaweed.s3_port) as proxy:
        proxy.add(Rule(rule.action, rule.method, rule.path, rule.times, rule.status, rule.delay_s, rule.bytes_per_s))
        storage = _storage(proxy.endpoint)
        transcode(
            space.uri(SOURCE),
            space.uri(OUT),
            config=CONFIG,
            storage=storage,
            s3_client=client_for(proxy.endpoint, config=storage),
        )
        assert proxy.hits() >= 1
    assert _comparable(_objects(s3, space)) == _comparable(reference)
    assert space.open_uploads(s3) == []


@pytest.mark.parametrize(
    ("rule", "error_type", "names"),
    [
        (Rule("status", method="PUT", path=_OUTPUT_PUTS, status=503, times=None), UploadError, OUT),
        (Rule("reset", method="PUT", path=r"/out/180p/", times=None), UploadError, OUT + "180p/"),
        (
            Rule("status", method="PUT", path=r"/out/master\.m3u8", status=503, times=None),
            UploadError,
            OUT + "master.m3u8",
        ),
        (Rule("reset", method="GET", path=_SOURCE_GETS, times=None), SourceReadError, SOURCE),
        (Rule("status", method="GET", path=_SOURCE_GETS, status=429, times=None), SourceReadError, SOURCE),
    ],
    ids=["put-503", "put-reset", "master-503", "get-reset", "get-429"],
)
def test_lasting_faults_fail_cleanly_and_say_a_retry_may_help(
    seaweed: SeaweedServer,
    s3: Any,
    space: Space,
    source: Path,
    rule: Rule,
    error_type: type[Exception],
    names: str,
) -> None:
    _stage(s3, space, source)
    with FaultProxy(seaweed.s3_port) as proxy:
        proxy.add(rule)
        storage = _storage(proxy.endpoint, retry_deadline_s=1.0)
        with pytest.raises(error_type) as caught:
            transcode(
                space.uri(SOURCE),
                space.uri(OUT),
                config=CONFIG,
                storage=storage,
                s3_client=client_for(proxy.endpoint, config=storage),
            )
    error = caught.value
    assert getattr(error, "retryable", False) is True
    assert space.uri(names) in str(error)
    if error_type is UploadError:
        assert isinstance(error, OutputError)
    _assert_clean_failure(s3, space)


# ----------------------------------------------------------------------------- the command line


def _cli_env(**extra: str | None) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PROFILE": None,
        "AWS_ENDPOINT_URL": None,
        "AWS_ENDPOINT_URL_S3": None,
        "AWS_SESSION_TOKEN": None,
    }
    env.update(extra)
    return env


def test_cli_runs_s3_to_s3_with_an_endpoint_option(seaweed: SeaweedServer, s3: Any, space: Space, source: Path) -> None:
    _stage(s3, space, source)
    args = [space.uri(SOURCE), "-o", space.uri(OUT), "--endpoint-url", seaweed.endpoint, "--preset", "ultrafast", "-q"]
    result = CliRunner().invoke(cli, args, env=_cli_env())
    assert result.exit_code == EXIT_OK, result.output
    assert space.uri(OUT + "master.m3u8") in result.stdout
    assert OUT + "master.m3u8" in space.keys(s3, OUT)


def test_cli_takes_the_endpoint_from_aws_endpoint_url_s3(
    seaweed: SeaweedServer, s3: Any, space: Space, source: Path
) -> None:
    _stage(s3, space, source)
    args = [space.uri(SOURCE), "--plan", "--json"]
    result = CliRunner().invoke(cli, args, env=_cli_env(AWS_ENDPOINT_URL_S3=seaweed.endpoint))
    assert result.exit_code == EXIT_OK, result.output
    assert '"ladder"' in result.stdout


def test_cli_exit_codes_for_storage_failures(seaweed: SeaweedServer, s3: Any, space: Space, source: Path) -> None:
    _stage(s3, space, source)
    runner = CliRunner()
    base = ["-o", space.uri(OUT), "--endpoint-url", seaweed.endpoint, "--preset", "ultrafast", "-q"]

    missing = runner.invoke(cli, [space.uri("in/missing.mp4"), *base], env=_cli_env())
    assert missing.exit_code == EXIT_BAD_INPUT
    assert space.uri("in/missing.mp4") in missing.stderr and len(missing.stderr.strip().splitlines()) == 1

    wrong = runner.invoke(cli, [space.uri(SOURCE), *base], env=_cli_env(AWS_SECRET_ACCESS_KEY="wrong-secret-value"))
    assert wrong.exit_code == EXIT_OUTPUT
    assert "wrong-secret-value" not in wrong.stderr and "credentials" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    _assert_clean_failure(s3, space)
