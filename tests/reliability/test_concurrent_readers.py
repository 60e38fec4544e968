"""Readers polling get_request_status while workers rewrite the records never see a torn one."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from bghttp import BackgroundHttpClient, Phase, RequestStatus, Settings
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

REQUESTS = 60
FAILURES = 3  # every request fails 3 times, then succeeds: about 10 status writes each
READERS = 3


def test_readers_never_see_a_partial_or_invalid_record(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    start_worker(rabbitmq_settings, processes=2, threads=4)
    problems: list[str] = []
    reads = [0] * READERS
    stop = threading.Event()
    with BackgroundHttpClient(rabbitmq_settings) as client:
        ids = [
            client.get(counting_server.url(f"/flaky?id=c{n}&fail={FAILURES}"), request_id=f"c{n}", retries=FAILURES)
            .request_id
            for n in range(REQUESTS)
        ]

        def read_loop(slot: int) -> None:
            seen: dict[str, tuple[int, int, bool]] = {}
            while not stop.is_set():
                for request_id in ids:
                    try:
                        record = client.get_request_status(request_id)
                    except Exception as error:  # a torn file shows up as StoreError here
                        problems.append(f"{request_id}: {type(error).__name__}: {error}")
                        continue
                    reads[slot] += 1
                    if record is None or record.request_id != request_id:
                        problems.append(f"{request_id}: record missing or for another ID: {record!r}")
                        continue
                    if record.is_terminal != (record.phase is Phase.DONE):
                        problems.append(f"{request_id}: status {record.status} with phase {record.phase}")
                    now = (record.attempt_count, record.token, record.is_terminal)
                    before = seen.get(request_id, (0, 0, False))
                    if now[0] < before[0] or now[1] < before[1] or (before[2] and not now[2]):
                        problems.append(f"{request_id}: went back from {before} to {now}")
                    seen[request_id] = now

        threads = [threading.Thread(target=read_loop, args=(slot,)) for slot in range(READERS)]
        for thread in threads:
            thread.start()
        try:
            records = [client.wait(request_id, timeout=180) for request_id in ids]
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)

    assert problems == []
    assert all(r.status is RequestStatus.COMPLETED and r.attempt_count == FAILURES + 1 for r in records)
    assert sum(reads) > 10 * REQUESTS * (FAILURES + 1)  # the readers really raced the writers
    print(f"{sum(reads)} status reads while {REQUESTS * (FAILURES + 1)} attempts ran")
