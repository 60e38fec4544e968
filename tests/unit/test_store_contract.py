"""The store contract (``bghttp.store_api.Store``), run against every implementation.

A new store (a shared filesystem, an object store) joins ``STORES`` and must pass unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bghttp.errors import RequestRunning, StoreError, UnknownRequest
from bghttp.lifecycle import cancel
from bghttp.models import Phase, RequestStatus
from bghttp.store import FileStore
from bghttp.store_api import Store
from bghttp.validation import prepare_request

STORES: dict[str, Callable[[Path], Store]] = {
    "file": lambda root: FileStore(root, fsync=True),
    "file-nofsync": lambda root: FileStore(root, fsync=False),
}


#: A local FileStore with a batch open in the test's thread for the whole test, as a worker's run
#: has: the batch holds the request file and status log open (``bghttp.held_files``), and every
#: promise holds the same (other threads, which have no batch, take the plain path beside it).
IN_A_BATCH = "file-in-a-batch"


@pytest.fixture(params=[*sorted(STORES), IN_A_BATCH])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param != IN_A_BATCH:
        yield STORES[request.param](tmp_path / "store")
        return
    store = FileStore(tmp_path / "store", fsync=True)
    with store.batch():
        yield store


def create(store: Store, request_id: str = "r1", data: bytes | None = None) -> None:
    prepared = prepare_request("POST", "http://service.test/", data=data, request_id=request_id)
    assert store.create_request(prepared.spec, body=prepared.body) is not None


def test_create_then_read_back_and_a_second_create_of_the_id_changes_nothing(store: Store) -> None:
    prepared = prepare_request("POST", "http://service.test/", data=b"body", request_id="r1")
    record = store.create_request(prepared.spec, body=prepared.body)
    assert record is not None and record.phase is Phase.QUEUED and not record.published and record.generation
    assert store.read_status("r1") == record
    spec = store.load_request("r1")
    assert spec is not None and spec.generation == record.generation
    assert store.read_request_body("r1") == b"body"
    assert store.request_file_path("r1").exists()
    assert store.create_request(prepared.spec, body=b"other") is None
    assert store.read_request_body("r1") == b"body"
    assert store.read_status("missing") is None and store.load_request("missing") is None


def test_update_status_applies_changes_and_keeps_final_records_final(store: Store) -> None:
    create(store)
    assert store.update_status("r1", lambda r: r.evolve(token=2)).token == 2
    assert store.update_status("r1", lambda r: None).token == 2  # None: unchanged
    cancelled = store.update_status("r1", cancel)
    assert store.update_status("r1", lambda r: r.evolve(token=9)) == cancelled  # final: not called
    amended = store.update_status("r1", lambda r: r.evolve(last_error="late"), amend_terminal=True)
    assert amended.status is RequestStatus.CANCELLED and amended.last_error == "late"
    assert store.read_status("r1") == amended
    with pytest.raises(UnknownRequest):
        store.update_status("missing", lambda r: r)


def test_a_claim_is_held_by_one_holder_at_a_time(store: Store) -> None:
    create(store)
    seen: list[bool] = []
    with store.claim("r1") as first:
        thread = threading.Thread(target=lambda: seen.append(store.claim("r1").__enter__()))
        thread.start()
        thread.join()
    assert first and seen == [False]
    with store.claim("r1") as again:
        assert again


def test_a_response_is_streamed_then_committed_with_its_metadata(store: Store) -> None:
    create(store)
    with store.open_response_part("r1") as part:
        part.write(b"hello")
        part.flush()
        assert store.partial_response_size("r1") == 5
    body = store.commit_response("r1", {"status_code": 200, "headers": [["X", "1"]]})
    assert body == store.response_file_path("r1") and body.read_bytes() == b"hello"
    assert store.partial_response_size("r1") is None
    assert store.read_response_metadata("r1") == {"status_code": 200, "headers": [["X", "1"]]}
    with store.open_response_part("r1") as part:
        part.write(b"second")
    store.commit_response("r1", {"status_code": 503, "headers": []})
    metadata = store.read_response_metadata("r1")
    assert metadata is not None and metadata["status_code"] == 503
    with store.open_response_part("r1") as part:
        part.write(b"abandoned")
    store.discard_partial_response("r1")
    assert store.partial_response_size("r1") is None and store.response_file_path("r1").read_bytes() == b"second"


def test_listing_and_removal(store: Store) -> None:
    for request_id in ("a", "b", "c"):
        create(store, request_id)
    store.update_status("b", cancel)
    assert sorted(store.request_ids()) == ["a", "b", "c"]
    assert sorted(r.request_id for r in store.statuses()) == ["a", "b", "c"]
    assert not store.delete("a", only_if=lambda r: r is not None and r.is_terminal)
    assert store.delete("b", only_if=lambda r: r is not None and r.is_terminal)
    assert store.read_status("b") is None and not store.request_file_path("b").exists()
    assert not store.delete("b")
    with store.claim("c") as claimed:  # an attempt holds it
        assert claimed
        with pytest.raises(RequestRunning):
            _delete_from_another_thread(store, "c")
    assert sorted(store.request_ids()) == ["a", "c"]


def test_a_removal_is_remembered_until_it_is_pruned(store: Store) -> None:
    create(store, "kept")
    create(store, "gone")
    assert not store.was_removed("gone") and not store.was_removed("never")
    assert store.delete("gone")
    assert store.was_removed("gone") and not store.was_removed("kept") and not store.was_removed("never")
    assert not store.delete("never") and not store.was_removed("never")  # nothing was removed
    assert store.prune_removal_marks(older_than=3600) == 0
    assert store.was_removed("gone")
    time.sleep(0.01)
    assert store.prune_removal_marks(older_than=0) == 1
    assert not store.was_removed("gone")


def test_an_owed_event_outlives_the_removal_until_it_is_forgotten(store: Store) -> None:
    create(store, "owed")
    final = store.update_status("owed", cancel)
    store.keep_owed_event(final)
    store.keep_owed_event(final)  # kept again (its retry failed too): once
    assert store.delete("owed")
    assert store.owed_events("owed") == [final] and store.was_removed("owed")
    store.forget_owed_events("owed", [final])
    assert store.owed_events("owed") == [] and store.was_removed("owed")
    store.forget_owed_events("owed", [final])  # nothing to forget: no error


def test_the_owed_events_of_an_id_submitted_again_are_kept_side_by_side(store: Store) -> None:
    create(store, "owed")
    first = store.update_status("owed", cancel)
    store.keep_owed_event(first)
    assert store.delete("owed")
    create(store, "owed")
    second = store.update_status("owed", cancel)
    assert second.outcome != first.outcome  # another generation
    store.keep_owed_event(second)
    assert store.owed_events("owed") == [first, second]
    store.forget_owed_events("owed", [second])
    assert store.owed_events("owed") == [first]


def test_a_final_record_and_response_written_again_read_the_same(store: Store) -> None:
    create(store, "final")
    with store.claim("final") as claimed:
        assert claimed
        with store.open_response_part("final") as part:
            part.write(b"the body")
        store.commit_response("final", {"status_code": 200, "headers": []})
        final = store.update_status("final", cancel)
        store.rewrite_final("final")
    assert store.read_status("final") == final
    assert store.read_response_metadata("final") == {"status_code": 200, "headers": []}
    assert store.response_file_path("final").read_bytes() == b"the body"


def _delete_from_another_thread(store: Store, request_id: str) -> None:
    errors: list[BaseException] = []

    def remove() -> None:
        try:
            store.delete(request_id, wait=0.05)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=remove)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def test_discard_unconfirmed_takes_back_only_an_untouched_request_of_its_generation(store: Store) -> None:
    create(store, "x")
    record = store.read_status("x")
    assert record is not None
    assert store.discard_unconfirmed("x", "another-generation")  # not ours: gone as far as we care
    assert store.read_status("x") is not None
    store.update_status("x", lambda r: r.evolve(published=True))
    assert not store.discard_unconfirmed("x", record.generation)  # confirmed by someone: stays
    create(store, "y")
    y = store.read_status("y")
    assert y is not None and store.discard_unconfirmed("y", y.generation)
    assert store.read_status("y") is None


def test_a_batch_commits_its_writes_together(store: Store, request: pytest.FixtureRequest) -> None:
    if request.node.callspec.params["store"] == IN_A_BATCH:
        pytest.skip("a batch opened inside another joins it: the outer one commits")
    with store.batch() as batch:
        create(store, "a")
        store.update_status("a", lambda r: r.evolve(token=2))
    assert not batch.needs_commit  # committed as it ended
    assert store.read_status("a") is not None
    with store.batch(shared=False) as batch:
        create(store, "b")
        batch.add_request("b")
        batch.commit()
        assert not batch.needs_commit
    status = store.read_status("b")
    assert status is not None and status.token == 1


def test_a_stored_file_name_cannot_leave_the_request(store: Store) -> None:
    create(store)
    with pytest.raises(StoreError):
        store.open_request_file("r1", "../../requests/r1.json")


def test_location_names_the_store(store: Store, tmp_path: Path) -> None:
    assert str(tmp_path / "store") in store.location


def test_the_status_stamp_changes_with_every_new_version_and_only_then(store: Store) -> None:
    assert store.status_stamp("r1") is None  # no such request: nothing to compare
    create(store)
    first = store.status_stamp("r1")
    assert store.status_stamp("r1") == first  # reading changes nothing
    store.read_status("r1")
    assert store.status_stamp("r1") == first
    for _ in range(3):  # each new version, however small, gives a new stamp
        store.update_status("r1", lambda r: r.evolve(token=r.token + 1))
        stamp = store.status_stamp("r1")
        assert stamp is None or stamp != first  # None: this store cannot tell, and callers read
        first = stamp
