"""A real worker process, a flood to one held host and a few requests to another.

The per-host cap (``BGHTTP_MAX_IN_FLIGHT_PER_HOST``) keeps the flood from taking
every place: the other host's requests complete while the flood's are in
flight, and every request of the flood is still sent exactly once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings, StatusRecord
from tests.reliability.server import CountingHandler, CountingServer
from tests.support import WorkerProcess, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

PER_HOST, MAX_IN_FLIGHT, FLOOD, OTHERS = 2, 6, 12, 4
#: The edges every attempt keeps (see tests/reliability/test_attempt_deadline.py).
CANCEL_LATENCY, SLACK = 0.5, 1.0


class HeldServer(CountingServer):
    """``/hold`` answers only once ``release`` is set, and counts how many it holds at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.holding = 0
        self.most_held = 0
        self._handler_type().route_hold = _route_hold  # type: ignore[attr-defined]

    def _handler_type(self) -> type[CountingHandler]:
        return self._server.RequestHandlerClass  # type: ignore[return-value]


def _route_hold(handler: CountingHandler, request_id: str, hit: int, query: dict[str, str]) -> None:
    server = handler.counter
    assert isinstance(server, HeldServer)
    with server._lock:
        server.holding += 1
        server.most_held = max(server.most_held, server.holding)
    try:
        server.release.wait(60)
        handler.reply(200, f"ok {request_id}".encode())
    except (BrokenPipeError, ConnectionResetError):
        pass  # a cancelled or timed-out attempt closed its connection: that is the point
    finally:
        with server._lock:
            server.holding -= 1


def _closed(client: BackgroundHttpClient, request_id: str) -> StatusRecord | None:
    record = client.get_request_status(request_id)
    return record if record is not None and record.attempts and record.attempts[-1].finished_at else None


@pytest.fixture
def held_server() -> Iterator[HeldServer]:
    server = HeldServer().start()
    yield server
    server.release.set()
    server.stop()


def test_a_flood_to_one_host_does_not_hold_up_another_and_each_request_is_sent_once(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    held_server: HeldServer,
    counting_server: CountingServer,
) -> None:
    worker = start_worker(
        rabbitmq_settings, threads=MAX_IN_FLIGHT, extra_env={"BGHTTP_MAX_IN_FLIGHT_PER_HOST": str(PER_HOST)}
    )
    with BackgroundHttpClient(rabbitmq_settings) as client:
        flood = [client.get(held_server.url(f"/hold?id=s{n}"), request_id=f"s{n}").request_id for n in range(FLOOD)]
        wait_until(lambda: held_server.holding == PER_HOST)
        others = [client.get(counting_server.url(f"/ok?id=f{n}"), request_id=f"f{n}").request_id for n in range(OTHERS)]
        for request_id in others:
            assert client.wait(request_id, timeout=30).status is RequestStatus.COMPLETED
        # The other host's requests are done while the flood is still held, at its cap.
        assert held_server.holding == PER_HOST and held_server.most_held == PER_HOST
        assert sum(held_server.hits.values()) == PER_HOST
        waiting = [client.get_request_status(request_id) for request_id in flood]
        assert all(record is not None and not record.is_terminal for record in waiting)

        held_server.release.set()
        records = [client.wait(request_id, timeout=120) for request_id in flood]

    assert all(record.status is RequestStatus.COMPLETED for record in records)
    assert all(len(record.attempts) == 1 and record.retries_used == 0 for record in records)  # waiting spent nothing
    assert held_server.hits == {request_id: 1 for request_id in flood}  # each sent exactly once
    assert held_server.most_held == PER_HOST
    events = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
    slots = [e for e in events if e.get("event") == "worker_slots"]
    assert slots and slots[0]["max_in_flight"] == MAX_IN_FLIGHT and slots[0]["max_in_flight_per_host"] == PER_HOST
    # More of the flood than could wait in the process went back to the broker for a while.
    assert any(e.get("event") == "message_deferred" and e.get("reason") == "host busy" for e in events)


