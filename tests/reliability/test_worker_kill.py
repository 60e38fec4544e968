"""Workers killed with SIGKILL: mid-download, and while holding delayed retries."""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.reliability.server import CountingServer, slow_body
from tests.support import WorkerProcess, queue_counts, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

CHUNKS, CHUNK_SIZE, CHUNK_DELAY = 40, 64 * 1024, 0.1  # 2.5 MiB over about 4 s


def test_sigkill_mid_response_completes_on_a_restarted_worker(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    first = start_worker(rabbitmq_settings, threads=2)
    url = counting_server.url(f"/slow?id=slow&chunks={CHUNKS}&size={CHUNK_SIZE}&delay={CHUNK_DELAY}")
    with BackgroundHttpClient(rabbitmq_settings) as client:
        # retries=1: the killed attempt had sent the request, so running it again spends a retry.
        info = client.get(url, request_id="slow", timeout=120, retries=1)
        part = client.store.response_part_path("slow")
        # Kill only once a good share of the body is on disk: the middle of the response.
        wait_until(lambda: part.exists() and part.stat().st_size >= 10 * CHUNK_SIZE, timeout=60)
        first.kill(signal.SIGKILL)
        first.process.wait(timeout=10)
        interrupted = client.get_request_status("slow")
        assert interrupted is not None and not interrupted.is_terminal

        start_worker(rabbitmq_settings, threads=2)  # the unacked message comes back to it
        record = client.wait(info.request_id, timeout=120)
        response = client.get_response(info.request_id)

    assert record.status is RequestStatus.COMPLETED
    # One status record, completed once; the killed attempt is closed as interrupted after sending.
    assert [a.outcome for a in record.attempts] == ["interrupted", "success"]
    assert record.attempts[0].counted and record.retries_used == 1
    assert counting_server.hits["slow"] == 2
    assert response is not None
    assert response.read_bytes() == slow_body("slow", CHUNKS, CHUNK_SIZE)
    assert not part.exists()


def test_worker_killed_holding_delayed_retries_hands_them_on(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    """Retries waiting in a killed worker's memory run on another worker, never early."""
    settings = dataclasses.replace(rabbitmq_settings, backoff_scale=3.0)  # first retry after 6 s
    count = 20
    first = start_worker(settings, threads=4)
    with BackgroundHttpClient(settings) as client:
        ids = [
            client.get(counting_server.url(f"/flaky?id=r{n}&fail=1"), request_id=f"r{n}", retries=2).request_id
            for n in range(count)
        ]

        def all_waiting() -> bool:
            records = [client.get_request_status(i) for i in ids]
            return all(r is not None and r.phase.value == "waiting_retry" for r in records)

        wait_until(all_waiting, timeout=60)
        due = {i: client.get_request_status(i).next_attempt_at for i in ids}  # type: ignore[union-attr]
        # The worker's delay consumer takes the delayed messages and holds them
        # unacked in memory: none stays "ready" in RabbitMQ's delay queue.
        wait_until(lambda: _ready_messages(f"{settings.queue_name}.DQ") == 0, timeout=30)
        assert all(counting_server.hits[f"r{n}"] == 1 for n in range(count))
        first.kill(signal.SIGKILL)
        first.process.wait(timeout=10)
        killed_at = time.time()
        assert killed_at < min(due.values())  # the kill happened while the retries were held

        start_worker(settings, threads=4)
        records = {i: client.wait(i, timeout=120) for i in ids}

    lateness: list[float] = []
    for n, request_id in enumerate(ids):
        record = records[request_id]
        assert record.status is RequestStatus.COMPLETED
        assert [a.outcome for a in record.attempts] == ["http_error", "success"]
        assert counting_server.hits[f"r{n}"] == 2
        retried_at = counting_server.times[f"r{n}"][1]
        lateness.append(retried_at - due[request_id])
        assert retried_at >= due[request_id] - 0.05  # on time: never before next_attempt_at
        assert record.attempts[1].started_at >= due[request_id] - 0.05
    print(f"retry lateness after the kill: min {min(lateness):.3f} s, max {max(lateness):.3f} s")


def _ready_messages(queue: str) -> int:
    return queue_counts(queue)[0]
