"""Group commit: writes in a worker run skip their fsyncs and share one filesystem sync."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from bghttp import durability
from bghttp.durability import GroupCommit
from bghttp.models import Phase
from bghttp.store import FileStore
from bghttp.validation import prepare_request


def test_each_waiter_returns_after_a_sync_that_started_after_its_call(monkeypatch: pytest.MonkeyPatch) -> None:
    syncs: list[tuple[float, float]] = []

    def slow_sync(path: Path) -> None:
        started = time.monotonic()
        time.sleep(0.02)
        syncs.append((started, time.monotonic()))

    monkeypatch.setattr(durability, "sync_filesystem", slow_sync)
    commit = GroupCommit(Path("/"))
    calls: list[tuple[float, float]] = []
    lock = threading.Lock()

    def waiter() -> None:
        called = time.monotonic()
        commit.wait_durable()
        with lock:
            calls.append((called, time.monotonic()))

    threads = [threading.Thread(target=waiter) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 32
    assert 1 <= len(syncs) < 32  # shared: far fewer syncs than waiters
    for called, returned in calls:
        # Some sync both started after the call and finished before the return.
        assert any(called <= start and end <= returned for start, end in syncs)


def test_writes_inside_group_commit_skip_fsync_and_sync_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(tmp_path / "store", fsync=True)
    prepared = prepare_request("POST", "http://service.test/", data=b"body", request_id="r1")
    store.create_request(prepared.spec, body=prepared.body)

    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    filesystem_syncs: list[Path] = []
    monkeypatch.setattr(durability, "sync_filesystem", filesystem_syncs.append)

    with store.group_commit():
        store.update_status("r1", lambda r: r.evolve(phase=Phase.RUNNING))
        store.update_status("r1", lambda r: r.evolve(phase=Phase.WAITING_RETRY))
        assert fsyncs == [] and filesystem_syncs == []
    assert fsyncs == [] and filesystem_syncs == [store.root]

    with store.group_commit():  # nothing written: no sync
        store.read_status("r1")
    assert filesystem_syncs == [store.root]

    store.update_status("r1", lambda r: r.evolve(phase=Phase.QUEUED))  # outside: fsyncs as usual
    assert len(fsyncs) == 1  # an append: the file only, no new directory entry

