"""Fixtures shared by the test modules (each defined here once; helpers live in :mod:`tests.support`).

* ``clip``: tiny clips from :func:`tests.support.media.make_clip`, made once per session.
* ``seaweed``, ``s3``, ``space``: one SeaweedFS server per session (started on
  first use), a client straight to it, and a fresh key prefix per test.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.media import ClipFactory, make_clip
from tests.support.s3server import SeaweedServer, SeaweedUnavailable, Space


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> ClipFactory:
    """``clip(**make_clip_kwargs)``: a ``tests.support.media.make_clip`` file, made once per session.

    Calls with the same keyword arguments share one file; treat it as read-only.
    """
    root = tmp_path_factory.mktemp("clips")
    cache: dict[tuple[tuple[str, Any], ...], Path] = {}

    def get(**kwargs: Any) -> Path:
        key = tuple(sorted(kwargs.items()))
        if key not in cache:
            extension = str(kwargs.get("container", "mp4"))
            cache[key] = make_clip(root / f"clip{len(cache)}.{extension}", **kwargs)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedServer]:
    """The session's SeaweedFS server on loopback, killed (its data thrown away) at the end of the session."""
    # Not tmp_path_factory: pytest keeps the temporary directories of recent runs,
    # and the server's volumes should not outlive the session.
    directory = Path(tempfile.mkdtemp(prefix="seaweed-"))
    try:
        server = SeaweedServer.start(directory)
    except SeaweedUnavailable as exc:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def s3(seaweed: SeaweedServer) -> Any:
    """A client with the right credentials, straight to the server (no proxy)."""
    return seaweed.client()


@pytest.fixture
def space(seaweed: SeaweedServer) -> Space:
    """A fresh, empty key prefix in the session's test bucket."""
    return Space.fresh()
