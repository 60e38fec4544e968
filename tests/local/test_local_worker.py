"""LocalWorker in-process: recovery at start, rescans for orphans, what it leaves alone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker

from bghttp import BackgroundHttpClient, Phase, RequestStatus, Settings
from bghttp.models import AttemptRecord, StatusRecord
from bghttp.worker.local import LocalWorker, is_orphaned
from bghttp.worker.runner import EARLY_TOLERANCE_SECONDS
from tests.reliability.server import CountingServer

WAIT = 30.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(broker_url="local", store_dir=tmp_path / "store", fsync=False, backoff_scale=0.01)


@pytest.fixture
def orphaned(settings: Settings) -> Iterator[BackgroundHttpClient]:
    """A client whose messages go nowhere: what a killed local process leaves in the store."""
    with BackgroundHttpClient(settings, broker=StubBroker()) as client:
        yield client


@pytest.fixture
def local_workers() -> Iterator[list[LocalWorker]]:
    started: list[LocalWorker] = []
    yield started
    for worker in started:
        worker.stop()


def record(phase: Phase, *, updated_at: float, next_attempt_at: float | None = None) -> StatusRecord:
    return StatusRecord(
        request_id="r", status=RequestStatus.IN_PROGRESS, phase=phase, created_at=0.0,
        updated_at=updated_at, max_retries=3, next_attempt_at=next_attempt_at,
    )


def test_is_orphaned_waits_for_quiet_records_and_due_retries() -> None:
    now = 1000.0
    assert is_orphaned(record(Phase.RUNNING, updated_at=now), now, 60)  # unclaimed yet "running": its runner died
    assert not is_orphaned(record(Phase.QUEUED, updated_at=now - 59), now, 60)
    assert is_orphaned(record(Phase.QUEUED, updated_at=now - 61), now, 60)
    # A retry held until it is due is not orphaned before its due time (plus the grace).
    assert not is_orphaned(record(Phase.WAITING_RETRY, updated_at=now - 500, next_attempt_at=now + 10), now, 60)
    assert not is_orphaned(record(Phase.WAITING_RETRY, updated_at=now - 500, next_attempt_at=now - 59), now, 60)
    assert is_orphaned(record(Phase.WAITING_RETRY, updated_at=now - 500, next_attempt_at=now - 61), now, 60)


def test_start_picks_up_every_pending_request_a_dead_process_left(
    settings: Settings, orphaned: BackgroundHttpClient, counting_server: CountingServer,
    local_workers: list[LocalWorker],
) -> None:
    store = orphaned.store
    queued = orphaned.get(counting_server.url("/ok?id=queued")).request_id
    crashed = orphaned.get(counting_server.url("/ok?id=crashed")).request_id
    waiting = orphaned.get(counting_server.url("/flaky?id=waiting&fail=0"), retries=2).request_id
    done = orphaned.get(counting_server.url("/ok?id=done")).request_id
    now = time.time()
    # Killed mid-attempt: the attempt was recorded, the claim died with the process.
    store.update_status(crashed, lambda r: r.evolve(phase=Phase.RUNNING, attempts=(AttemptRecord(1, now - 1),)))
    due = now + 1.5
    store.update_status(waiting, lambda r: r.evolve(phase=Phase.WAITING_RETRY, retries_used=1, next_attempt_at=due))
    orphaned.cancel(done)

    local = LocalWorker(settings)
    local_workers.append(local)
    local.start()
    for request_id in (queued, crashed, waiting):
        assert orphaned.wait(request_id, WAIT).status is RequestStatus.COMPLETED
    crashed_record = store.read_status(crashed)
    assert crashed_record is not None and crashed_record.attempt_count == 2
    waiting_record = store.read_status(waiting)
    assert waiting_record is not None
    # The retry ran at its due time, not at start.
    assert waiting_record.attempts[-1].started_at >= due - EARLY_TOLERANCE_SECONDS
    assert counting_server.hits["waiting"] == 1 and counting_server.times["waiting"][0] >= due - EARLY_TOLERANCE_SECONDS
    assert counting_server.hits["queued"] == 1 and counting_server.hits["crashed"] == 1
    assert counting_server.hits["done"] == 0
    assert store.read_status(done).status is RequestStatus.CANCELLED  # type: ignore[union-attr]


def test_rescan_takes_over_orphans_but_not_what_it_holds(
    settings: Settings, orphaned: BackgroundHttpClient, counting_server: CountingServer,
    local_workers: list[LocalWorker],
) -> None:
    import dataclasses

    fast = dataclasses.replace(settings, local_threads=1, local_rescan_interval=0.1, local_orphan_after=0.3)
    with BackgroundHttpClient(fast) as client:
        # One thread: the second request waits in this process's queue behind a
        # 1.5 s response, well past local_orphan_after; it is held, so no rescan
        # may publish it again (which would give it a newer token).
        slow = client.get(counting_server.url("/slow?id=slow&chunks=3&size=10&delay=0.5")).request_id
        behind = client.get(counting_server.url("/ok?id=behind")).request_id
        # A request whose process died after the client started: not there at
        # start, so only a rescan can find it.
        lost = orphaned.get(counting_server.url("/ok?id=lost")).request_id
        for request_id in (slow, behind, lost):
            assert client.wait(request_id, WAIT).status is RequestStatus.COMPLETED
        assert client.get_request_status(behind).token == 1  # type: ignore[union-attr]
        assert client.get_request_status(lost).token > 1  # type: ignore[union-attr]
    assert counting_server.hits == {"slow": 1, "behind": 1, "lost": 1}


def test_start_is_idempotent_and_stop_is_final(settings: Settings, local_workers: list[LocalWorker]) -> None:
    local = LocalWorker(settings)
    local_workers.append(local)
    local.start()
    worker = local._worker
    local.start()
    assert local._worker is worker and local.running
    local.stop()
    assert not local.running
    with pytest.raises(RuntimeError):
        local.start()


def test_local_settings_come_from_the_environment() -> None:
    from bghttp.config import ConfigError

    settings = Settings.from_env(
        {
            "BGHTTP_BROKER_URL": "local",
            "BGHTTP_LOCAL_THREADS": "2",
            "BGHTTP_LOCAL_RESCAN_INTERVAL": "0",
            "BGHTTP_LOCAL_ORPHAN_AFTER": "7.5",
        }
    )
    assert settings.is_local
    assert (settings.local_threads, settings.local_rescan_interval, settings.local_orphan_after) == (2, 0.0, 7.5)
    with pytest.raises(ConfigError, match="BGHTTP_LOCAL_THREADS"):
        Settings.from_env({"BGHTTP_LOCAL_THREADS": "0"})
