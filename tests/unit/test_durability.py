"""Group commit: writes in a worker run skip their fsyncs and share one filesystem sync."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker

from bghttp import BackgroundHttpClient, Settings, durability
from bghttp.durability import GroupCommit
from bghttp.errors import StoreError
from bghttp.models import Phase
from bghttp.store import FileStore
from bghttp.validation import prepare_request


def test_each_waiter_returns_after_a_sync_that_started_after_its_call(monkeypatch: pytest.MonkeyPatch) -> None:
    syncs: list[tuple[float, float]] = []

    def slow_sync(path: Path, fd: int | None = None) -> None:
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
    monkeypatch.setattr(durability, "sync_filesystem", lambda path, fd=None: filesystem_syncs.append(path))

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



def _fsync_recorder(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """Record (inode, thread name) of every fsync from now on."""
    calls: list[tuple[int, str]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append((os.fstat(fd).st_ino, threading.current_thread().name))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_a_submit_fsyncs_every_new_file_and_directory_beside_the_publish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"file bytes")
    settings = Settings(store_dir=tmp_path / "store", queue_name="unit", fsync=True)
    with BackgroundHttpClient(settings, broker=StubBroker()) as client:
        calls = _fsync_recorder(monkeypatch)
        post = client.post("http://service.test/hook", data={"k": "v"}, request_id="p1")
        multi = client.post_multipart("http://service.test/up", fields={"a": "b"}, files={"f": upload},
                                      request_id="m1")
        root = client.store.root
        expected = [
            info.request_file_path for info in (post, multi)
        ] + [root / "status" / "p1.log", root / "status" / "m1.log", client.store.body_path("p1"),
             *client.store.files_dir("m1").iterdir(), client.store.files_dir("m1"),
             root / "requests", root / "status", root / "bodies"]
        synced = {inode for inode, _ in calls}
        missing = [str(path) for path in expected if path.stat().st_ino not in synced]
        assert missing == []
        # Done by the helper threads while the submitting thread published.
        assert {name for _, name in calls} and all(name.startswith("bghttp-fsync") for _, name in calls)


def test_a_submit_whose_fsync_fails_raises_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(store_dir=tmp_path / "store", queue_name="unit", fsync=True)
    with BackgroundHttpClient(settings, broker=StubBroker()) as client:

        def failing_fsync(fd: int) -> None:
            raise OSError(errno.EIO, "I/O error")

        monkeypatch.setattr(os, "fsync", failing_fsync)
        with pytest.raises(StoreError, match="cannot make request r1 durable"):
            client.get("http://service.test/", request_id="r1")
        monkeypatch.undo()
        assert client.get_request_status("r1") is None
        # (the store's ID lock files and removal marks are no part of any request)
        leftovers = [
            p for p in client.store.root.rglob("*") if p.is_file() and p.parent.name not in ("locks", "removed")
        ]
        assert leftovers == []



def test_every_waiter_of_a_failed_sync_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared sync that fails fails all it served, not only the thread that ran it (issue 21, item 6)."""
    started = threading.Event()

    def failing_sync(path: Path, fd: int | None = None) -> None:
        started.set()
        time.sleep(0.05)  # the other waiters arrive while it runs, and wait for the next one
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(durability, "sync_filesystem", failing_sync)
    commit = GroupCommit(Path("/"))
    outcomes: list[str] = []
    lock = threading.Lock()

    def waiter() -> None:
        try:
            commit.wait_durable()
            outcome = "durable"
        except OSError as error:
            outcome = f"raised {error.errno}"
        with lock:
            outcomes.append(outcome)

    first = threading.Thread(target=waiter)
    first.start()
    started.wait()
    others = [threading.Thread(target=waiter) for _ in range(8)]
    for thread in [*others]:
        thread.start()
    for thread in [first, *others]:
        thread.join()
    assert outcomes == [f"raised {errno.EIO}"] * 9


def test_without_syncfs_a_shared_batch_fsyncs_each_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSYS is the only fallback, and it is durable: each file is fsynced (never sync(2), which reports nothing)."""

    def no_syncfs(path: Path, fd: int | None = None) -> None:
        raise durability.SyncUnavailable(errno.ENOSYS, "no syncfs")

    fsynced: list[str] = []
    monkeypatch.setattr(durability, "sync_filesystem", no_syncfs)
    monkeypatch.setattr(durability, "fsync_path", lambda path: fsynced.append(Path(path).name))
    monkeypatch.setattr(os, "sync", lambda: pytest.fail("sync(2) reports no error"))
    store = FileStore(tmp_path / "store")
    spec = prepare_request("POST", "http://127.0.0.1:9/x", data=b"body", request_id="r1").spec
    with store.batch() as batch:
        store.create_request(spec, body=b"body")
        batch.add_request("r1")
    assert {"r1.json", "r1.body", "r1.log"} <= set(fsynced)
