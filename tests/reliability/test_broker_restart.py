"""RabbitMQ restarted (stop_app / start_app) while 1,000 requests are in flight.

This disturbs every RabbitMQ user on the machine for a few seconds, so it runs
once, with a short outage.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.reliability.server import CountingServer
from tests.reliability.support import wait_all_terminal
from tests.support import IN_CI, WorkerProcess, rabbitmq_available, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

IN_FLIGHT = 1000
OUTAGE_SECONDS = 3.0


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def require_rabbitmqctl() -> None:
    """Skip where this process cannot control the broker (a remote RabbitMQ), except in CI."""
    try:
        rabbitmqctl("-q", "status")
    except (OSError, subprocess.SubprocessError) as error:
        if IN_CI:
            pytest.fail(f"rabbitmqctl is needed in CI: {error}")
        pytest.skip(f"rabbitmqctl cannot control the broker here: {error}")


def test_rabbitmq_restart_loses_nothing_and_sends_nothing_twice_beyond_attempts(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    require_rabbitmqctl()
    with BackgroundHttpClient(rabbitmq_settings) as client:

        def submit(n: int) -> str:
            # Each answer takes 100 ms and every fourth request fails once, so
            # attempts, retries and delayed messages are all in flight at the stop.
            url = counting_server.url(f"/wait?id=b{n}&delay=0.1&fail={1 if n % 4 == 0 else 0}")
            return client.get(url, request_id=f"b{n}", retries=3).request_id

        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(submit, range(IN_FLIGHT)))
        # The worker starts on a full queue: nearly all 1,000 are in flight at the stop.
        worker = start_worker(rabbitmq_settings, processes=2, threads=8)
        wait_until(lambda: len(counting_server.hits) >= 50, timeout=60)
        try:
            rabbitmqctl("stop_app")
            stopped_at = time.time()
            time.sleep(OUTAGE_SECONDS)
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
        restarted_at = time.time()
        assert rabbitmq_available()
        terminal_before_stop = sum(
            1 for r in map(client.get_request_status, ids) if r is not None and r.is_terminal and r.completed_at
            and r.completed_at < stopped_at
        )
        assert terminal_before_stop < IN_FLIGHT  # the outage really hit requests in flight

        # The same worker group (no restart) reconnects by itself and finishes everything.
        wait_all_terminal(client, ids, timeout=300)
        records = {request_id: client.get_request_status(request_id) for request_id in ids}

    assert worker.process.poll() is None
    not_completed = {
        request_id: (r.status.value, r.last_error, [(a.outcome, a.counted) for a in r.attempts]) if r else None
        for request_id, r in records.items()
        if r is None or r.status is not RequestStatus.COMPLETED
    }
    assert not_completed == {}
    over = {
        request_id: (counting_server.hits[request_id], r.attempt_count)
        for request_id, r in records.items()
        if r is not None and not 1 <= counting_server.hits[request_id] <= r.attempt_count
    }
    assert over == {}
    after_restart = sum(1 for times in counting_server.times.values() if times[-1] > restarted_at)
    assert after_restart > 0  # work went on through the reconnected consumers
    extra_attempts = sum(r.attempt_count for r in records.values() if r) - sum(counting_server.hits.values())
    print(
        f"{IN_FLIGHT} requests, {terminal_before_stop} done before the stop, {after_restart} sent after "
        f"the restart; recorded attempts minus server hits: {extra_attempts}"
    )
