"""The store is the record of truth: requests whose messages are gone are re-sent, once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.conftest import settings_env
from tests.reliability.server import CountingServer
from tests.support import PROJECT_ROOT, WorkerProcess, delete_queues, worker_env

pytestmark = pytest.mark.rabbitmq


def bghttp_recover(settings: Settings) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bghttp.cli", "recover"],
        cwd=PROJECT_ROOT,
        env=worker_env(settings_env(settings)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_recover_after_the_queue_is_deleted_sends_each_request_once(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    with BackgroundHttpClient(rabbitmq_settings) as client:
        ids = [client.get(counting_server.url(f"/ok?id=q{n}"), request_id=f"q{n}").request_id for n in range(8)]
        done_already = client.get(counting_server.url("/ok?id=done"), request_id="done")
        client.cancel(done_already.request_id)
        # The broker loses every message (queue deleted, broker rebuilt).
        delete_queues(rabbitmq_settings.queue_name)
        # Recovering twice must not make anything run twice.
        assert "re-sent 8 unfinished request(s)" in bghttp_recover(rabbitmq_settings)
        assert "re-sent 8 unfinished request(s)" in bghttp_recover(rabbitmq_settings)
        start_worker(rabbitmq_settings, threads=4)
        records = [client.wait(request_id, timeout=60) for request_id in ids]
        assert bghttp_recover(rabbitmq_settings).startswith("re-sent 0 ")

    assert all(r.status is RequestStatus.COMPLETED and r.attempt_count == 1 for r in records)
    assert all(counting_server.hits[request_id] == 1 for request_id in ids)
    assert counting_server.hits["done"] == 0
