"""The worker's store (``worker.outputs.S3Store``) on a real SeaweedFS: finding a ladder, and failures.

The store goes through the engine's object API (``transcoder.storage``), so
its listings, HEADs and GETs ride out faults injected by a proxy in between,
and its refusals and outages map to the worker's reason codes.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.faultproxy import FaultProxy, Rule
from tests.support.s3server import SeaweedServer, Space, client_for, fast_config
from transcoder.storage import CredentialsError
from worker.child import classify
from worker.outputs import S3Store, StoreError, find_complete_ladder
from worker.settings import OutputRoot

_MASTER = (
    "#EXTM3U\n#EXT-X-VERSION:3\n"
    '#EXT-X-STREAM-INF:BANDWIDTH=430501,CODECS="avc1.64000d,mp4a.40.2",RESOLUTION=320x180,FRAME-RATE=30.000\n'
    "180p/index.m3u8\n"
)
_MEDIA = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg_00000.ts\n#EXTINF:2.5,\nseg_00001.ts\n#EXT-X-ENDLIST\n"


def _store_ladder(s3: Any, space: Space, directory: str, *, master: bool = True) -> int:
    """A small whole ladder under ``directory``; its total bytes."""
    objects = {
        "180p/index.m3u8": _MEDIA.encode(),
        "180p/seg_00000.ts": b"\x47" * 1880,
        "180p/seg_00001.ts": b"\x47" * 940,
    }
    if master:
        objects["master.m3u8"] = _MASTER.encode()
    for path, data in objects.items():
        s3.put_object(Bucket=space.bucket, Key=space.key(directory + path), Body=data)
    return sum(len(data) for data in objects.values())


def test_the_worker_finds_a_stored_ladder_through_storage_faults(seaweed: SeaweedServer, s3: Any, space: Space) -> None:
    total = _store_ladder(s3, space, "7/42-a1-0000000a/")
    _store_ladder(s3, space, "7/42-a2-0000000b/", master=False)  # a run that died before its master
    _store_ladder(s3, space, "7/420-a1-0000000c/")  # another job
    root = OutputRoot(bucket=space.bucket, prefix=space.prefix)
    with FaultProxy(seaweed.s3_port) as proxy:
        config = fast_config(proxy.endpoint, attempts_per_call=1)
        store = S3Store(client_for(proxy.endpoint, config=config), root, config=config)
        # Every kind of request fails twice first: listings, HEADs and GETs all go through the retries.
        proxy.add(Rule("status", method="GET", path=r"list-type=2", status=503, times=2))
        proxy.add(Rule("status", method="HEAD", status=500, times=2))
        proxy.add(Rule("status", method="GET", path=r"\.m3u8$", status=503, times=2))
        skipped: list[str] = []
        found = find_complete_ladder(store, root, video_id=7, job_id=42, on_skip=lambda d, why: skipped.append(d))
        assert proxy.hits() == 6
    assert found is not None and found.run.relative == "7/42-a1-0000000a/" and skipped == []
    assert found.report["hls_path"] == space.key("7/42-a1-0000000a/master.m3u8")
    assert found.report["total_bytes"] == total
    assert found.report["duration_s"] == pytest.approx(6.5)
    assert store.directories("7/42-a") == ["7/42-a1-0000000a/", "7/42-a2-0000000b/"]
    assert store.read("7/42-a2-0000000b/master.m3u8") is None and store.modified("7/42-a2-0000000b/x") is None


def test_the_worker_store_reports_refusals_as_denied_and_outages_as_retryable(
    seaweed: SeaweedServer, space: Space
) -> None:
    root = OutputRoot(bucket=space.bucket, prefix=space.prefix)
    wrong = S3Store(seaweed.client(secret_key="not-the-secret-at-all"), root, config=fast_config(seaweed.endpoint))
    with pytest.raises(StoreError) as refused:
        wrong.directories("7/42-a")
    assert (refused.value.denied, refused.value.retryable) == (True, False)
    assert isinstance(refused.value.__cause__, CredentialsError)
    assert classify(refused.value) == ("storage_denied", False)
    assert "not-the-secret-at-all" not in str(refused.value)

    no_bucket = S3Store(seaweed.client(), OutputRoot(bucket="no-such-bucket-here", prefix="hls/"))
    with pytest.raises(StoreError) as missing:
        no_bucket.objects("7/42-a1-0000000a/")
    assert (missing.value.denied, missing.value.retryable) == (True, False)

    with FaultProxy(seaweed.s3_port) as proxy:
        config = fast_config(proxy.endpoint, attempts_per_call=1, retry_deadline_s=1.0)
        proxy.add(Rule("status", method="GET", status=503, times=None))
        down = S3Store(client_for(proxy.endpoint, config=config), root, config=config)
        with pytest.raises(StoreError) as outage:
            down.directories("7/42-a")
    assert (outage.value.denied, outage.value.retryable) == (False, True)
    assert classify(outage.value) == ("storage", True)
