"""Attacks on the intake with a real worker: hostile ``submit_request`` messages from any producer.

Each invalid message must give exactly one ``request.rejected`` event with a
clear reason, be acked (no Dramatiq retries, nothing dead-lettered), create no
request, and leave no traceback in the worker's log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bghttp import BackgroundHttpClient, Settings
from tests.messaging import EventQueue, remove_message_queues, submit_message, with_own_exchange
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess, queue_counts

pytestmark = [pytest.mark.rabbitmq]

StartWorker = Callable[..., WorkerProcess]
URL = "http://127.0.0.1:9/never-sent"


@pytest.fixture
def settings(rabbitmq_settings: Settings) -> Iterator[Settings]:
    settings = with_own_exchange(rabbitmq_settings)
    yield settings
    remove_message_queues(settings)


def envelope(queue: str, message_id: str, **fields: Any) -> bytes:
    """A submit message with some envelope fields replaced (``args``, ``kwargs``)."""
    body = json.loads(submit_message(queue, {"method": "GET", "url": URL}, message_id))
    body.update(fields)
    return json.dumps(body).encode()


def raw_spec(queue: str, message_id: str, spec_json: str) -> bytes:
    """A submit message whose request object is given as JSON text (numbers Python would not write)."""
    body = submit_message(queue, {"placeholder": True}, message_id).decode()
    return body.replace('{"placeholder": true}', spec_json).encode()


def deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


def hostile_messages(queue: str) -> dict[str, tuple[bytes, str]]:
    """``{message_id: (body, words the rejection reason must contain)}``."""
    get = {"method": "GET", "url": URL}
    return {
        "no-args": (envelope(queue, "no-args", args=[]), "exactly one argument"),
        "kwargs": (envelope(queue, "kwargs", args=[], kwargs={"spec": get}), "exactly one argument"),
        # Dramatiq decodes these but cannot call an actor with them (TypeError before bghttp's code).
        "kwargs-null": (envelope(queue, "kwargs-null", kwargs=None), "exactly one argument"),
        "kwargs-list": (envelope(queue, "kwargs-list", kwargs=[1]), "exactly one argument"),
        "args-object": (envelope(queue, "args-object", args=get), "exactly one argument"),
        "args-string": (envelope(queue, "args-string", args="x"), "JSON object"),
        "non-object": (submit_message(queue, [get], "non-object"), "JSON object"),
        "huge-int-timeout": (
            raw_spec(queue, "huge-int-timeout", f'{{"method": "GET", "url": "{URL}", "timeout": 1{"0" * 400}}}'),
            "timeout must be at most",
        ),
        "huge-metadata": (submit_message(queue, {**get, "metadata": {"k": "v" * 10_000}}, "huge-metadata"), "4096"),
        "deep-query": (submit_message(queue, {**get, "query_parameters": {"q": deep(400)}}, "deep-query"), "query"),
        "bad-base64": (submit_message(queue, {**get, "method": "POST", "base64": "@@@"}, "bad-base64"), "base64"),
        "two-bodies": (submit_message(queue, {**get, "json": {}, "text": "x"}, "two-bodies"), "at most one body"),
        "unknown": (submit_message(queue, {**get, "callback": "x"}, "unknown"), "unknown field(s) callback"),
        "id-number": (submit_message(queue, {**get, "request_id": 7}, "id-number"), "request_id"),
    }


def test_hostile_submit_messages_each_give_one_rejected_event_and_no_traceback(
    settings: Settings, start_worker: StartWorker
) -> None:
    submit_queue = f"{settings.queue_name}.submit"
    messages = hostile_messages(submit_queue)
    events = EventQueue(settings.events_exchange)
    try:
        worker = start_worker(settings)
        for body, _reason in messages.values():
            events.publish(submit_queue, body)
        received = events.wait_for(len(messages), timeout=30)
        time.sleep(3)  # Dramatiq's retries of a crashed message would come after 1 s, then 2 s
        received = events.drain()
    finally:
        events.close()

    by_message = {event["message_id"]: event for _, event in received}
    assert sorted(by_message) == sorted(messages), received
    assert len(received) == len(messages)
    for message_id, (_body, reason) in messages.items():
        event = by_message[message_id]
        assert event["status"] == "rejected" and reason in event["last_error"], (message_id, event["last_error"])
        assert "\n" not in event["last_error"] and len(event["last_error"]) < 1000, message_id
    log = worker.log_path.read_text()
    assert "Traceback" not in log
    assert queue_counts(submit_queue)[0] == 0 and queue_counts(f"{submit_queue}.XQ")[0] == 0
    with BackgroundHttpClient(settings) as client:
        assert client.list() == []


def test_a_different_request_under_an_existing_request_id_is_rejected_not_silently_dropped(
    settings: Settings, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    submit_queue = f"{settings.queue_name}.submit"
    charge = {"method": "POST", "url": counting_server.url("/ok?id=charge"), "json": {"n": 5}, "request_id": "order-7"}
    refund = {**charge, "url": counting_server.url("/ok?id=refund")}
    events = EventQueue(settings.events_exchange)
    try:
        start_worker(settings)
        events.publish(submit_queue, submit_message(submit_queue, charge, "charge-msg"))
        [(first_key, _)] = events.wait_for(1)
        events.publish(submit_queue, submit_message(submit_queue, charge, "charge-again"))  # same request: one
        events.publish(submit_queue, submit_message(submit_queue, refund, "refund-msg"))  # another: refused
        received = events.wait_for(2)
        time.sleep(2)
        received = events.drain()
    finally:
        events.close()

    assert first_key == "request.completed"
    [(routing_key, rejected)] = received[1:]
    assert routing_key == "request.rejected" and rejected["message_id"] == "refund-msg"
    assert rejected["request_id"] == "order-7" and "exists with a different request" in rejected["last_error"]
    assert counting_server.hits["charge"] == 1 and counting_server.hits["refund"] == 0
