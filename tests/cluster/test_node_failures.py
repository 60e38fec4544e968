"""kill -9 of a RabbitMQ node while 1,000 requests are in flight on quorum queues.

Two cases, each on a fresh queue: the node holding the queue's leader (the
workers stay connected to another node), and the node the workers are
connected to (the leader stays). The counting server is the witness: every
request ends, none reaches it more often than the store's recorded attempts,
and no retry reaches it before its recorded ``due_at``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.cluster.rabbitmq_cluster import Node, RabbitCluster
from tests.reliability.server import CountingServer
from tests.reliability.support import wait_all_terminal
from tests.support import WorkerProcess, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

IN_FLIGHT = 1000
#: Every fourth request fails once; its retry is due 2 s x scale after the failure.
BACKOFF_SCALE = 2.0
#: A retry may reach the server this much before its recorded due time (ms rounding of the delay).
EARLY_TOLERANCE = 0.05


def urls_starting_at(cluster: RabbitCluster, first: Node) -> str:
    others = [node.url for node in cluster.nodes if node is not first]
    return ";".join([first.url, *others])


def run_kill_scenario(
    cluster: RabbitCluster,
    settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    server: CountingServer,
    *,
    kill_leader: bool,
) -> str:
    # The client declares the queue through c2 (its leader goes there: client-local
    # placement); the workers connect to c1. So the two cases kill different nodes.
    c1, c2 = cluster.node(1), cluster.node(2)
    client_settings = dataclasses.replace(settings, broker_url=urls_starting_at(cluster, c2))
    worker_settings = dataclasses.replace(settings, broker_url=urls_starting_at(cluster, c1))
    with BackgroundHttpClient(client_settings) as client:

        def submit(n: int) -> str:
            url = server.url(f"/wait?id=k{n}&delay=0.05&fail={1 if n % 4 == 0 else 0}")
            return client.get(url, request_id=f"k{n}", retries=3).request_id

        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(submit, range(IN_FLIGHT)))
        leader = cluster.queue_leader(settings.queue_name)
        assert leader is c2, f"the leader is on {leader.name}"
        start_worker(worker_settings, processes=2, threads=8)
        # Kill once retries are waiting in the delay queue and most requests are still queued.
        wait_until(lambda: sum(server.hits.values()) >= 150, timeout=120)
        victim = leader if kill_leader else c1
        cluster.kill(victim)
        killed_at = time.time()
        done_before = sum(1 for r in map(client.get_request_status, ids) if r is not None and r.is_terminal)
        waiting_retry = sum(1 for r in map(client.get_request_status, ids) if r is not None and r.next_attempt_at)

        wait_all_terminal(client, ids, timeout=600)
        finished_at = time.time()
        records = {request_id: client.get_request_status(request_id) for request_id in ids}
        new_leader = cluster.queue_leader(settings.queue_name, via=c1 if victim is not c1 else c2)

    assert done_before < IN_FLIGHT  # the kill hit requests in flight
    assert all(r is not None and r.status is RequestStatus.COMPLETED for r in records.values())
    over = {
        request_id: (server.hits[request_id], r.attempt_count)
        for request_id, r in records.items()
        if r is not None and not 1 <= server.hits[request_id] <= r.attempt_count
    }
    assert over == {}
    early = {}
    for request_id, r in records.items():
        assert r is not None
        arrivals = server.times[request_id]
        if len(arrivals) == r.attempt_count:  # one arrival per recorded attempt, in order
            for arrival, attempt in zip(arrivals[1:], r.attempts[1:], strict=True):
                if attempt.due_at is not None and arrival < attempt.due_at - EARLY_TOLERANCE:
                    early[request_id] = (arrival, attempt.due_at)
    assert early == {}
    retried = sum(1 for r in records.values() if r is not None and r.attempt_count > 1)
    after_kill = sum(1 for times in server.times.values() if times[-1] > killed_at)
    assert after_kill > 0
    return (
        f"killed {victim.name} ({'queue leader' if kill_leader else 'the workers node'}; new leader "
        f"{new_leader.name}) with {IN_FLIGHT - done_before} of {IN_FLIGHT} unfinished and {waiting_retry} "
        f"waiting for a retry; all {IN_FLIGHT} completed {finished_at - killed_at:.1f} s later; "
        f"{retried} retried, {after_kill} reached the server after the kill; "
        f"server hits {sum(server.hits.values())}, recorded attempts "
        f"{sum(r.attempt_count for r in records.values() if r)}; no retry early"
    )


def test_kill_9_of_the_queue_leader_loses_nothing_and_sends_nothing_early_or_twice(
    cluster: RabbitCluster,
    cluster_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    settings = dataclasses.replace(cluster_settings, backoff_scale=BACKOFF_SCALE)
    print(run_kill_scenario(cluster, settings, start_worker, counting_server, kill_leader=True))


def test_kill_9_of_the_workers_node_loses_nothing_and_sends_nothing_early_or_twice(
    cluster: RabbitCluster,
    cluster_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    settings = dataclasses.replace(cluster_settings, backoff_scale=BACKOFF_SCALE)
    print(run_kill_scenario(cluster, settings, start_worker, counting_server, kill_leader=False))
