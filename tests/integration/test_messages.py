"""Messages in, events out, with a real worker process: submits by message, final events, on_complete."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.broker import publish_request
from tests.messaging import EventQueue, remove_message_queues, submit_message, with_own_exchange
from tests.reliability.server import CountingServer
from tests.support import (
    PROJECT_ROOT,
    RABBITMQ_URL,
    WorkerProcess,
    capture_logs,
    delete_queues,
    free_port,
    queue_counts,
    wait_until,
)

StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def settings(rabbitmq_settings: Settings) -> Iterator[Settings]:
    settings = with_own_exchange(rabbitmq_settings)
    yield settings
    remove_message_queues(settings)


@pytest.fixture
def events(settings: Settings) -> Iterator[EventQueue]:
    queue = EventQueue(settings.events_exchange)
    yield queue
    queue.close()


def test_the_documented_amqp_publish_command_submits_a_request_with_metadata(
    settings: Settings, events: EventQueue, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    if shutil.which("amqp-publish") is None:
        pytest.skip("amqp-publish (amqp-tools) is not installed")
    start_worker(settings)
    docs = (PROJECT_ROOT / "docs" / "messages.md").read_text()
    command = re.search(r"```sh\n(amqp-publish .*?)\n```", docs, re.S)
    assert command is not None
    command_text = (
        command.group(1)
        .replace("amqp://guest:guest@localhost:5672", RABBITMQ_URL.rstrip("/"))
        .replace("bghttp.submit", f"{settings.queue_name}.submit")
        .replace("https://httpbin.org/post", counting_server.url("/ok?id=order-7"))
    )

    subprocess.run(["bash", "-c", command_text], check=True, timeout=30)

    [(routing_key, event)] = events.wait_for(1)
    assert routing_key == "request.completed" and event["request_id"] == "order-7"
    assert event["metadata"] == {"order_id": "7"} and event["status_code"] == 200 and event["attempts"] == 1
    assert Path(event["response_file_path"]).read_bytes() == b"ok order-7"
    assert counting_server.hits["order-7"] == 1
    with BackgroundHttpClient(settings) as client:
        record = client.get_request_status("order-7")
    assert record is not None and record.metadata == {"order_id": "7"}


def test_an_invalid_message_yields_one_rejected_event_and_no_retries(
    settings: Settings, events: EventQueue, start_worker: StartWorker
) -> None:
    worker = start_worker(settings)
    submit_queue = f"{settings.queue_name}.submit"
    spec = {"method": "GET", "ur1": "http://127.0.0.1:9/", "metadata": {"job": "42"}}

    events.publish(submit_queue, submit_message(submit_queue, spec, message_id="bad-1"))

    [(routing_key, event)] = events.wait_for(1)
    assert routing_key == "request.rejected"
    assert event["request_id"] == "bad-1" and event["message_id"] == "bad-1" and event["status"] == "rejected"
    assert "unknown field(s) ur1" in event["last_error"] and event["metadata"] == {"job": "42"}
    time.sleep(3)  # Dramatiq's retries would come after 1 s, then 2 s
    assert len(events.drain()) == 1
    assert worker.log_path.read_text().count('"submit_rejected"') == 1
    assert queue_counts(submit_queue)[0] == 0 and queue_counts(f"{submit_queue}.XQ")[0] == 0


def test_messages_that_are_not_one_request_object(
    settings: Settings, events: EventQueue, start_worker: StartWorker
) -> None:
    start_worker(settings)
    submit_queue = f"{settings.queue_name}.submit"
    two_args = json.loads(submit_message(submit_queue, {"method": "GET", "url": "http://127.0.0.1:9/"}, "two-args"))
    two_args["args"].append("extra")

    events.publish(submit_queue, json.dumps(two_args).encode())
    events.publish(submit_queue, b"not a Dramatiq message")

    [(routing_key, event)] = events.wait_for(1)
    assert routing_key == "request.rejected" and event["message_id"] == "two-args"
    assert "exactly one argument" in event["last_error"]
    # A body Dramatiq cannot decode never reaches bghttp: Dramatiq dead-letters it, with no event.
    wait_until(lambda: queue_counts(f"{submit_queue}.XQ")[0] == 1, timeout=10)
    time.sleep(1)
    assert len(events.drain()) == 1


def test_a_message_delivered_twice_is_one_request(
    settings: Settings, events: EventQueue, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    submit_queue = f"{settings.queue_name}.submit"
    body = submit_message(submit_queue, {"method": "GET", "url": counting_server.url("/ok?id=twice")}, "msg-twice")
    start_worker(settings)

    events.publish(submit_queue, body)
    events.publish(submit_queue, body)  # a redelivery, or a producer publishing again

    events.wait_for(1)
    time.sleep(1)
    # Both submits may publish a run (the second finds the first unconfirmed): the duplicate
    # run then republishes the event, with the same event_id. One request, one outcome.
    received = [event for _, event in events.drain()]
    assert {event["event_id"] for event in received} == {received[0]["event_id"]}
    assert received[0]["request_id"] == "msg-twice" and received[0]["status"] == "completed"
    assert counting_server.hits["twice"] == 1
    # The request records the queue its runs go to: the worker's, which took the submit message.
    with BackgroundHttpClient(settings) as client:
        spec = client.store.load_request("msg-twice")
    assert spec is not None and spec.queue == settings.queue_name


def test_cancel_publishes_the_event_and_the_worker_publishes_it_again_with_the_same_id(
    settings: Settings, events: EventQueue, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    with BackgroundHttpClient(settings) as client:
        info = client.get(counting_server.url("/ok?id=cancelled"), metadata={"order_id": "9"})
        client.cancel(info.request_id)  # no worker yet: it is queued
        [(routing_key, first)] = events.wait_for(1)

        start_worker(settings)  # meets the queued message of the cancelled request
        [_, (_, again)] = events.wait_for(2)

    assert routing_key == "request.cancelled" and first["status"] == "cancelled"
    assert first == again and first["metadata"] == {"order_id": "9"} and first["attempts"] == 0
    assert counting_server.hits["cancelled"] == 0


def test_a_message_redelivered_after_the_final_status_publishes_the_event_again(
    settings: Settings, events: EventQueue, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    start_worker(settings)
    with BackgroundHttpClient(settings) as client:
        info = client.get(counting_server.url("/flaky?id=redelivered&fail=1"), retries=1)
        [(_, event)] = events.wait_for(1)
        record = client.get_request_status(info.request_id)
        assert record is not None
        # The worker that finished it died before its ack: the same message comes again.
        publish_request(client.broker, settings.queue_name, info.request_id, record.token)
        [_, (_, again)] = events.wait_for(2)
        # An older, stale duplicate publishes nothing: the current message does.
        publish_request(client.broker, settings.queue_name, info.request_id, record.token - 1)
        time.sleep(1)

    assert again == event and event["status"] == "completed" and event["attempts"] == 2
    assert event["retries_used"] == 1 and len(events.drain()) == 2
    assert counting_server.hits["redelivered"] == 2


def test_on_complete_sends_the_event_to_the_callers_actor(
    settings: Settings, events: EventQueue, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    caller_queue = f"{settings.queue_name}-caller"
    start_worker(settings)
    try:
        with BackgroundHttpClient(settings) as client:
            info = client.post(
                counting_server.url("/ok?id=callback"),
                data={"x": 1},
                metadata={"order_id": "5"},
                on_complete={"queue": caller_queue, "actor": "order_done"},
            )
            [(_, event)] = events.wait_for(1)
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        try:
            got = wait_until(lambda: connection.channel().basic_get(caller_queue, auto_ack=True)[2], timeout=10)
        finally:
            connection.close()
    finally:
        delete_queues(caller_queue)

    message = json.loads(got)
    assert message["queue_name"] == caller_queue and message["actor_name"] == "order_done"
    assert message["args"] == [event] and message["kwargs"] == {} and message["message_id"] == event["event_id"]
    assert event["request_id"] == info.request_id and event["metadata"] == {"order_id": "5"}


def test_cancel_without_a_broker_still_cancels(settings: Settings, counting_server: CountingServer) -> None:
    with BackgroundHttpClient(settings) as client:
        info = client.get(counting_server.url("/ok?id=offline-cancel"))
    closed = dataclasses.replace(settings, broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    with BackgroundHttpClient(closed) as client, capture_logs() as logs:
        record = client.cancel(info.request_id)

    assert record.status is RequestStatus.CANCELLED
    # The event comes from the worker that meets the request's message instead.
    assert [entry["event"] for entry in logs if entry.get("request_id") == info.request_id] == [
        "cancel_event_not_published"
    ]


def test_a_request_removed_as_soon_as_it_completes_still_gets_its_event(
    settings: Settings, events: EventQueue, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    # A caller that waits for completion and removes the request at once races the
    # worker's event, which is published after the final status (and the claim) is let go.
    start_worker(settings, threads=8)
    count, threads = 200, 8
    with BackgroundHttpClient(settings) as client:

        def wait_and_remove(index: int) -> str:
            info = client.get(counting_server.url(f"/ok?id=gone-{index}"), request_id=f"gone-{index}")
            assert client.wait(info.request_id, timeout=60, poll_interval=0.005).status is RequestStatus.COMPLETED
            assert client.remove(info.request_id)
            return info.request_id

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            removed = set(pool.map(wait_and_remove, range(count)))
    deadline = time.monotonic() + 30
    while len(events.drain()) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    by_request = {event["request_id"]: (routing_key, event) for routing_key, event in events.received}
    missing = sorted(removed - set(by_request))
    assert missing == [], f"{len(missing)} of {count} requests got no event"  # however soon their files went
    assert len(events.received) == count
    assert {routing_key for routing_key, _ in by_request.values()} == {"request.completed"}
    for _, event in by_request.values():
        assert event["status_code"] == 200 and event["attempts"] == 1, event
        assert event["response_file_path"] is not None, event  # saved when the outcome happened
