"""Outages on loopback: a real worker process, real RabbitMQ, a probe port the test closes.

"The network" is a TCP port the test opens and closes; the worker's only probe
points at it. The HTTP server stays up throughout, so anything it receives
during the outage was sent although the worker believed it was offline.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from bghttp import BackgroundHttpClient, Phase, RequestStatus, Settings
from bghttp.worker.retry_policy import Outcome
from tests.connectivity.support import (
    CountingServer,
    ProbePort,
    ResetTrap,
    all_completed,
    log_events,
    outage_settings,
    statuses,
)
from tests.support import WorkerProcess, free_port, wait_until

pytestmark = pytest.mark.rabbitmq

WAIT = 60.0


def test_requests_wait_for_the_network_and_spend_no_retry(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    probe: ProbePort,
    server: CountingServer,
) -> None:
    settings = outage_settings(rabbitmq_settings, probe)
    worker = start_worker(settings)
    probe.close()
    wait_until(lambda: log_events(worker.log_path, "network_offline"), timeout=WAIT)

    with BackgroundHttpClient(settings) as client:
        ids = [client.get(server.url(f"/item/{n}"), retries=2).request_id for n in range(5)]
        # Every request reaches the gate and is marked as waiting for the network.
        wait_until(
            lambda: all(r.phase is Phase.WAITING_NETWORK for r in statuses(client, ids)), timeout=WAIT
        )
        time.sleep(3.0)  # several hold/re-publish rounds (hold 1 s)
        assert server.total() == 0
        assert all(r.status is RequestStatus.IN_PROGRESS for r in statuses(client, ids))

        probe.open()
        wait_until(lambda: all_completed(client, ids), timeout=WAIT)
        records = statuses(client, ids)

    assert [r.retries_used for r in records] == [0] * 5
    assert all(r.attempt_count == 1 for r in records)  # the outage cost no attempt at all
    assert server.counts == {f"/item/{n}": 1 for n in range(5)}
    online = log_events(worker.log_path, "network_online")
    assert online and online[0]["held_requests"] == 5 and online[0]["offline_s"] > 0


def test_network_error_during_an_outage_with_retries_zero_still_completes(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    probe: ProbePort,
) -> None:
    # A long interval: only the network error's immediate check can see the outage.
    settings = outage_settings(rabbitmq_settings, probe, connectivity_interval=1.0)
    target = CountingServer(free_port())
    trap = ResetTrap(target.port, probe)
    try:
        worker = start_worker(settings)
        with BackgroundHttpClient(settings) as client:
            request_id = client.get(target.url("/once"), retries=0).request_id
            assert trap.fired.wait(WAIT)

            def offline_attempt_recorded() -> bool:
                record = client.get_request_status(request_id)
                return record is not None and record.phase is Phase.WAITING_NETWORK and bool(record.attempts)

            wait_until(offline_attempt_recorded, timeout=WAIT)
            record = client.get_request_status(request_id)
            assert record is not None
            assert record.status is RequestStatus.IN_PROGRESS  # not failed, although retries=0
            first = record.attempts[0]
            assert (first.outcome, first.counted) == (Outcome.NETWORK_ERROR.value, False)

            target.start()  # the network comes back: the server and the probe answer again
            probe.open()
            final = client.wait(request_id, timeout=WAIT)
    finally:
        trap.close()
        target.stop()

    assert final.status is RequestStatus.COMPLETED
    assert final.retries_used == 0
    assert [a.counted for a in final.attempts] == [False, True]
    assert target.counts == {"/once": 1}
    assert log_events(worker.log_path, "attempt_failed_offline")
