"""Real worker processes keep heartbeat records in their store: counters, in flight, a clean stop, a death.

Each process of a ``dramatiq bghttp.actors`` group writes its own record; a
clean stop (SIGTERM) removes them, a kill -9 leaves them to go stale. Local
mode's in-process worker writes one too and removes it when the client closes.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.heartbeats import WorkerHeartbeat, read_heartbeats
from tests.cli.helpers import BghttpWorker
from tests.conftest import local_settings
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess, free_port, wait_until

INTERVAL = 0.2


def _records(settings: Settings) -> list[WorkerHeartbeat]:
    return read_heartbeats(settings.store_dir)


@pytest.mark.rabbitmq
def test_each_worker_process_beats_counts_and_removes_its_record_on_a_clean_stop(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    settings = dataclasses.replace(rabbitmq_settings, heartbeat_interval=INTERVAL)
    worker = start_worker(settings, processes=2, threads=4)
    records = wait_until(lambda: len(_records(settings)) == 2 and _records(settings))
    assert len({r.pid for r in records}) == 2
    for record in records:
        assert (record.queue, record.store) == (settings.queue_name, str(settings.store_dir))
        assert record.broker == "127.0.0.1:5672"
        assert record.online and not record.stale and record.taken == 0
        assert "guest" not in record.broker

    with BackgroundHttpClient(settings) as client:
        ok = [client.get(counting_server.url(f"/ok?id=ok{i}"), retries=0).request_id for i in range(3)]
        bad = client.get(counting_server.url("/flaky?id=bad&fail=5"), retries=0).request_id
        for request_id in [*ok, bad]:
            client.wait(request_id, timeout=30)
        assert client.get_request_status(bad).status is RequestStatus.FAILED  # type: ignore[union-attr]
        slow = client.get(counting_server.url("/wait?id=slow&delay=3"), retries=0).request_id

        def counted() -> list[WorkerHeartbeat] | None:
            now = _records(settings)
            totals = (sum(r.taken for r in now), sum(r.completed for r in now), sum(r.failed for r in now))
            in_flight = sum(r.in_flight for r in now)
            return now if totals == (5, 3, 1) and in_flight == 1 else None

        now = wait_until(counted)
        [busy] = [r for r in now if r.in_flight]
        assert busy.in_flight_by_host == {f"http://127.0.0.1:{counting_server.port}": 1}
        client.wait(slow, timeout=30)

    first_seen = {r.pid: r.last_seen for r in now}
    wait_until(lambda: all(r.last_seen > first_seen[r.pid] for r in _records(settings)))  # they keep beating
    # A clean stop: SIGTERM to the master, which forwards it to its processes once (as
    # ``bghttp worker`` under systemd's KillMode=mixed or ``docker stop``). A SIGTERM to the
    # whole group reaches each process twice, and Dramatiq's second one is an ``os._exit``.
    os.kill(worker.process.pid, signal.SIGTERM)
    assert worker.process.wait(timeout=30) == 0
    assert _records(settings) == []


@pytest.mark.rabbitmq
def test_a_killed_worker_leaves_a_record_that_goes_stale(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = dataclasses.replace(rabbitmq_settings, heartbeat_interval=INTERVAL)
    worker = start_worker(settings)
    [record] = wait_until(lambda: _records(settings))
    worker.kill(signal.SIGKILL)
    worker.process.wait(timeout=10)
    [dead] = wait_until(lambda: [r for r in _records(settings) if r.stale], timeout=5)
    assert dead.pid == record.pid
    assert not dead.is_stale(dead.last_seen + timedelta(seconds=3 * INTERVAL - 0.01))


def test_local_mode_beats_while_the_client_runs_its_worker(store_dir: object) -> None:
    settings = dataclasses.replace(local_settings(store_dir), heartbeat_interval=INTERVAL)  # type: ignore[arg-type]
    client = BackgroundHttpClient(settings)
    try:
        info = client.get("http://127.0.0.1:9/", retries=0)  # nothing listens: it fails, fast
        client.wait(info.request_id, timeout=30)
        [record] = wait_until(lambda: [r for r in _records(settings) if r.failed == 1])
        assert (record.broker, record.queue, record.taken) == ("local", settings.queue_name, 1)
        assert record.last_seen <= datetime.now(UTC) + timedelta(seconds=1)
    finally:
        client.close()
    assert _records(settings) == []


def test_no_heartbeat_when_the_interval_is_zero(store_dir: object) -> None:
    settings = dataclasses.replace(local_settings(store_dir), heartbeat_interval=0)  # type: ignore[arg-type]
    with BackgroundHttpClient(settings) as client:
        client.wait(client.get("http://127.0.0.1:9/", retries=0).request_id, timeout=30)
        assert _records(settings) == []
        assert not (settings.store_dir / "workers").exists()


def test_an_offline_worker_says_so_and_since_when(store_dir: object) -> None:
    settings = dataclasses.replace(
        local_settings(store_dir),  # type: ignore[arg-type]
        heartbeat_interval=INTERVAL,
        network_interfaces=("bghttp-none0",),  # an interface no machine has: offline
        connectivity_interval=0.1,
        offline_after_failures=1,
    )
    before = datetime.now(UTC)
    with BackgroundHttpClient(settings) as client:
        client.get("http://127.0.0.1:9/", retries=0)  # starts the in-process worker
        [record] = wait_until(lambda: [r for r in _records(settings) if not r.online])
        assert record.offline_since is not None
        assert before - timedelta(seconds=1) <= record.offline_since <= datetime.now(UTC)


@pytest.mark.rabbitmq
def test_a_request_failed_by_the_worker_that_closes_a_killed_attempt_is_counted_by_it(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
    tmp_path: Path,
) -> None:
    """kill -9 during an attempt that was sent, with no retry left: the next worker closes the attempt
    and fails the request. That worker brought it to ``failed``: its record and its metrics count it."""
    settings = dataclasses.replace(rabbitmq_settings, heartbeat_interval=INTERVAL)
    port = free_port()
    first = start_worker(settings)
    with BackgroundHttpClient(settings) as client:
        request_id = client.get(counting_server.url("/wait?id=killed&delay=60"), retries=0).request_id

        def sent() -> bool:
            record = client.get_request_status(request_id)
            return record is not None and bool(record.attempts) and record.attempts[-1].sent_at is not None

        wait_until(sent, timeout=30)
        first.kill(signal.SIGKILL)
        first.process.wait(timeout=10)
        second = BghttpWorker(
            settings, "--processes", "1", "--threads", "2", "--metrics-port", str(port),
            "--metrics-host", "127.0.0.1", log_path=tmp_path / "second.log",
        )  # fmt: skip
        try:
            record = client.wait(request_id, timeout=60)
            assert record.status is RequestStatus.FAILED and record.attempt_count == 1
            [closer] = wait_until(lambda: [r for r in _records(settings) if not r.stale and r.taken == 1])
            assert wait_until(lambda: [r for r in _records(settings) if r.pid == closer.pid and r.failed == 1])

            def scrape() -> dict[str, float] | None:
                try:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                except httpx.HTTPError:
                    return None  # the exposition server is still starting
                samples = {
                    sample.name + str(sorted(sample.labels.values())): sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                }
                return samples if "bghttp_requests_total['failed']" in samples else None

            samples = wait_until(scrape, timeout=30)
        finally:
            second.stop()
    assert samples["bghttp_requests_total['failed']"] == 1
    assert samples["bghttp_attempts_total['interrupted']"] == 1
    assert samples["bghttp_retries_exhausted_total[]"] == 1
    assert samples["bghttp_attempt_duration_seconds_count[]"] == 0  # its duration is unknown


@pytest.mark.rabbitmq
def test_a_request_a_worker_fails_without_an_attempt_is_counted_by_it(
    rabbitmq_settings: Settings, counting_server: CountingServer, tmp_path: Path
) -> None:
    """A request file no worker can read (cut off, edited by hand) is failed by the worker that takes
    it, with no attempt: that worker brought it to ``failed``, so its record and metrics count it."""
    settings = dataclasses.replace(rabbitmq_settings, heartbeat_interval=INTERVAL)
    port = free_port()
    with BackgroundHttpClient(settings) as client:
        request_id = client.get(counting_server.url("/ok?id=unreadable"), retries=0).request_id
        client.store.request_file_path(request_id).write_text('{"cut off')  # before any worker runs
        worker = BghttpWorker(
            settings, "--processes", "1", "--threads", "2", "--metrics-port", str(port),
            "--metrics-host", "127.0.0.1", log_path=tmp_path / "worker.log",
        )  # fmt: skip
        try:
            record = client.wait(request_id, timeout=60)
            assert record.status is RequestStatus.FAILED and record.attempt_count == 0
            assert wait_until(lambda: [r for r in _records(settings) if r.taken == 1 and r.failed == 1])

            def scrape() -> dict[str, float] | None:
                try:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                except httpx.HTTPError:
                    return None  # the exposition server is still starting
                samples = {
                    sample.name + str(sorted(sample.labels.values())): sample.value
                    for family in text_string_to_metric_families(text)
                    for sample in family.samples
                }
                return samples if "bghttp_requests_total['failed']" in samples else None

            samples = wait_until(scrape, timeout=30)
        finally:
            worker.stop()
    assert samples["bghttp_requests_total['failed']"] == 1
    assert samples["bghttp_submit_to_completion_seconds_count['failed']"] == 1
