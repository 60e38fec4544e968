"""One node cut off from the cluster, with clients that know only that node.

The node's app is stopped (``rabbitmqctl stop_app``): its Erlang VM runs on,
its AMQP listener and its clients' connections go. A client configured with
only that node must get BrokerUnavailable and keep nothing, never a confirm;
workers on the majority side carry on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from bghttp import BackgroundHttpClient, BrokerUnavailable, RequestStatus, Settings
from tests.cluster.rabbitmq_cluster import RabbitCluster
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


def test_a_client_on_the_cut_off_node_gets_broker_unavailable_not_a_confirm(
    cluster: RabbitCluster,
    cluster_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    c1, c2, c3 = cluster.nodes
    minority = dataclasses.replace(cluster_settings, broker_url=c3.url)
    majority = dataclasses.replace(cluster_settings, broker_url=f"{c1.url};{c2.url}")
    start_worker(majority)
    with BackgroundHttpClient(minority) as client:
        before = client.get(counting_server.url("/ok?id=before"), request_id="before")  # connected to c3
        cluster.stop_app(c3)
        errors = []
        for n in range(5):
            with pytest.raises(BrokerUnavailable) as raised:
                client.get(counting_server.url(f"/ok?id=cut{n}"), request_id=f"cut{n}")
            errors.append(str(raised.value))
            assert client.get_request_status(f"cut{n}") is None  # nothing half-written
        record = client.wait(before.request_id, timeout=60)  # the majority side works on
        cluster.start_app(c3)
        after = client.get(counting_server.url("/ok?id=after"), request_id="after")  # and c3 is back
        assert client.wait(after.request_id, timeout=60).status is RequestStatus.COMPLETED

    assert record.status is RequestStatus.COMPLETED
    assert not any(counting_server.hits[f"cut{n}"] for n in range(5))
    assert all("\n" not in error for error in errors)
    print(errors[0])
