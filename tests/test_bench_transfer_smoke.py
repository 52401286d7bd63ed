"""The transfer benchmark must keep working: a short smoke of ``python -m bench.transfer``.

Runs every variant (local→local, s3→s3 through the throttled proxy, the
sequential download-transcode-upload, the plain transfers) once on a 3 s
640x360 source against a SeaweedFS the bench starts itself, with a fixed 20
Mb/s link. The overlap goal is not checked (a 3 s source says nothing about
it: the first 8 MiB read-ahead chunk alone is the whole file); that every
variant ran and every number of the check is there is.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
VARIANTS = {"a", "b", "c", "d_download", "d_upload"}


def test_transfer_smoke(tmp_path: Path) -> None:
    out = tmp_path / "transfer"
    done = subprocess.run(
        [sys.executable, "-m", "bench.transfer", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    assert "GOAL overlap:" in done.stdout

    report = json.loads((out / "transfer.json").read_text())
    assert (out / "transfer.md").read_text().startswith("# bench.transfer overlap")
    assert report["mode"] == "smoke"
    assert report["rate"]["mbps"] == 20
    assert set(report["variants"]) == VARIANTS
    for key, variant in report["variants"].items():
        assert variant["runs_ok"] == 1 and variant["runs_failed"] == 0, key
        assert variant["wall_s"] > 0 and variant["process_wall_s"] >= variant["wall_s"], key
        assert variant["cpu_s"] > 0 and variant["peak_rss_bytes"] > 0, key
    check = report["check"]
    for name in ("wall_a_s", "wall_b_s", "wall_c_s", "t_download_s", "t_upload_s", "budget_s"):
        assert check[name] > 0, name
    assert math.isfinite(check["hidden_fraction"])
    assert check["hidden_fraction"] == pytest.approx(
        1 - (check["wall_b_s"] - check["wall_a_s"]) / (check["t_download_s"] + check["t_upload_s"])
    )
    assert check["floor_s"] == max(check["wall_a_s"], check["t_download_s"], check["t_upload_s"])
    assert check["b_over_floor_s"] == pytest.approx(check["wall_b_s"] - check["floor_s"])
    assert {g["name"] for g in report["goals"]} == {"transfer share", "overlap"}
    assert all(g["status"] in {"PASS", "FAIL"} for g in report["goals"])

    runs = {r["variant"]: r for r in report["runs"]}
    # The s3→s3 run streamed the whole source and stored a complete ladder, master included, with no scratch disk.
    b = runs["b"]["details"]
    assert b["reader"]["bytes_fetched"] >= b["source_bytes"] > 0
    assert b["master_stored"] and b["stored_objects"] == b["output_files"] > 1
    assert runs["b"]["peak_scratch_bytes"] == 0
    # The sequential baseline really kept the source and the ladder on local disk.
    assert runs["c"]["peak_scratch_bytes"] >= b["source_bytes"]
    assert runs["c"]["details"]["master_stored"]
    assert runs["d_upload"]["details"]["output_files"] == runs["a"]["details"]["output_files"]


MB = 1_000_000


@pytest.mark.parametrize(
    ("wall_a", "source_bytes", "ladder_bytes"),
    [(100.0, 170_000_000, 40_000_000), (30.0, 54_000_000, 13_000_000), (60.0, 20_000_000, 25_000_000)],
)
def test_choose_rate_keeps_each_transfer_between_a_fifth_and_all_of_the_transcode(
    wall_a: float, source_bytes: int, ladder_bytes: int
) -> None:
    from bench.transfer import MIN_TRANSFER_SHARE, choose_rate

    rate, why = choose_rate(wall_a, source_bytes, ladder_bytes)
    seconds = [size * 8 / (rate * MB) for size in (source_bytes, ladder_bytes)]
    assert min(seconds) >= MIN_TRANSFER_SHARE * wall_a
    assert max(seconds) <= wall_a
    assert "geometric middle" in why


def test_choose_rate_says_when_no_rate_can_pass() -> None:
    from bench.transfer import MIN_TRANSFER_SHARE, choose_rate

    # The source is 10x the ladder: a link slow enough for the ladder's upload to take a fifth of the
    # transcode makes the source's download take twice the transcode.
    rate, why = choose_rate(100.0, 200_000_000, 20_000_000)
    assert 20_000_000 * 8 / (rate * MB) >= MIN_TRANSFER_SHARE * 100.0
    assert "cannot pass" in why
