"""Two submits of one ID while the first is not confirmed yet (issue 11, item 6).

Process A stores a request and then waits for a broker that accepted the TCP
connection but never answers the AMQP handshake. Process B submits the same ID
(``on_conflict="return"``) to a healthy RabbitMQ and is told "accepted": that
must hold whatever happens to A afterwards (A fails, or A is killed before it
published anything).
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.conftest import settings_env
from tests.reliability.server import CountingServer
from tests.support import PROJECT_ROOT, SilentBroker, WorkerProcess, wait_until, worker_env

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

SUBMIT_A = """
import sys
from bghttp import BackgroundHttpClient
try:
    with BackgroundHttpClient() as client:
        client.get(sys.argv[1], request_id=sys.argv[2])
except Exception as error:
    print("A failed:", type(error).__name__, error, flush=True)
    sys.exit(1)
print("A accepted", flush=True)
"""


def _start_a(settings: Settings, broker_url: str, url: str, request_id: str) -> subprocess.Popen[str]:
    env = worker_env({**settings_env(dataclasses.replace(settings, broker_url=broker_url))})
    return subprocess.Popen(
        [sys.executable, "-c", SUBMIT_A, url, request_id],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stored(store_dir: Path, request_id: str) -> bool:
    return (store_dir / "status" / f"{request_id}.log").exists()


def test_a_failing_first_submitter_does_not_remove_what_the_second_returned(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
    silent_broker: SilentBroker,
) -> None:
    url = counting_server.url("/ok?id=dup")
    # A gives up on the silent broker after a few seconds.
    a = _start_a(rabbitmq_settings, silent_broker.url(socket_timeout="3", stack_timeout="4"), url, "dup")
    try:
        wait_until(lambda: _stored(rabbitmq_settings.store_dir, "dup"), timeout=30)
        with BackgroundHttpClient(rabbitmq_settings, on_conflict="return") as b:
            info = b.get(url, request_id="dup")
            assert info.request_id == "dup"
            a_output, _ = a.communicate(timeout=60)

            start_worker(rabbitmq_settings)
            record = b.wait("dup", timeout=60)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    assert record.status is RequestStatus.COMPLETED, a_output
    assert counting_server.hits["dup"] == 1


def test_a_first_submitter_killed_before_publishing_leaves_the_second_one_a_message(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
    silent_broker: SilentBroker,
) -> None:
    url = counting_server.url("/ok?id=orphan")
    start_worker(rabbitmq_settings)
    a = _start_a(rabbitmq_settings, silent_broker.url(socket_timeout="60", stack_timeout="60"), url, "orphan")
    try:
        wait_until(lambda: _stored(rabbitmq_settings.store_dir, "orphan"), timeout=30)
    finally:
        a.send_signal(signal.SIGKILL)  # stored, never published
        a.wait()

    with BackgroundHttpClient(rabbitmq_settings, on_conflict="return") as b:
        b.get(url, request_id="orphan")
        record = b.wait("orphan", timeout=30)  # no `bghttp recover`
    assert record.status is RequestStatus.COMPLETED
    assert counting_server.hits["orphan"] == 1
