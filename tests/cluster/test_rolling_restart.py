"""A rolling restart of all three nodes, one at a time, under a steady submit load.

Every submit either returns a RequestInfo (and then that request completes and
reaches the server) or raises BrokerUnavailable (and then nothing of it is in
the store and the server never sees it): never both, never anything else.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from bghttp import BackgroundHttpClient, BrokerUnavailable, RequestStatus, Settings
from tests.cluster.rabbitmq_cluster import RabbitCluster
from tests.reliability.server import CountingServer
from tests.reliability.support import wait_all_terminal
from tests.support import WorkerProcess

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

SUBMITTERS = 2
#: Pause between one submitter's submits: a steady load, not a flood the 2 cores cannot drain.
SUBMIT_PAUSE = 0.01


def test_rolling_restart_loses_no_accepted_submit_and_half_writes_no_refused_one(
    cluster: RabbitCluster,
    cluster_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    accepted: list[str] = []
    refused: list[str] = []
    reasons: list[str] = []
    unexpected: list[str] = []
    stop = threading.Event()
    start_worker(cluster_settings, processes=1, threads=8)

    with BackgroundHttpClient(cluster_settings) as client:

        def submit_steadily(submitter: int) -> None:
            n = 0
            while not stop.is_set():
                request_id = f"r{submitter}-{n}"
                n += 1
                try:
                    client.get(counting_server.url(f"/ok?id={request_id}"), request_id=request_id)
                except BrokerUnavailable as error:
                    refused.append(request_id)
                    reasons.append(str(error))
                except Exception as error:  # anything else breaks the promise
                    unexpected.append(f"{request_id}: {type(error).__name__}: {error}")
                else:
                    accepted.append(request_id)
                time.sleep(SUBMIT_PAUSE)

        threads = [threading.Thread(target=submit_steadily, args=(i,)) for i in range(SUBMITTERS)]
        for thread in threads:
            thread.start()
        timeline = []
        try:
            time.sleep(2)
            for node in cluster.nodes:
                before = len(accepted)
                cluster.ctl(node, "stop")  # the node's VM stops; its clients are disconnected
                stopped = time.monotonic()
                time.sleep(2)
                cluster.start_node(node)
                cluster.wait_cluster()
                down = time.monotonic() - stopped
                timeline.append(f"{node.name}: down {down:.1f} s, {len(accepted) - before} accepted")
            time.sleep(2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=120)

        assert unexpected == []
        wait_all_terminal(client, accepted, timeout=300)
        records = {request_id: client.get_request_status(request_id) for request_id in accepted}
        left_behind = [request_id for request_id in refused if client.get_request_status(request_id) is not None]
        time.sleep(2)  # a refused submit's message that got through anyway would run by now

    assert accepted
    assert all(r is not None and r.status is RequestStatus.COMPLETED for r in records.values())
    assert all(1 <= counting_server.hits[i] <= records[i].attempt_count for i in accepted)  # type: ignore[union-attr]
    assert left_behind == []
    assert [request_id for request_id in refused if counting_server.hits[request_id]] == []
    print(f"{len(accepted)} accepted (all completed), {len(refused)} refused with BrokerUnavailable", reasons[:3])
    print("; ".join(timeline))
