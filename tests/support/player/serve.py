"""Play an HLS output directory with hls.js in headless Chromium and collect the result.

A ``ThreadingHTTPServer`` on 127.0.0.1 (ephemeral port) serves

* ``/player.html``  -- ``tests/support/player/player.html`` (the scenario, see that file),
* ``/hls.min.js``   -- hls.js from the npm cache dir (``tests/support/player/setup.sh`` fills it),
* ``/media/...``    -- the output directory (``/media/master.m3u8`` is played),

and records the JSON the page POSTs to ``/report``. :func:`run_player` starts
Chromium headless on the page in its own process group and a throwaway
profile, waits for the page's ``done`` report (or a timeout) and kills the
group. Nothing leaves the loopback interface.

By hand (after ``tests/support/player/setup.sh``)::

    .venv/bin/python -m tests.support.player.serve OUT_DIR [--frames DIR]

prints the page's summary as JSON and writes the frames it grabbed as PNGs;
exits 0 when playback reached ``ended`` with no hls.js error or warning.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

HERE = Path(__file__).resolve().parent
PLAYER_HTML = HERE / "player.html"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".vtt": "text/vtt",
    ".jpg": "image/jpeg",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
}


def cache_dir() -> Path:
    """Where ``setup.sh`` puts hls.js.

    ``$HLS_PLAYER_CACHE``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``) + ``/hls-transcoder-player``.
    """
    explicit = os.environ.get("HLS_PLAYER_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hls-transcoder-player"


def hls_js_path() -> Path:
    return cache_dir() / "node_modules" / "hls.js" / "dist" / "hls.min.js"


def find_chromium() -> str | None:
    """``$CHROMIUM`` if set, else the first Chromium/Chrome on ``PATH``."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return shutil.which(explicit)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.strip() or out.stderr.strip()


