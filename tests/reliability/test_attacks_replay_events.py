"""Attacks on the final events of a replayed request: every outcome gets its event, at least once.

An outcome's event can miss the broker (cancel's publish fails and is only
logged; a worker dies between the final status and its publish, or its publish
fails and Dramatiq retries the message later). The message that would publish it
again then meets the request *replayed*: it is stale and announces nothing. The
replay itself must announce the outcome it leaves (with the same ``event_id``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pika
import pytest

from bghttp import BackgroundHttpClient, BghttpError, RequestStatus, Settings
from bghttp.events import event_id
from tests.messaging import EventQueue, remove_message_queues, with_own_exchange
from tests.reliability.server import CountingServer
from tests.support import RABBITMQ_URL, WorkerProcess, wait_until

pytestmark = [pytest.mark.rabbitmq]

StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def settings(rabbitmq_settings: Settings) -> Iterator[Settings]:
    settings = with_own_exchange(rabbitmq_settings)
    yield settings
    remove_message_queues(settings)


@contextlib.contextmanager
def events_exchange_of_the_wrong_type(exchange: str) -> Iterator[None]:
    """While inside, declaring the events exchange (topic) fails with 406: every event publish fails."""
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange, exchange_type="fanout", durable=True)
        yield
        channel.exchange_delete(exchange)
    finally:
        connection.close()


def test_an_outcome_whose_event_failed_is_announced_when_it_is_replayed(
    settings: Settings, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    with BackgroundHttpClient(settings) as client:
        info = client.get(counting_server.url("/ok?id=replayed-after-lost-event"), metadata={"order": "1"})
        with events_exchange_of_the_wrong_type(settings.events_exchange):
            cancelled = client.cancel(info.request_id)  # its event cannot be published (logged only)
        assert cancelled.status is RequestStatus.CANCELLED
        events = EventQueue(settings.events_exchange)
        try:
            # Before any worker met the queued message (which would announce the cancel again):
            client.retry(info.request_id)
            start_worker(settings)
            received = events.wait_for(2)
            assert wait_until(lambda: counting_server.hits["replayed-after-lost-event"] == 1, timeout=10)
        finally:
            events.close()

    by_type = {routing_key: event for routing_key, event in received}
    assert sorted(by_type) == ["request.cancelled", "request.completed"], received
    assert by_type["request.cancelled"]["event_id"] == event_id(cancelled)
    assert by_type["request.cancelled"]["attempts"] == 0
    assert by_type["request.completed"]["event_id"] != event_id(cancelled)
    assert by_type["request.completed"]["metadata"] == {"order": "1"}


def test_cancel_racing_completion_gives_one_outcome_with_one_event_id(
    settings: Settings, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    """Cancels land just before, during and just after each attempt ends: per request one
    routing key and one ``event_id`` (the canceller's copy and the worker's agree), matching the store."""
    start_worker(settings, threads=8)
    events = EventQueue(settings.events_exchange)
    try:
        with BackgroundHttpClient(settings) as client:
            # Attempts of 0.1 to 0.3 s, cancelled 0.04 s apart: some before, some after they end.
            urls = [counting_server.url(f"/wait?id=race-{n}&delay={0.1 + (n % 5) * 0.05:.2f}") for n in range(24)]
            ids = [client.get(url, retries=0).request_id for url in urls]
            wait_until(lambda: sum(counting_server.hits.values()) >= 8, timeout=20)
            for request_id in ids:
                client.cancel(request_id)
                time.sleep(0.04)
            records = {request_id: client.wait(request_id, timeout=30) for request_id in ids}
            events.wait_for(len(ids), timeout=30)
            time.sleep(2)  # the workers' copies of the cancels' events
            received = events.drain()
    finally:
        events.close()

    kinds = {record.status for record in records.values()}
    by_request: dict[str, set[tuple[str, str]]] = {}
    for routing_key, event in received:
        by_request.setdefault(event["request_id"], set()).add((routing_key, event["event_id"]))
    assert sorted(by_request) == sorted(ids)
    for request_id, record in records.items():
        assert by_request[request_id] == {(f"request.{record.status.value}", event_id(record))}, request_id
    assert RequestStatus.CANCELLED in kinds, kinds  # the race was run, not avoided


def test_a_final_event_the_broker_refused_is_published_when_the_message_is_retried(
    settings: Settings, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    worker = start_worker(settings)
    with BackgroundHttpClient(settings) as client:
        with events_exchange_of_the_wrong_type(settings.events_exchange):
            info = client.get(counting_server.url("/ok?id=event-refused"))
            record = client.wait(info.request_id, timeout=30)  # final and durable; its event refused
            # Both publishes of the event refused: the worker gave the message to Dramatiq's retry
            # (a second or more away), so the exchange is back and bound before it comes.
            assert wait_until(lambda: worker.log_path.read_text().count("Channel.Close (406)") >= 2)
        events = EventQueue(settings.events_exchange)  # the exchange as it should be, bound
        try:
            [(routing_key, event)] = events.wait_for(1, timeout=90)  # Dramatiq's retry of the message
            time.sleep(2)
            assert len(events.drain()) == 1
        finally:
            events.close()

    assert routing_key == "request.completed" and event["event_id"] == event_id(record)
    assert counting_server.hits["event-refused"] == 1


def test_replays_racing_cancels_give_one_event_per_outcome_and_no_extra_send(
    settings: Settings, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    start_worker(settings, threads=4)
    events = EventQueue(settings.events_exchange)
    replays = 0
    try:
        with BackgroundHttpClient(settings) as client:
            info = client.get(counting_server.url("/wait?id=replay-cancel&delay=0.5"), retries=0)
            client.cancel(info.request_id)
            for round_ in range(12):
                try:
                    client.retry(info.request_id)
                    replays += 1
                except BghttpError:
                    pass  # RetryRefused or RequestRunning (an attempt still stopping): the race, as a user meets it
                time.sleep((round_ % 4) * 0.1)  # cancel while queued, and at points of the 0.5 s attempt
                client.cancel(info.request_id)
            final = client.wait(info.request_id, timeout=30)
            outcomes = 1 + replays
            events.wait_for(outcomes, timeout=30)
            time.sleep(2)
            received = events.drain()
    finally:
        events.close()

    distinct = {(routing_key, event["event_id"]) for routing_key, event in received}
    assert len({event_id for _, event_id in distinct}) == len(distinct)  # no ID under two routing keys
    assert len(distinct) == outcomes, (replays, sorted(distinct))
    # At most one send per run (the first run, too, may be sent before its cancel lands: a CI run
    # had 13 hits for 12 replays; none had more sends than runs).
    assert final.replays == replays and counting_server.hits["replay-cancel"] <= outcomes
    assert replays >= 6, replays  # most replays were accepted: the race was run


def test_a_worker_killed_before_its_final_event_got_out_leaves_it_to_the_next_worker(
    settings: Settings, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    worker = start_worker(settings)
    with BackgroundHttpClient(settings) as client:
        with events_exchange_of_the_wrong_type(settings.events_exchange):
            info = client.get(counting_server.url("/ok?id=killed-before-event"))
            record = client.wait(info.request_id, timeout=30)  # final and durable; its event refused
            assert wait_until(lambda: worker.log_path.read_text().count("Channel.Close (406)") >= 2)
            worker.kill()  # kill -9 while the event is still owed
            worker.process.wait(timeout=10)
        events = EventQueue(settings.events_exchange)
        try:
            start_worker(settings)
            [(routing_key, event)] = events.wait_for(1, timeout=90)
            time.sleep(2)
            # At least once, one outcome: the killed worker may leave Dramatiq's retry copy beside
            # its original (killed between them), and each announces the same event (same event_id).
            again = events.drain()
            assert again and {e["event_id"] for _, e in again} == {event["event_id"]}
        finally:
            events.close()

    assert routing_key == "request.completed" and event["event_id"] == event_id(record)
    assert counting_server.hits["killed-before-event"] == 1
