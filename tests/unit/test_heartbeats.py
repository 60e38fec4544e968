"""Heartbeat records: written whole and private, read back, stale ones marked, clocks compared, symlinks refused."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bghttp.heartbeats import (
    HeartbeatWriter,
    WorkerState,
    broker_hosts,
    read_heartbeats,
    skew_warnings,
)
from tests.support import PROJECT_ROOT


def writer(store: Path, **state: object) -> HeartbeatWriter:
    return HeartbeatWriter(
        store,
        queue="orders",
        broker="amqp://guest:s3cret@rabbit.example:5673/;amqps://u:p@other",
        interval=5,
        state=lambda: WorkerState(**state),  # type: ignore[arg-type]
        host="host/a",
        pid=4242,
    )


def test_a_record_is_written_private_and_read_back(tmp_path: Path) -> None:
    offline = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    beats = writer(
        tmp_path,
        in_flight=3,
        in_flight_by_host={"http://a:80": 2, "https://b:443": 1},
        online=False,
        offline_since=offline,
        taken=7,
        completed=4,
        failed=1,
    )
    assert beats.beat()
    path = tmp_path / "workers" / "host_a-4242.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "workers").stat().st_mode) == 0o700
    assert "s3cret" not in path.read_text()
    assert [p.name for p in (tmp_path / "workers").iterdir()] == [path.name]  # no temporary file left

    [heartbeat] = read_heartbeats(tmp_path)
    assert (heartbeat.host, heartbeat.pid, heartbeat.queue) == ("host/a", 4242, "orders")
    assert heartbeat.broker == "rabbit.example:5673,other:5671"
    assert heartbeat.store == str(tmp_path)
    assert heartbeat.in_flight == 3 and heartbeat.in_flight_by_host == {"http://a:80": 2, "https://b:443": 1}
    assert heartbeat.online is False and heartbeat.offline_since == offline
    assert (heartbeat.taken, heartbeat.completed, heartbeat.failed) == (7, 4, 1)
    assert heartbeat.last_seen.tzinfo is not None and heartbeat.clock.tzinfo is not None
    assert abs(heartbeat.skew) < 1  # one machine: the worker's clock stamps the file too
    assert not heartbeat.stale
    assert json.loads(json.dumps(heartbeat.to_json()))["queue"] == "orders"


def test_a_record_not_rewritten_for_three_intervals_is_stale(tmp_path: Path) -> None:
    writer(tmp_path).beat()
    now = datetime.now(UTC)
    assert not read_heartbeats(tmp_path, now=now + timedelta(seconds=14))[0].stale
    [old] = read_heartbeats(tmp_path, now=now + timedelta(seconds=16))
    assert old.stale and old.is_stale(now + timedelta(seconds=16))
    assert not old.is_stale(now + timedelta(seconds=16), threshold=60)


def test_a_clean_stop_removes_the_record(tmp_path: Path) -> None:
    beats = writer(tmp_path)
    beats.start()
    assert len(read_heartbeats(tmp_path)) == 1
    beats.stop()
    assert read_heartbeats(tmp_path) == []
    assert not beats.beat()  # nothing is written after the stop


def test_skew_is_the_workers_clock_against_the_files_time(tmp_path: Path) -> None:
    writer(tmp_path).beat()
    path = next((tmp_path / "workers").iterdir())
    record = json.loads(path.read_text())
    mtime = path.stat().st_mtime
    record["clock"] = mtime + 120  # a worker 2 minutes ahead of the store
    path.write_text(json.dumps(record))
    os.utime(path, (mtime, mtime))
    [heartbeat] = read_heartbeats(tmp_path)
    assert round(heartbeat.skew) == 120
    assert skew_warnings([heartbeat]) == ["the clock of worker host/a pid 4242 is 120.0 s ahead of the store's"]
    # A record stamped in this host's future: this host's clock is behind.
    [late] = read_heartbeats(tmp_path, now=datetime.fromtimestamp(mtime - 10, UTC))
    assert "this host's clock is at least 10.0 s behind the store's" in skew_warnings(
        [late], now=datetime.fromtimestamp(mtime - 10, UTC)
    )


def test_two_workers_each_within_a_second_of_the_store_but_apart_by_more_are_warned_of(tmp_path: Path) -> None:
    # Retry due times are wall-clock: a retry written by one worker and run by the other is
    # early or late by their difference, whatever each is against the store.
    for pid, offset in ((1, 0.7), (2, -0.7)):
        beats = writer(tmp_path)
        beats.path = beats.path.with_name(f"host-{pid}.json")
        beats.beat()
        record = json.loads(beats.path.read_text())
        mtime = beats.path.stat().st_mtime
        record["clock"], record["pid"] = mtime + offset, pid
        beats.path.write_text(json.dumps(record))
        os.utime(beats.path, (mtime, mtime))
    heartbeats = read_heartbeats(tmp_path)
    assert sorted(round(h.skew, 1) for h in heartbeats) == [-0.7, 0.7]
    assert skew_warnings(heartbeats) == [
        "the clocks of live workers differ by 1.4 s: "
        "host/a pid 1 is 0.7 s ahead of the store's, host/a pid 2 0.7 s behind the store's"
    ]
    # Within a second of each other: nothing to say.
    assert skew_warnings(heartbeats[:1]) == []


def test_foreign_and_symlinked_records_are_skipped_and_a_planted_directory_link_is_refused(tmp_path: Path) -> None:
    workers = tmp_path / "workers"
    workers.mkdir()
    (workers / "junk.json").write_text("{not json")
    (workers / "other.json").write_text(json.dumps({"format": 1}))
    secret = tmp_path / "secret.json"
    writer(tmp_path / "elsewhere").beat()
    os.replace(next((tmp_path / "elsewhere" / "workers").iterdir()), secret)
    (workers / "link.json").symlink_to(secret)
    assert read_heartbeats(tmp_path) == []

    planted = tmp_path / "planted"
    planted.mkdir()
    store = tmp_path / "store"
    store.mkdir()
    (store / "workers").symlink_to(planted)
    assert not writer(store).beat()
    assert list(planted.iterdir()) == []


def test_broker_hosts_never_carry_a_password() -> None:
    assert broker_hosts("amqp://guest:guest@127.0.0.1:5672/") == "127.0.0.1:5672"
    assert broker_hosts("amqp://u:p@[::1]/vhost") == "::1:5672"
    assert broker_hosts("local") == "local"
    assert "pw" not in broker_hosts("amqp://u:pw@host:notaport/")


def test_two_writers_in_one_process_keep_two_records(tmp_path: Path) -> None:
    first, second = writer(tmp_path), writer(tmp_path)
    first.start()
    second.start()
    assert sorted(p.name for p in (tmp_path / "workers").iterdir()) == ["host_a-4242-2.json", "host_a-4242.json"]
    first.stop()
    assert [h.pid for h in read_heartbeats(tmp_path)] == [4242]  # the other client's record stays
    second.stop()
    assert read_heartbeats(tmp_path) == []


TWIN = """
import sys, time
from bghttp.heartbeats import HeartbeatWriter
writer = HeartbeatWriter(sys.argv[1], queue="orders", broker="local", interval=60, host="twin", pid=7)
writer.start()
print("started", flush=True)
sys.stdin.readline()
writer.stop()
"""


def test_two_processes_with_one_host_name_and_pid_keep_two_records(tmp_path: Path) -> None:
    """Containers on host networking share the host's name and each has its own PID namespace,
    so two worker processes of two replicas are both, say, ``node-1`` pid 7: each keeps its own
    record, and the one that stops cleanly leaves the other's in place."""
    twins = []
    for _ in range(2):
        twin = subprocess.Popen(
            [sys.executable, "-c", TWIN, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        )
        assert twin.stdout is not None and twin.stdout.readline() == "started\n"
        twins.append(twin)
    try:
        records = read_heartbeats(tmp_path)
        assert [(r.host, r.pid, r.stale) for r in records] == [("twin", 7, False)] * 2
        assert len({r.started_at for r in records}) == 2
        twins[0].communicate("stop\n", timeout=30)
        [left] = read_heartbeats(tmp_path)
        assert left.started_at == max(r.started_at for r in records)
    finally:
        for twin in twins:
            if twin.poll() is None:
                twin.communicate("stop\n", timeout=30)
    assert read_heartbeats(tmp_path) == []


def test_a_restarted_worker_takes_over_the_stale_record_of_its_predecessor(tmp_path: Path) -> None:
    """A container restarted after a crash has the same host name and PID as the process that died:
    its record replaces the stale one instead of adding a second."""
    dead = writer(tmp_path)
    dead.beat()
    long_ago = time.time() - 3600
    os.utime(dead.path, (long_ago, long_ago))
    dead.stop(remove=False)
    assert [h.stale for h in read_heartbeats(tmp_path)] == [True]
    restarted = writer(tmp_path)
    restarted.start()
    try:
        assert [(h.pid, h.stale) for h in read_heartbeats(tmp_path)] == [(4242, False)]
    finally:
        restarted.stop()


def test_a_worker_restarted_before_its_predecessor_went_stale_removes_that_record_once_it_is(tmp_path: Path) -> None:
    """A container restarted at once after a crash finds its predecessor's record not stale yet: it
    keeps a name of its own meanwhile, and removes that record once it has gone stale (as a restart
    after it went stale replaces it), so crash loops do not pile up records."""
    dead = writer(tmp_path)
    dead.beat()
    dead.stop(remove=False)
    restarted = writer(tmp_path)
    restarted.beat()
    assert [(h.pid, h.stale) for h in read_heartbeats(tmp_path)] == [(4242, False)] * 2
    long_ago = time.time() - 3600
    os.utime(dead.path, (long_ago, long_ago))
    restarted.beat()
    assert [(h.pid, h.stale) for h in read_heartbeats(tmp_path)] == [(4242, False)]
    restarted.stop()
    assert read_heartbeats(tmp_path) == []
