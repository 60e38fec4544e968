"""Attack: what a submitter killed at the wrong moment leaves behind must not block its ID.

``create_request`` writes ``requests/<id>.json``, then the status log, whose
first line says the request is whole. A submitter killed after it created the
status log but before that line was complete (or a power loss before the
write-back: an empty or zero-filled file) leaves a request file and a status
log with no version. Nobody was told the request was accepted; its ID must be
free again, as it is when the status log is missing altogether.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.models import RequestSpec

TORN_FIRST_LINES = {
    "empty": b"",
    "zero-filled": b"\0" * 512,
    "first line cut short": b'1a2b3c4d {"request_id":"X","sta',
}


@pytest.mark.parametrize("on_conflict", ["return", "reject"])
@pytest.mark.parametrize("torn", list(TORN_FIRST_LINES), ids=list(TORN_FIRST_LINES))
def test_a_status_log_without_a_version_does_not_block_its_id(tmp_path: Path, torn: str, on_conflict: str) -> None:
    store_dir = tmp_path / "store"
    settings = Settings(broker_url="local", store_dir=store_dir, fsync=False)
    with BackgroundHttpClient(settings, broker=StubBroker(), on_conflict=on_conflict) as client:  # type: ignore[arg-type]
        client.get("http://127.0.0.1:9/warm-up", request_id="other")  # the store's directories exist
        spec = RequestSpec(
            request_id="X", method="POST", url="http://127.0.0.1:9/old", headers=[], timeout=5.0,
            max_retries=0, created_at=time.time(), has_body=False,
        )  # fmt: skip
        (store_dir / "requests" / "X.json").write_text(json.dumps(spec.to_json()))
        (store_dir / "status" / "X.log").write_bytes(TORN_FIRST_LINES[torn])

        info = client.get("http://127.0.0.1:9/new", request_id="X")

        assert info.status is RequestStatus.IN_PROGRESS
        loaded = client.store.load_request("X")
        assert loaded is not None and loaded.url == "http://127.0.0.1:9/new"
        assert [record.request_id for record in client.list()].count("X") == 1