class _Handler(BaseHTTPRequestHandler):
    server: PlayerServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        file = self.server.resolve(path)
        if file is None or not file.is_file():
            self.server.requests.append((path, 404))
            self.send_error(404)
            return
        body = file.read_bytes()
        self.server.requests.append((path, 200))
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPES.get(file.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            message = json.loads(raw)
        except ValueError:
            message = {"event": "unparsable", "raw": raw[:200].decode("utf-8", "replace")}
        self.server.record(message)
        self.send_response(204)
        self.end_headers()


class PlayerServer(ThreadingHTTPServer):
    """Loopback server for the player page, hls.js and one media directory."""

    daemon_threads = True

    def __init__(self, media_dir: Path, hls_js: Path | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.media_dir = media_dir.resolve()
        self.hls_js = hls_js or hls_js_path()
        self.requests: list[tuple[str, int]] = []
        self.events: list[dict[str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        self.summary: dict[str, Any] | None = None
        self.done = threading.Event()
        # A condition, not a plain lock: wait_for_frames sleeps until a frame arrives.
        self._lock = threading.Condition()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/player.html"

    def resolve(self, path: str) -> Path | None:
        if path in ("/", "/player.html"):
            return PLAYER_HTML
        if path == "/hls.min.js":
            return self.hls_js
        if path.startswith("/media/"):
            file = (self.media_dir / path[len("/media/") :]).resolve()
            if file.is_relative_to(self.media_dir):
                return file
        return None

    def record(self, message: dict[str, Any]) -> None:
        with self._lock:
            if message.get("event") == "frame":
                self.frames.append(message)
                self._lock.notify_all()
            elif message.get("event") == "done":
                if self.summary is None:
                    self.summary = message
                self.done.set()
            else:
                self.events.append(message)

    def wait_for_frames(self, timeout_s: float) -> bool:
        """Wait until every frame the page's report lists has arrived; False if ``timeout_s`` passed first.

        The page posts each frame as it grabs it and its report (``done``) last,
        without waiting for the frames' POSTs: a large PNG can still be on the wire.
        """
        with self._lock:
            expected = len((self.summary or {}).get("frames") or [])
            return self._lock.wait_for(lambda: len(self.frames) >= expected, timeout_s)

    @contextmanager
    def running(self) -> Iterator[PlayerServer]:
        thread = threading.Thread(target=self.serve_forever, name="player-server", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.shutdown()
            self.server_close()
            thread.join(timeout=5)


def chromium_command(binary: str, url: str, profile_dir: Path) -> list[str]:
    return [
        binary,
        "--headless",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--disable-quic",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-features=MediaRouter,OptimizationHints,Translate",
        "--mute-audio",
        "--autoplay-policy=no-user-gesture-required",
        "--enable-logging=stderr",
        "--window-size=900,560",
        f"--user-data-dir={profile_dir}",
        url,
    ]


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End the process group of ``proc``: Chromium and every helper it started (they may outlive it)."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


def run_player(
    media_dir: Path,
    *,
    chromium: str | None = None,
    timeout_s: float = 60.0,
    page_timeout_s: float = 45.0,
    query: str = "",
) -> dict[str, Any]:
    """Play ``media_dir/master.m3u8`` in headless Chromium; return the page's summary.

    The result is the page's ``done`` report (``{"reason": "no report", ...}``
    when none arrived in ``timeout_s``) plus ``events`` (every other report, in
    order), ``frames`` (``{"label", "png": bytes, ...}``), ``requests``
    (``(path, status)`` served), ``elapsed_s`` and ``chromium_log`` (the tail
    of Chromium's stderr).
    """
    binary = chromium or find_chromium()
    if binary is None:
        raise RuntimeError("no chromium found (install it or set $CHROMIUM)")
    server = PlayerServer(media_dir)
    started = time.monotonic()
    with server.running(), tempfile.TemporaryDirectory(prefix="player-chromium-") as tmp:
        profile = Path(tmp) / "profile"
        log_path = Path(tmp) / "chromium.log"
        url = f"{server.url}?timeout={page_timeout_s:g}" + (f"&{query}" if query else "")
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                chromium_command(binary, url, profile),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                deadline = started + timeout_s
                while not server.done.wait(timeout=0.25):
                    if time.monotonic() > deadline or proc.poll() is not None:
                        break
                # Frames still on the wire when the report came; a frame that never
                # arrives only shows as missing in the summary.
                server.wait_for_frames(timeout_s=5)
            finally:
                _kill_group(proc)
        chromium_log = log_path.read_text("utf-8", "replace")
    summary: dict[str, Any] = dict(server.summary or {"event": "done", "reason": "no report"})
    summary["events"] = list(server.events)
    summary["frames"] = [_decode_frame(frame) for frame in server.frames]
    summary["requests"] = list(server.requests)
    summary["elapsed_s"] = round(time.monotonic() - started, 2)
    summary["chromium_exit"] = proc.returncode
    summary["chromium_log"] = "\n".join(chromium_log.splitlines()[-60:])
    return summary


def _decode_frame(frame: dict[str, Any]) -> dict[str, Any]:
    out = {key: value for key, value in frame.items() if key != "dataUrl"}
    data_url = frame.get("dataUrl") or ""
    _, _, payload = data_url.partition("base64,")
    out["png"] = base64.b64decode(payload) if payload else b""
    return out


def printable(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` without the PNG bytes (for printing or assertion messages)."""
    out = dict(summary)
    out["frames"] = [{k: v for k, v in frame.items() if k != "png"} for frame in summary.get("frames", [])]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("media_dir", type=Path, help="transcoder output directory (holds master.m3u8)")
    parser.add_argument("--frames", type=Path, help="write the grabbed frames here as PNG")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if not hls_js_path().is_file():
        print(f"hls.js missing at {hls_js_path()}: run tests/support/player/setup.sh", file=sys.stderr)
        return 2
    binary = find_chromium()
    if binary is None:
        print("chromium missing: run tests/support/player/setup.sh", file=sys.stderr)
        return 2
    summary = run_player(args.media_dir, chromium=binary, timeout_s=args.timeout, page_timeout_s=args.timeout - 10)
    if args.frames:
        args.frames.mkdir(parents=True, exist_ok=True)
        for frame in summary["frames"]:
            (args.frames / f"{frame['label']}.png").write_bytes(frame["png"])
    summary["chromium_version"] = chromium_version(binary)
    json.dump(printable(summary), sys.stdout, indent=2)
    print()
    clean = summary.get("reason") == "ended" and not (summary.get("errors") or summary.get("warnings"))
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
