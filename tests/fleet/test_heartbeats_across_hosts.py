"""Heartbeats on the shared store: worker groups on two hosts (mounts) see each other, and the client host sees both.

A clean stop on one host is seen as gone on the others; a kill -9 leaves a
record every host sees go stale.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator

import pytest

from bghttp import Settings
from bghttp.heartbeats import WorkerHeartbeat, read_heartbeats
from tests.cli.helpers import run_cli
from tests.fleet.conftest import Fleet
from tests.support import RABBITMQ_URL, WorkerProcess, delete_queues, require_rabbitmq, unique_queue, wait_until

pytestmark = [pytest.mark.rabbitmq]

INTERVAL = 0.5
WORKER_HOSTS = ("host-a", "host-b")


@pytest.fixture
def base_settings(fleet: Fleet) -> Iterator[Settings]:
    require_rabbitmq()
    settings = Settings(
        broker_url=RABBITMQ_URL,
        store_dir=fleet.stores["client"],
        queue_name=unique_queue(),
        heartbeat_interval=INTERVAL,
    )
    yield settings
    delete_queues(settings.queue_name)


def seen_from(fleet: Fleet, host: str) -> list[WorkerHeartbeat]:
    return read_heartbeats(fleet.stores[host])


def test_worker_hosts_see_each_others_heartbeats_and_the_client_host_sees_both(
    fleet: Fleet, base_settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    workers = {host: start_worker(fleet.settings(base_settings, host)) for host in WORKER_HOSTS}

    def both_live(host: str) -> list[WorkerHeartbeat] | None:
        records = [r for r in seen_from(fleet, host) if not r.stale]
        return records if len(records) == 2 else None

    for viewer in ("client", *WORKER_HOSTS):
        records = wait_until(lambda viewer=viewer: both_live(viewer), timeout=10)  # type: ignore[misc]
        # Each record names the store as its writer mounts it: one per host.
        assert sorted(r.store for r in records) == sorted(str(fleet.stores[host]) for host in WORKER_HOSTS)
        assert {r.queue for r in records} == {base_settings.queue_name}
        assert all(abs(r.skew) < 1 for r in records), [r.skew for r in records]

    # They keep beating, and a beat written on one mount is read on the other.
    first = {r.pid: r.last_seen for r in seen_from(fleet, "host-b")}
    wait_until(lambda: all(r.last_seen > first[r.pid] for r in seen_from(fleet, "host-b")), timeout=5)

    listed = run_cli(base_settings, "workers", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len([w for w in json.loads(listed.stdout)["workers"] if not w["stale"]]) == 2
    assert "clock" not in listed.stderr

    # A clean stop on host-a: its record is gone as host-b sees it.
    stopped = workers["host-a"]
    os.kill(stopped.process.pid, signal.SIGTERM)
    assert stopped.process.wait(timeout=30) == 0
    wait_until(lambda: len(seen_from(fleet, "host-b")) == 1, timeout=5)

    # A kill -9 on host-b: the client host sees its record go stale.
    killed = workers["host-b"]
    killed.kill(signal.SIGKILL)
    killed.process.wait(timeout=10)
    [dead] = wait_until(lambda: [r for r in seen_from(fleet, "client") if r.stale], timeout=10)
    assert dead.store == str(fleet.stores["host-b"])
