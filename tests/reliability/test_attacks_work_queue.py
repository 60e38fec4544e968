"""Attacks on the work queue with a real worker: messages that are not ``execute_request(request_id, token)``.

A misdirected ``on_complete`` (``{"queue": <BGHTTP_QUEUE>, "actor": "execute_request"}``)
sends a final event there; any other producer may publish junk. Each must be
dropped with one log line: no traceback, no Dramatiq retries, nothing
dead-lettered, and the real requests around it run as usual.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.reliability.server import CountingServer
from tests.support import RABBITMQ_URL, WorkerProcess, queue_counts

pytestmark = [pytest.mark.rabbitmq]

StartWorker = Callable[..., WorkerProcess]


def work_message(queue: str, args: Any) -> bytes:
    return json.dumps({
        "queue_name": queue, "actor_name": "execute_request", "args": args, "kwargs": {}, "options": {},
        "message_id": str(uuid.uuid4()), "message_timestamp": int(time.time() * 1000),
    }).encode()


def test_messages_that_are_not_a_request_run_are_dropped_without_a_traceback(
    rabbitmq_settings: Settings, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    queue = rabbitmq_settings.queue_name
    hostile = [
        [{"event_id": "e1", "request_id": "r1", "status": "completed"}],  # an on_complete event sent here
        ["../../etc/passwd", 1],
        ["fine-id", "not a token"],
        ["fine-id", 1, "extra"],
        [None, 1],
        [],
    ]
    worker = start_worker(rabbitmq_settings)
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        for args in hostile:
            channel.basic_publish("", queue, work_message(queue, args), pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()
    with BackgroundHttpClient(rabbitmq_settings) as client:
        record = client.wait(client.get(counting_server.url("/ok?id=after-junk")).request_id, timeout=30)
    time.sleep(3)  # Dramatiq's retries of a crashed message would come after 1 s, then 2 s

    assert record.status is RequestStatus.COMPLETED and counting_server.hits["after-junk"] == 1
    log = worker.log_path.read_text()
    assert "Traceback" not in log
    assert log.count('"not_a_request_message"') == len(hostile)
    assert queue_counts(queue)[0] == 0 and queue_counts(f"{queue}.XQ")[0] == 0
