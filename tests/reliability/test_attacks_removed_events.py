"""An outcome's event whose publish failed, its request removed meanwhile (issue 21, item 4).

docs/messages.md: "If the publish fails, the message is retried until it
succeeds", and "an outcome that happened before the remove still gets its
event, however soon after it the request is removed". The events exchange is
made unusable (declared ``direct`` where the worker declares ``topic``: every
publish fails); the request completes, the client sees it completed and
removes it, then the exchange is put right. The worker's retried message found
the request removed and was dropped: the completion event was never published.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pika
import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.messaging import EventQueue, remove_message_queues, with_own_exchange
from tests.reliability.server import CountingServer
from tests.support import RABBITMQ_URL, WorkerProcess, wait_until

pytestmark = [pytest.mark.rabbitmq]


def _declare_exchange(name: str, kind: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        connection.channel().exchange_declare(name, exchange_type=kind, durable=True)
    finally:
        connection.close()


def _logged(log_path: Path, wanted: Callable[[dict[str, object]], bool]) -> bool:
    lines = log_path.read_text(errors="replace").splitlines()
    return any(wanted(json.loads(line)) for line in lines if line.startswith("{"))


def _publish_failed(entry: dict[str, object]) -> bool:
    return str(entry.get("event", "")).startswith("Failed to process message execute_request('announced'")


def _dropped_as_removed(entry: dict[str, object]) -> bool:
    return (entry.get("event"), entry.get("request_id"), entry.get("reason")) == (
        "message_dropped",
        "announced",
        "removed",
    )


def test_an_outcome_removed_before_its_event_got_out_is_still_announced(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    settings = with_own_exchange(rabbitmq_settings)
    _declare_exchange(settings.events_exchange, "direct")  # the worker's declaration (topic) fails: no event gets out
    try:
        worker = start_worker(settings)
        with BackgroundHttpClient(settings) as client:
            client.get(counting_server.url("/ok"), request_id="announced")
            assert client.wait("announced", timeout=60).status is RequestStatus.COMPLETED
            wait_until(lambda: _logged(worker.log_path, _publish_failed), timeout=60)  # its event did not get out
            assert client.remove("announced")
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        connection.channel().exchange_delete(settings.events_exchange)
        connection.close()
        events = EventQueue(settings.events_exchange)  # declared as the worker declares it, and bound
        try:
            wait_until(lambda: _logged(worker.log_path, _dropped_as_removed), timeout=90)
            received = events.wait_for(1, timeout=30)  # published after the drop is logged
        finally:
            events.close()
    finally:
        remove_message_queues(settings)
    assert [(key, event["request_id"], event["status"]) for key, event in received] == [
        ("request.completed", "announced", "completed")
    ]
