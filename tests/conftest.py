"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.media import make_clip

ClipFactory = Callable[..., Path]


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
