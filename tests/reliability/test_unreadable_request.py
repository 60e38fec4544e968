"""A request file the worker cannot read ends ``failed``, once, with a clear error.

A hand-edited or corrupt ``requests/<id>.json`` used to make the actor raise:
Dramatiq retried the message five times, dead-lettered it, and ``wait()`` hung.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings, StoreError
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess, wait_until

# Each case: how the file is broken, and a word the error must name.
CORRUPTIONS: dict[str, tuple[Callable[[dict[str, Any]], bytes], str]] = {
    "not-json": (lambda spec: b'{"request_id": "cut-off', "not valid JSON"),
    "empty": (lambda spec: b"", "not valid JSON"),
    "a-list": (lambda spec: b"[1, 2]", "JSON object"),
    "missing-url": (lambda spec: json.dumps({k: v for k, v in spec.items() if k != "url"}).encode(), "url"),
    "headers-a-number": (lambda spec: json.dumps({**spec, "headers": 5}).encode(), "headers"),
    "timeout-a-word": (lambda spec: json.dumps({**spec, "timeout": "soon"}).encode(), "timeout"),
    "timeout-nan": (lambda spec: json.dumps({**spec, "timeout": float("nan")}).encode(), "timeout"),
    "other-id": (lambda spec: json.dumps({**spec, "request_id": "someone-else"}).encode(), "another request"),
    "bad-file-parts": (lambda spec: json.dumps({**spec, "form_fields": [], "file_parts": [1]}).encode(), "file_parts"),
}


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_a_corrupt_request_file_fails_the_request_without_retries(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    with BackgroundHttpClient(rabbitmq_settings) as client:
        ids = {}
        for case, (corrupt, _) in CORRUPTIONS.items():
            info = client.post(counting_server.url(f"/ok?id={case}"), data={"case": case}, request_id=case)
            spec = json.loads(info.request_file_path.read_text())
            info.request_file_path.write_bytes(corrupt(spec))  # after submit, before any worker runs it
            ids[case] = info.request_id

        # A status record with no valid version: nothing can be recorded, so the worker says so once.
        garbled = client.post(counting_server.url("/ok?id=garbled"), request_id="garbled")
        (rabbitmq_settings.store_dir / "status" / "garbled.log").write_bytes(b"garbage\n")

        worker = start_worker(rabbitmq_settings)
        for case, (_, word) in CORRUPTIONS.items():
            record = client.wait(ids[case], timeout=20)
            assert record.status is RequestStatus.FAILED, case
            assert record.last_error is not None and "request file" in record.last_error, record.last_error
            assert word in record.last_error, (case, record.last_error)
            assert "\n" not in record.last_error
            assert record.attempt_count == 0
        with pytest.raises(StoreError, match="garbled"):
            client.wait(garbled.request_id, timeout=1)
        wait_until(lambda: '"request_unreadable_status_not_written"' in worker.log_path.read_text(errors="replace"))
        assert sum(counting_server.hits.values()) == 0  # nothing was sent

    log = worker.log_path.read_text(errors="replace")
    assert "Retrying message" not in log
    assert "Traceback" not in log and "unhandled exception" not in log
    assert log.count('"request_unreadable"') == len(CORRUPTIONS)
    assert log.count('"request_unreadable_status_not_written"') == 1
