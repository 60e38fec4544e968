"""An outage much longer than RabbitMQ's consumer_timeout: nothing lost, nothing sent twice.

RabbitMQ closes a channel that keeps a delivery unacked longer than
``consumer_timeout`` (30 min by default) and redelivers its messages. The test
makes that timeout 5 s at run time (``rabbitmqctl eval``), and the channel
tick that enforces it 1 s (by default it is only looked at once a minute), for
the channels the worker opens at start; then it keeps the network down for four
timeouts. Both values are read at channel open, so they are put back as soon as
the worker's consumers are attached, and again in a ``finally``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.connectivity.support import (
    CountingServer,
    ProbePort,
    all_completed,
    log_events,
    outage_settings,
    statuses,
)
from tests.support import WorkerProcess, queue_counts, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

WAIT = 60.0
CONSUMER_TIMEOUT_MS = 5000
OUTAGE_SECONDS = 4 * CONSUMER_TIMEOUT_MS / 1000
#: What dramatiq/pika log when RabbitMQ closes a channel for an overdue ack.
CHANNEL_CLOSED_SIGNS = ("PRECONDITION_FAILED", "delivery acknowledgement", "consumer_timeout")


def _rabbitmqctl_eval(expression: str) -> str:
    result = subprocess.run(
        ["rabbitmqctl", "eval", expression], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.strip()


class RabbitEnv:
    """Set ``rabbit`` application variables; ``restore()`` puts the previous values back."""

    def __init__(self) -> None:
        self._previous: dict[str, str] = {}

    def set(self, key: str, value: int) -> None:
        if key not in self._previous:
            self._previous[key] = _rabbitmqctl_eval(f"application:get_env(rabbit, {key}).")
        _rabbitmqctl_eval(f"application:set_env(rabbit, {key}, {value}).")

    def get(self, key: str) -> str:
        return _rabbitmqctl_eval(f"application:get_env(rabbit, {key}).")

    def restore(self, *keys: str) -> None:
        """Put back ``keys`` (default: every variable set so far)."""
        for key in keys or tuple(self._previous):
            previous = self._previous.pop(key, None)
            if previous is None:
                continue
            if previous.startswith("{ok,") and previous.endswith("}"):
                _rabbitmqctl_eval(f"application:set_env(rabbit, {key}, {previous[4:-1]}).")
            else:  # it was not set at all
                _rabbitmqctl_eval(f"application:unset_env(rabbit, {key}).")


@pytest.fixture
def rabbit_env() -> Iterator[RabbitEnv]:
    try:
        _rabbitmqctl_eval("ok.")
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"rabbitmqctl is not usable here: {error}")
    env = RabbitEnv()
    try:
        yield env
    finally:
        env.restore()


def _consumers(queue: str) -> int:
    return queue_counts(queue)[1]


@pytest.mark.parametrize(
    ("hold_seconds", "channel_closes"),
    [
        pytest.param(1.0, False, id="bounded-hold"),
        # Control: a hold longer than the timeout. RabbitMQ must close the channel
        # (else this test could not see the difference), and the store's tokens and
        # claims must still stop the redelivered copies from running twice.
        pytest.param(60.0, True, id="control-hold-past-timeout"),
    ],
)
def test_an_outage_longer_than_consumer_timeout_loses_and_repeats_nothing(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    rabbit_env: RabbitEnv,
    probe: ProbePort,
    server: CountingServer,
    hold_seconds: float,
    channel_closes: bool,
) -> None:
    # Re-check every 0.3 s; with a 1 s hold no delivery stays unacked anywhere near 5 s.
    settings = outage_settings(
        rabbitmq_settings, probe, offline_hold_seconds=hold_seconds, connectivity_interval=0.3
    )
    rabbit_env.set("consumer_timeout", CONSUMER_TIMEOUT_MS)
    # The tick is read each time it is re-armed: it stays short for the whole test
    # (harmless for other channels, whose timeout stays the default).
    rabbit_env.set("channel_tick_interval", 1000)
    worker = start_worker(settings, threads=2)
    queue = settings.queue_name
    wait_until(lambda: _consumers(queue) >= 1 and _consumers(f"{queue}.DQ") >= 1, timeout=WAIT, interval=0.2)
    rabbit_env.restore("consumer_timeout")  # read at channel open: the worker's channels keep 5 s
    assert rabbit_env.get("consumer_timeout") != f"{{ok,{CONSUMER_TIMEOUT_MS}}}"

    probe.close()
    wait_until(lambda: log_events(worker.log_path, "network_offline"), timeout=WAIT)
    with BackgroundHttpClient(settings) as client:
        ids = [client.get(server.url(f"/long/{n}"), retries=0).request_id for n in range(8)]
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < outage_ends:
            assert server.total() == 0
            time.sleep(0.5)
        assert all(r.status is RequestStatus.IN_PROGRESS for r in statuses(client, ids))

        probe.open()
        wait_until(lambda: all_completed(client, ids), timeout=WAIT)
        records = statuses(client, ids)
        time.sleep(1.0)  # a late duplicate, if any, would arrive now

    assert server.counts == {f"/long/{n}": 1 for n in range(8)}  # none lost, none sent twice
    assert [r.retries_used for r in records] == [0] * 8
    log_text = worker.log_path.read_text(errors="replace")
    closed = [sign for sign in CHANNEL_CLOSED_SIGNS if sign in log_text]
    if channel_closes:
        assert closed, "RabbitMQ did not enforce the 5 s consumer_timeout: the test proves nothing"
    else:
        assert not closed
        # Every request went round the hold/re-publish loop during the outage.
        assert len(log_events(worker.log_path, "request_held_offline")) > 8 * 2
        online = log_events(worker.log_path, "network_online")
        assert online and online[0]["held_requests"] == 8
