"""A message for a request the worker's store does not hold is not acked away: it may be another group's.

A client and a worker on different stores (a typo in ``--store`` makes a new,
empty one) share a queue. The worker used to log ``request_missing`` and ack, and
the client's request stayed queued for ever. Now such a message goes to the
dead-letter queue (``<queue>.XQ``) with an error naming the worker's store and
queue. A request this store removed (``remove``, ``gc``) is told apart: its
leftover messages are dropped quietly, as before.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess, queue_counts, wait_until


def worker_events(worker: WorkerProcess) -> list[dict[str, object]]:
    lines = worker.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_a_message_for_a_request_of_another_store_goes_to_the_dead_letter_queue(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
    tmp_path: Path,
) -> None:
    worker_settings = dataclasses.replace(rabbitmq_settings, store_dir=tmp_path / "store-b")
    worker = start_worker(worker_settings)
    with BackgroundHttpClient(rabbitmq_settings) as client:  # store A
        info = client.get(counting_server.url("/ok?id=elsewhere"), request_id="elsewhere")
        xq = f"{rabbitmq_settings.queue_name}.XQ"
        wait_until(lambda: queue_counts(xq)[0] == 1, timeout=30)
        record = client.get_request_status(info.request_id)
    assert record is not None and record.status is RequestStatus.IN_PROGRESS  # untouched, its message kept
    assert counting_server.hits["elsewhere"] == 0
    [error] = [e for e in worker_events(worker) if e.get("event") == "request_not_in_store"]
    assert error["level"] == "error" and error["request_id"] == "elsewhere"
    assert error["store"] == str(worker_settings.store_dir) and error["queue"] == rabbitmq_settings.queue_name
    assert "Failed to process message" not in worker.log_path.read_text()  # no Dramatiq retries either


def test_a_message_for_a_request_removed_here_is_dropped_not_dead_lettered(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    with BackgroundHttpClient(rabbitmq_settings) as client:
        removed = client.get(counting_server.url("/ok?id=removed"), request_id="removed")
        assert client.remove(removed.request_id)  # its message is still queued: no worker yet
        worker = start_worker(rabbitmq_settings)
        kept = client.get(counting_server.url("/ok?id=kept"), request_id="kept")
        assert client.wait(kept.request_id, timeout=30).status is RequestStatus.COMPLETED
    wait_until(lambda: any(e.get("request_id") == "removed" for e in worker_events(worker)), timeout=30)
    assert queue_counts(f"{rabbitmq_settings.queue_name}.XQ")[0] == 0
    assert counting_server.hits["removed"] == 0
    dropped = [e for e in worker_events(worker) if e.get("request_id") == "removed"]
    assert [(e["event"], e["level"], e.get("reason")) for e in dropped] == [("message_dropped", "info", "removed")]
