"""pytest-benchmark benches of the ladder's stages on a 2 s 1080p30 source (one thread each).

Not part of the suite (``testpaths`` is ``tests``): ``python -m pytest bench -p no:cacheprovider --benchmark-only``.
The decoded and scaled frames are made once and kept (60 frames, ~330 MB), so each bench times its own stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import pytest

from bench.sources import SampleSpec, make_sample
from bench.stages import decode_frames, encode_frames, scale_frames
from bench.variants import Plan, Rung, plan_of


@pytest.fixture(scope="session")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    path = make_sample(tmp_path_factory.mktemp("bench") / "source.mp4", SampleSpec(seconds=2.0))
    return plan_of(path, preset="veryfast", crf=23)


@pytest.fixture(scope="session")
def frames(plan: Plan) -> list[av.VideoFrame]:
    return decode_frames(plan.source, threads=2)


@pytest.fixture(scope="session")
def scaled(plan: Plan, frames: list[av.VideoFrame]) -> dict[str, list[av.VideoFrame]]:
    return {rung.name: scale_frames(frames, rung) for rung in plan.rungs}


def _rung(plan: Plan, index: int) -> Rung:
    if index >= len(plan.rungs):
        pytest.skip("the ladder has fewer rungs")
    return plan.rungs[index]


def test_decode(benchmark: Any, plan: Plan) -> None:
    benchmark.pedantic(decode_frames, args=(plan.source,), kwargs={"keep": False}, rounds=3)


@pytest.mark.parametrize("index", range(4))
def test_scale(benchmark: Any, plan: Plan, frames: list[av.VideoFrame], index: int) -> None:
    rung = _rung(plan, index)
    if (rung.width, rung.height) == (plan.width, plan.height):
        pytest.skip("the rung has the source's size: nothing to scale")
    benchmark.pedantic(scale_frames, args=(frames, rung), rounds=3)


@pytest.mark.parametrize("index", range(4))
def test_encode(benchmark: Any, plan: Plan, scaled: dict[str, list[av.VideoFrame]], index: int) -> None:
    rung = _rung(plan, index)
    benchmark.extra_info["bytes"] = benchmark.pedantic(encode_frames, args=(scaled[rung.name], rung), rounds=3)


def test_engine_ladder(benchmark: Any, plan: Plan, tmp_path: Path) -> None:
    """The whole ladder through ``transcode``, its own thread plan."""
    from transcoder import transcode

    runs = iter(range(100))
    benchmark.pedantic(lambda: transcode(plan.source, tmp_path / str(next(runs))), rounds=3)
