"""The parent's side of the transcoding child: start it, read its events, stop it.

:class:`ChildProcess` owns one ``python -m worker.child`` process and two
reader threads ("child-events" for stdout, "child-stderr" for stderr). Events
arrive on :attr:`ChildProcess.events` (a queue; ``None`` marks the end of the
child's stdout). Lines that are not protocol JSON are passed on as ``log``
events. stderr lines (FFmpeg, a dying interpreter's traceback) are kept in a
bounded tail for the failure report and handed to ``on_stderr``.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

__all__ = ["CHILD_COMMAND", "ChildProcess", "describe_status"]

CHILD_COMMAND: tuple[str, ...] = (sys.executable, "-m", "worker.child")
_STDERR_TAIL_LINES = 20
_MAX_LINE_CHARS = 4000


def describe_status(returncode: int | None) -> str:
    """``killed by SIGKILL`` / ``exited with status 1`` / ``still running``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {returncode}"


class ChildProcess:
    """One transcoding child. Not thread-safe: one owner (the worker's main thread) calls its methods."""

    def __init__(
        self,
        spec: Mapping[str, Any],
        *,
        env: Mapping[str, str],
        command: Sequence[str] = CHILD_COMMAND,
        on_stderr: Callable[[str], None] | None = None,
    ) -> None:
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)
        self._on_stderr = on_stderr
        self._process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        assert self._process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read_events, args=(self._process.stdout,), name="child-events", daemon=True),
            threading.Thread(target=self._read_stderr, args=(self._process.stderr,), name="child-stderr", daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            # The spec, then stdin stays open: its end tells the child that the parent is gone.
            self._process.stdin.write(json.dumps(dict(spec), separators=(",", ":")) + "\n")
            self._process.stdin.flush()
        except OSError:
            pass  # the child died at once; its status tells the story

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def stderr_tail(self) -> list[str]:
        return list(self._tail)

    def wait(self, timeout_s: float) -> int | None:
        """The exit status, waiting up to ``timeout_s``; None if it still runs."""
        try:
            return self._process.wait(timeout=max(0.0, timeout_s))
        except subprocess.TimeoutExpired:
            return None

    def request_stop(self) -> None:
        """SIGTERM: the child cancels its run (returns at once; see :meth:`stop`)."""
        if self._process.poll() is None:
            self._signal(signal.SIGTERM)

    def stop(self, timeout_s: float) -> int:
        """SIGTERM (the child cancels and cleans up), then SIGKILL after ``timeout_s``; the exit status."""
        if self._process.poll() is None:
            self._signal(signal.SIGTERM)
            if self.wait(timeout_s) is None:
                self._signal(signal.SIGKILL)
        return self._process.wait()

    def kill(self) -> int:
        if self._process.poll() is None:
            self._signal(signal.SIGKILL)
        return self._process.wait()

    def close(self, timeout_s: float = 2.0) -> None:
        """Close stdin (the child's "parent gone" signal) and wait briefly for the readers."""
        stdin = self._process.stdin
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()
        for reader in self._readers:
            reader.join(timeout=timeout_s)

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._process.pid, signum)

    def _read_events(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                line = line.strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                    text = line[:_MAX_LINE_CHARS]
                    event = {"event": "log", "level": "warning", "logger": "child.stdout", "message": text}
                self.events.put(event)
        except (OSError, ValueError):
            pass
        finally:
            self.events.put(None)

    def _read_stderr(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                line = line.rstrip()[:_MAX_LINE_CHARS]
                if not line:
                    continue
                self._tail.append(line)
                if self._on_stderr is not None:
                    self._on_stderr(line)
        except (OSError, ValueError):
            pass
