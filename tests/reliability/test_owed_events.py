"""Review of attack21d: an owed event of a request whose ID is submitted again after its removal.

The owed-event file (``removed/<digest>.owed``) held one record per request ID
and was forgotten after any announcement by a retried message of the ID. The
events exchange is made unusable (declared ``direct``; the worker declares
``topic``); a request completes, its client removes it and submits the ID again
(another request, other metadata), which completes too. Its failed event
overwrote the first one's owed record: once the exchange was put right, only
the second completion was announced; the first was never.
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


def _publish_failures(log_path: Path) -> int:
    lines = log_path.read_text(errors="replace").splitlines()
    return sum(
        str(json.loads(line).get("event", "")).startswith("Failed to process message execute_request('again'")
        for line in lines
        if line.startswith("{")
    )


def test_each_outcome_of_an_id_submitted_again_after_its_removal_is_announced(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    settings = with_own_exchange(rabbitmq_settings)
    _declare_exchange(settings.events_exchange, "direct")  # the worker's declaration (topic) fails: no event gets out
    try:
        worker = start_worker(settings, threads=2)
        with BackgroundHttpClient(settings) as client:
            client.get(counting_server.url("/ok?n=1"), request_id="again", metadata={"round": "first"})
            assert client.wait("again", timeout=60).status is RequestStatus.COMPLETED
            wait_until(lambda: _publish_failures(worker.log_path) >= 1, timeout=60)  # its event did not get out
            assert client.remove("again")
            client.get(counting_server.url("/ok?n=2"), request_id="again", metadata={"round": "second"})
            assert client.wait("again", timeout=60).status is RequestStatus.COMPLETED
            failures = _publish_failures(worker.log_path)
            wait_until(lambda: _publish_failures(worker.log_path) > failures, timeout=90)  # nor did the second's
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        connection.channel().exchange_delete(settings.events_exchange)
        connection.close()
        events = EventQueue(settings.events_exchange)  # declared as the worker declares it, and bound
        try:
            wait_until(lambda: any(e["metadata"] == {"round": "second"} for _, e in events.drain()), timeout=120)
            received = events.drain()
        finally:
            events.close()
    finally:
        remove_message_queues(settings)
    rounds = {event["metadata"]["round"] for key, event in received if key == "request.completed"}
    assert rounds == {"first", "second"}, f"announced: {[(key, event['metadata']) for key, event in received]}"
