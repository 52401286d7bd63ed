"""The error hierarchy: one root, each error says whether a retry could help.

The library never shortens an error to one line: it keeps the context (rung,
timestamp, path, FFmpeg's message) and the cause (``raise ... from exc``). The
CLI and the worker render one clear line for people from ``str(error)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class TranscodeError(Exception):
    """Root of every error this package raises on purpose.

    ``retryable`` tells a job system whether running the same job again could
    succeed (a network fault: yes; a broken upload: no). ``context`` carries
    the facts a person needs to act on it (path, rung, timestamp ...).
    """

    retryable: bool = False

    def __init__(self, message: str, *, context: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = dict(context or {})

    def __str__(self) -> str:
        if not self.context:
            return self.message
        details = ", ".join(f"{key}={value}" for key, value in self.context.items())
        return f"{self.message} ({details})"


class ConfigError(TranscodeError, ValueError):
    """A configuration value is out of range or inconsistent."""


class InputError(TranscodeError):
    """The source is not a usable video: empty, truncated, hostile, too large.

    Never retryable: the same bytes fail the same way.
    """


class UnsupportedInputError(InputError):
    """The source is a valid file of a kind this engine does not transcode."""


class LimitExceededError(InputError):
    """The source exceeds a configured safety limit (size, duration, streams)."""


class MediaError(TranscodeError):
    """Decoding, scaling, encoding or muxing failed after the input was accepted.

    Raised with the FFmpeg error as the cause. Not retryable by default: a
    decoder that fails on these bytes fails again.
    """


class OutputError(TranscodeError):
    """Writing the output failed (disk full, permission, storage)."""

    retryable = True


class CancelledError(TranscodeError):
    """The run was cancelled by its caller (for example on SIGTERM)."""

    retryable = True