def test_with_many_attempts_in_flight_a_cancel_and_a_timeout_still_end_their_attempt_in_time(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], held_server: HeldServer
) -> None:
    """The edges (cancel within 0.5 s, an attempt within its timeout + 1 s) with 120 attempts in one process."""
    many, timeout = 120, 3.0
    start_worker(rabbitmq_settings, threads=many + 10, extra_env={"BGHTTP_MAX_IN_FLIGHT_PER_HOST": str(many + 10)})
    with BackgroundHttpClient(rabbitmq_settings) as client:
        ids = [
            client.get(held_server.url(f"/hold?id=m{n}"), request_id=f"m{n}", timeout=60).request_id
            for n in range(many)
        ]
        timed = client.get(held_server.url("/hold?id=timed"), request_id="timed", timeout=timeout, retries=0)
        wait_until(lambda: held_server.holding == many + 1, timeout=60)
        cancelled_at = {}
        for request_id in ids[:3]:
            cancelled_at[request_id] = time.time()
            client.cancel(request_id)
        # Cancelled at once; the running attempt then records how and when it ended.
        ended = {r: wait_until(lambda r=r: _closed(client, r), timeout=30) for r in cancelled_at}
        timed_record = client.wait(timed.request_id, timeout=30)
        held_server.release.set()
        finished = [client.wait(request_id, timeout=60) for request_id in ids[3:]]

    for request_id, record in ended.items():
        attempt = record.attempts[-1]
        assert record.status is RequestStatus.CANCELLED and attempt.outcome == "cancelled"
        assert attempt.finished_at is not None and attempt.finished_at - cancelled_at[request_id] <= CANCEL_LATENCY
    attempt = timed_record.attempts[-1]
    assert timed_record.status is RequestStatus.FAILED and attempt.outcome == "timeout"
    assert attempt.finished_at is not None and attempt.finished_at - attempt.started_at <= timeout + SLACK
    assert all(record.status is RequestStatus.COMPLETED for record in finished)


#: Publishing threads of a worker process (broker.WORKER_PUBLISH_THREADS) plus its
#: consumers (work queue, delay queue, intake and its delay queue) and the main thread.
MOST_BROKER_CONNECTIONS = 12


def _broker_connections(worker: WorkerProcess) -> int:
    """ESTABLISHED connections of the worker group's processes to RabbitMQ's port."""
    import psutil

    processes = [psutil.Process(worker.process.pid), *psutil.Process(worker.process.pid).children(recursive=True)]
    count = 0
    for process in processes:
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        count += sum(
            1 for c in connections if c.raddr and c.raddr.port == 5672 and c.status == psutil.CONN_ESTABLISHED
        )
    return count


def test_many_attempts_in_flight_publish_on_a_few_broker_connections(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    """Dramatiq opens a connection per publishing thread: 48 threads publishing their
    retries and events once opened 48+ connections (hundreds exhausted RabbitMQ's files)."""
    threads = 48
    worker = start_worker(rabbitmq_settings, threads=threads)
    most = 0
    with BackgroundHttpClient(rabbitmq_settings) as client:
        # Every request fails once (a retry is published) and then completes (an event is published),
        # all 48 at once, each on its own worker thread.
        ids = [
            client.get(counting_server.url(f"/wait?id=p{n}&delay=0.5&fail=1"), request_id=f"p{n}", retries=1).request_id
            for n in range(threads * 2)
        ]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            most = max(most, _broker_connections(worker))
            records = [client.get_request_status(request_id) for request_id in ids]
            if all(record is not None and record.is_terminal for record in records):
                break
            time.sleep(0.2)
        assert all(client.wait(request_id, timeout=5).status is RequestStatus.COMPLETED for request_id in ids)
    assert sum(counting_server.hits.values()) == 2 * len(ids)
    assert 0 < most <= MOST_BROKER_CONNECTIONS, f"the worker held {most} connections to RabbitMQ"


def test_a_message_handed_back_while_its_thread_still_holds_the_claim_is_not_lost(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], held_server: HeldServer
) -> None:
    """Stranded hand-backs: the next run of a handed-back message met its predecessor's claim, held past the
    grace period, took itself for a duplicate and dropped; the request stayed queued with no message."""
    # 4 places (2 waiting threads), 1 per host: the first request runs (held), two wait in the
    # process, the fourth is handed back, by a thread that then keeps the claim for 4 s.
    worker = start_worker(
        rabbitmq_settings,
        threads=4,
        extra_env={"BGHTTP_MAX_IN_FLIGHT_PER_HOST": "1", "BGHTTP_TEST_HAND_BACK_HOLD": "4"},
        modules=("tests.integration.slow_hand_back",),
    )
    with BackgroundHttpClient(rabbitmq_settings) as client:
        ids = [client.get(held_server.url(f"/hold?id=h{n}"), request_id=f"h{n}").request_id for n in range(4)]
        wait_until(lambda: "host busy" in worker.log_path.read_text(), timeout=30)
        time.sleep(6)  # the handed-back message came back while its predecessor held the claim
        held_server.release.set()
        records = [client.wait(request_id, timeout=90) for request_id in ids]

    assert [record.status for record in records] == [RequestStatus.COMPLETED] * 4
    assert held_server.hits == {request_id: 1 for request_id in ids}
    events = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
    assert not [e for e in events if e.get("event") == "message_dropped" and "duplicate" in str(e.get("reason"))]
