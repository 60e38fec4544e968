"""The store shared by several hosts on GlusterFS: what one host writes, the next one reads.

Each "host" is its own FUSE mount of one volume (its own client caches). Without
RabbitMQ: these are the store's own guarantees, the ground the fleet tests stand on.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

import pytest

from bghttp import ConfigError
from bghttp.store import FileStore
from tests.fleet import gluster
from tests.fleet.conftest import Fleet
from tests.fleet.hostproc import plain_spec
from tests.support import PROJECT_ROOT, worker_env

BUMPS_PER_HOST = 200


def new_request(store: FileStore, request_id: str) -> None:
    assert store.create_request(plain_spec(request_id)) is not None


def test_status_changes_from_two_hosts_at_once_lose_none(fleet: Fleet) -> None:
    """Two hosts each apply 200 read-modify-append changes to one record, under its status lock."""
    client = FileStore(fleet.stores["client"])
    new_request(client, "shared")
    start_at = str(time.time() + 3)  # both hosts start at once, after their imports
    hosts = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.fleet.hostproc", "bump"),
                *(str(fleet.stores[host]), "shared", str(BUMPS_PER_HOST), start_at),
            ],
            cwd=PROJECT_ROOT,
            env=worker_env({}),
        )
        for host in ("host-a", "host-b")
    ]
    assert [host.wait(timeout=240) for host in hosts] == [0, 0]
    record = client.read_status("shared")
    assert record is not None
    assert record.token == 1 + 2 * BUMPS_PER_HOST


def test_two_hosts_creating_one_id_in_a_new_store_at_once_create_it_once(fleet: Fleet) -> None:
    """Each round, both hosts create one request ID in an empty store at the same moment: its
    ID lock file is created by both at once too."""
    rounds = 100
    start_at = str(time.time() + 3)
    hosts = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "tests.fleet.hostproc", "create"),
                str(fleet.stores[host]),
                "x",
                str(rounds),
                start_at,
            ],
            cwd=PROJECT_ROOT,
            env=worker_env({}),
            stdout=subprocess.PIPE,
            text=True,
        )
        for host in ("host-a", "host-b")
    ]
    results = [json.loads(host.communicate(timeout=240)[0]) for host in hosts]
    errors = results[0]["errors"] + results[1]["errors"]
    assert errors == [], f"{len(errors)} errors, the first: {errors[0]}"
    assert sorted(results[0]["created"] + results[1]["created"]) == list(range(rounds))  # once per round


def test_a_change_on_one_host_is_read_at_once_on_another(fleet: Fleet) -> None:
    worker, client = FileStore(fleet.stores["host-a"]), FileStore(fleet.stores["client"])
    new_request(client, "r")
    stale_reads, read_times = 0, []
    for n in range(40):
        assert client.read_status("r") is not None  # the client host has the record in its caches
        changed = worker.update_status("r", lambda r, n=n: r.evolve(token=100 + n))
        while True:
            start = time.monotonic()
            seen = client.read_status("r")
            read_times.append(time.monotonic() - start)
            if seen is not None and seen.token == changed.token:
                break
            stale_reads += 1
            assert stale_reads < 5000
    print(
        f"{stale_reads} stale reads after 40 changes on another host; a read takes "
        f"p50 {statistics.median(read_times) * 1000:.1f} ms, max {max(read_times) * 1000:.1f} ms"
    )
    assert stale_reads == 0


def test_a_removed_request_is_gone_at_once_on_another_host(fleet: Fleet) -> None:
    worker, client = FileStore(fleet.stores["host-a"]), FileStore(fleet.stores["client"])
    for n in range(20):
        request_id = f"gone{n}"
        new_request(client, request_id)
        assert worker.read_status(request_id) is not None and worker.load_request(request_id) is not None
        assert client.delete(request_id)
        assert worker.read_status(request_id) is None
        assert worker.load_request(request_id) is None
        new_request(client, request_id)  # the same ID again: the other host sees the new request
        spec, record = worker.load_request(request_id), worker.read_status(request_id)
        assert spec is not None and record is not None and spec.generation == record.generation


@pytest.mark.parametrize(
    ("mount", "option"),
    [("plain", "attribute-timeout=0"), ("cached", "performance.stat-prefetch off")],
)
def test_a_mount_with_client_caches_is_refused_at_start(gluster_volume: object, mount: str, option: str) -> None:
    store_dir = gluster.mount_point(mount) / "refused-store"
    store_dir.mkdir(exist_ok=True)
    with pytest.raises(ConfigError, match=option):
        FileStore(store_dir)
    cli = subprocess.run(
        [sys.executable, "-m", "bghttp.cli", "ls", "--store", str(store_dir)],
        cwd=PROJECT_ROOT,
        env=worker_env({}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and option in cli.stderr, cli.stderr
    worker = subprocess.run(
        [sys.executable, "-m", "dramatiq", "bghttp.actors", "--processes", "1", "--threads", "1"],
        cwd=PROJECT_ROOT,
        env=worker_env({"BGHTTP_STORE_DIR": str(store_dir), "BGHTTP_BROKER_URL": "amqp://guest:guest@127.0.0.1:9/"}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert worker.returncode != 0 and option in worker.stdout + worker.stderr
