"""Attack: one attempt longer than RabbitMQ's ``consumer_timeout``.

A ``timeout`` may be up to a day, ``consumer_timeout`` is 30 min by default:
a long download keeps its delivery unacked past it, RabbitMQ closes the
worker's channel and redelivers every unacked message of that channel (the
running one and those prefetched behind it). Tokens and claims must still
send each request once. The test makes ``consumer_timeout`` 5 s for the
worker's channels (as ``tests/connectivity/test_consumer_timeout.py`` does).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pika.exceptions
import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.connectivity.test_consumer_timeout import (  # noqa: F401  (rabbit_env is a fixture)
    CHANNEL_CLOSED_SIGNS,
    RabbitEnv,
    rabbit_env,
)
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess, queue_counts, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

CONSUMER_TIMEOUT_MS = 5000


@pytest.mark.parametrize("threads", [1, 2])
def test_an_attempt_longer_than_consumer_timeout_sends_every_request_once(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    rabbit_env: RabbitEnv,  # noqa: F811
    counting_server: CountingServer,
    threads: int,
) -> None:
    rabbit_env.set("consumer_timeout", CONSUMER_TIMEOUT_MS)
    rabbit_env.set("channel_tick_interval", 1000)
    worker = start_worker(rabbitmq_settings, threads=threads)
    queue = rabbitmq_settings.queue_name
    wait_until(lambda: _consumers(queue) >= 1, timeout=30, interval=0.2)
    rabbit_env.restore("consumer_timeout")  # read at channel open: the worker's channels keep 5 s
    with BackgroundHttpClient(rabbitmq_settings) as client:
        # About 12 s of body, well within its timeout, past two consumer timeouts.
        long = client.get(counting_server.url("/slow?id=long&chunks=24&size=1024&delay=0.5"), timeout=60).request_id
        time.sleep(0.5)  # the long one is running; these wait behind it, prefetched (unacked)
        short = [client.get(counting_server.url(f"/ok?id=s{n}"), request_id=f"s{n}").request_id for n in range(6)]
        records = {i: client.wait(i, timeout=90) for i in [long, *short]}
        time.sleep(1.0)  # a late duplicate, if any, would arrive now
    log = worker.log_path.read_text(errors="replace")
    assert any(sign in log for sign in CHANNEL_CLOSED_SIGNS), "RabbitMQ never closed the channel: no attack"
    assert {i: r.status for i, r in records.items()} == {i: RequestStatus.COMPLETED for i in records}
    assert dict(counting_server.hits) == {"long": 1, **{f"s{n}": 1 for n in range(6)}}
    assert [a.outcome for a in records[long].attempts] == ["success"]


def _consumers(queue: str) -> int:
    try:
        return queue_counts(queue)[1]
    except pika.exceptions.ChannelClosedByBroker:  # not declared yet
        return 0
