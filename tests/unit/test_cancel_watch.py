"""A running attempt's cancel check reads the status record only after it changed."""

from __future__ import annotations

from pathlib import Path

from bghttp.lifecycle import RequestLifecycle
from bghttp.store import FileStore
from bghttp.validation import prepare_request
from bghttp.worker.cancel_watch import CancelWatch


def test_an_unchanged_record_is_not_read_again_and_a_cancel_is_seen(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    assert store.create_request(prepare_request("GET", "http://service.test/", request_id="r1").spec) is not None
    watch = CancelWatch(store, "r1")
    assert [watch() for _ in range(50)] == [False] * 50
    assert watch.reads == 1  # 50 checks, one read
    store.update_status("r1", lambda r: r.evolve(published=True))  # another change: read again, not cancelled
    assert watch() is False and watch.reads == 2
    RequestLifecycle(store).cancel("r1")
    assert watch() is True
    assert watch() is True  # stays cancelled


def test_a_store_that_cannot_tell_is_read_every_time(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    assert store.create_request(prepare_request("GET", "http://service.test/", request_id="r1").spec) is not None
    store.status_stamp = lambda request_id: None  # type: ignore[method-assign]  # as a shared store answers
    watch = CancelWatch(store, "r1")
    assert [watch() for _ in range(5)] == [False] * 5
    assert watch.reads == 5
    RequestLifecycle(store).cancel("r1")
    assert watch() is True


def test_a_request_removed_while_it_runs_is_not_cancelled(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    assert store.create_request(prepare_request("GET", "http://service.test/", request_id="r1").spec) is not None
    watch = CancelWatch(store, "r1")
    assert watch() is False
    assert store.delete("r1")
    assert watch() is False
