"""Removing a request while a worker runs it (issue 11, item 4).

A removed request's attempt must never write into the store afterwards: not
into a new request that took the same ID, and not as response files of a
request that is gone. A real worker process (one thread, so the new request's
message waits behind the old attempt) and a real slow server show it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, Phase, RequestStatus, Settings
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

# The old attempt is removed while it waits 3 s for the response headers, or
# while it streams a body for about 4 s (40 chunks, 0.1 s apart).
SLOW_PATHS = {
    "headers": "/wait?id={tag}&delay=3",
    "body": "/slow?id={tag}&chunks=40&size=1024&delay=0.1",
}


def _running(client: BackgroundHttpClient, request_id: str) -> bool:
    record = client.get_request_status(request_id)
    return record is not None and record.phase is Phase.RUNNING


def _attempt_ended(worker: WorkerProcess, request_id: str) -> bool:
    """The worker logged the end of an attempt of ``request_id`` (whatever its outcome, a crash too)."""
    for line in worker.log_path.read_text(errors="replace").splitlines():
        if f"execute_request('{request_id}'" in line and "Failed to process message" in line:
            return True
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("request_id") == request_id and event.get("event") in {
            "request_completed",
            "request_cancelled",
            "request_failed",
            "attempt_failed",
        }:
            return True
    return False


def _response_files(store_dir: Path, request_id: str) -> list[str]:
    return sorted(path.name for path in (store_dir / "responses").glob(f"{request_id}.*"))


@pytest.mark.parametrize("phase", sorted(SLOW_PATHS))
def test_remove_during_an_attempt_then_resubmit_sends_the_new_request(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer, phase: str
) -> None:
    start_worker(rabbitmq_settings, threads=1)
    with BackgroundHttpClient(rabbitmq_settings) as client:
        client.get(counting_server.url(SLOW_PATHS[phase].format(tag="old")), request_id="same")
        wait_until(lambda: _running(client, "same") and counting_server.hits["old"] == 1, timeout=30)

        assert client.remove("same") is True
        info = client.get(counting_server.url("/ok?id=new"), request_id="same")
        record = client.wait(info.request_id, timeout=60)

        assert counting_server.hits["new"] == 1, "the new request was never sent"
        assert record.status is RequestStatus.COMPLETED
        assert record.attempt_count == 1
        response = client.get_response("same")
        assert response is not None
        assert response.read_bytes() == b"ok new", "the new request holds the old request's response"


@pytest.mark.parametrize("phase", sorted(SLOW_PATHS))
def test_remove_during_an_attempt_leaves_no_response_files(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer, phase: str
) -> None:
    worker = start_worker(rabbitmq_settings, threads=1)
    with BackgroundHttpClient(rabbitmq_settings) as client:
        client.get(counting_server.url(SLOW_PATHS[phase].format(tag="gone")), request_id="gone")
        wait_until(lambda: _running(client, "gone") and counting_server.hits["gone"] == 1, timeout=30)

        assert client.remove("gone") is True
        wait_until(lambda: _attempt_ended(worker, "gone"), timeout=30)

        assert _response_files(rabbitmq_settings.store_dir, "gone") == []
        assert client.get_request_status("gone") is None
