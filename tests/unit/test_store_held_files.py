"""A batch on a local store holds the request file and the status log open (``bghttp.held_files``).

Each test runs "this worker" in a batch and "another process" as a second
FileStore on the same root (its own fds: an ``flock`` excludes between them as
between processes), and checks that what the batch remembers never hides what
the other one did: an append (a client's cancel), a compaction, a torn tail, a
removal and a new request under the same ID.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bghttp import record_log
from bghttp.errors import UnknownRequest
from bghttp.lifecycle import RequestLifecycle, cancel
from bghttp.models import AttemptRecord, RequestStatus
from bghttp.store import FileStore
from bghttp.validation import prepare_request


def create(store: FileStore, request_id: str = "r1") -> None:
    prepared = prepare_request("GET", "http://service.test/", request_id=request_id)
    assert store.create_request(prepared.spec) is not None


def count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[Any]:
    calls: list[Any] = []
    real: Callable[..., Any] = getattr(os, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, counted)
    return calls


def test_a_run_opens_each_file_once_and_never_reads_back_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path / "store")
    create(store)
    lifecycle = RequestLifecycle(store)
    opens, reads, stats = (count_calls(monkeypatch, name) for name in ("open", "pread", "stat"))
    with store.batch():
        spec = store.load_request("r1")
        assert spec is not None
        with store.claim("r1") as claimed:
            assert claimed
            record = store.read_status("r1")
            assert record is not None
            started = AttemptRecord(number=1, started_at=1.0)
            lifecycle.mark_running("r1", record.token, started)
            lifecycle.mark_sent("r1", 1, 2.0)
            done = lifecycle.record_attempt(
                "r1", started, lambda r: r.evolve(status=RequestStatus.COMPLETED, phase=r.phase)
            )
            assert done.status is RequestStatus.COMPLETED  # the final change closed the log (its lock with it)
    # One open of the request file (spec and claim), one of the status log; one read of each.
    # (The commit also opens the store root once, for its syncfs.)
    assert [Path(path).parent.name for path in opens if Path(path).parent.parent == store.root] == [
        "requests",
        "status",
    ]
    assert len(reads) == 2
    assert stats == []  # an open file is checked by fstat, never its path again
    assert FileStore(store.root).read_status("r1") == done


def test_a_cancel_appended_by_another_process_is_seen_by_the_next_change(tmp_path: Path) -> None:
    store, client = FileStore(tmp_path / "store"), FileStore(tmp_path / "store")
    create(store)
    with store.batch():
        before = store.read_status("r1")
        assert before is not None
        client.update_status("r1", cancel)
        after = store.update_status("r1", lambda r: r.evolve(token=r.token + 1))
        assert after.status is RequestStatus.CANCELLED and after.token == before.token  # final: not changed
        assert store.read_status("r1") == after
    assert FileStore(store.root).read_status("r1") == after


def test_a_log_compacted_by_another_process_is_opened_again(tmp_path: Path) -> None:
    store, client = FileStore(tmp_path / "store"), FileStore(tmp_path / "store")
    create(store)
    path = store.root / "status" / "r1.log"
    with store.batch():
        assert store.read_status("r1") is not None
        inode = path.stat().st_ino
        while path.stat().st_ino == inode:  # appends until the other one replaces the log
            client.update_status("r1", lambda r: r.evolve(metadata={"pad": "x" * 2000}, token=r.token + 1))
        client.update_status("r1", lambda r: r.evolve(token=r.token + 1))  # a version only the new file has
        seen = client.read_status("r1")
        assert seen is not None
        assert store.read_status("r1") == seen
        mine = store.update_status("r1", lambda r: r.evolve(token=r.token + 1))
        assert mine.token == seen.token + 1
    assert FileStore(store.root).read_status("r1") == mine
    assert path.stat().st_ino != inode


def test_a_torn_tail_left_by_another_writer_does_not_swallow_the_next_append(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    create(store)
    path = store.root / "status" / "r1.log"
    with store.batch():
        first = store.update_status("r1", lambda r: r.evolve(token=2))
        with open(path, "ab") as log:  # a writer that died half-way through its line
            log.write(b'0badc0de {"request_id": "r1", "tok')
        assert store.read_status("r1") == first  # the fragment is no version
        second = store.update_status("r1", lambda r: r.evolve(token=3))
    assert FileStore(store.root).read_status("r1") == second
    lines = path.read_bytes().split(b"\n")
    assert lines[-3].startswith(b"0badc0de") and record_log.last_valid(lines[-2] + b"\n") is not None


def test_a_request_removed_and_submitted_again_is_claimed_as_the_new_one(tmp_path: Path) -> None:
    store, client = FileStore(tmp_path / "store"), FileStore(tmp_path / "store")
    create(store)
    with store.batch():
        old = store.load_request("r1")
        assert old is not None and store.read_status("r1") is not None
        assert client.delete("r1")
        assert store.read_status("r1") is None
        with pytest.raises(UnknownRequest):
            store.update_status("r1", lambda r: r.evolve(token=5))
        create(client)
        with store.claim("r1") as claimed:
            assert claimed
            with client.claim("r1") as other:
                assert not other  # the claim is on the file that is there now
            record = store.read_status("r1")
            assert record is not None and record.generation != old.generation
        with client.claim("r1") as other:
            assert other  # let go at the end of the block


def test_a_claim_another_holds_is_refused_and_taken_once_let_go(tmp_path: Path) -> None:
    store, other = FileStore(tmp_path / "store"), FileStore(tmp_path / "store")
    create(store)
    with store.batch():
        assert store.load_request("r1") is not None
        with other.claim("r1") as held:
            assert held
            with store.claim("r1") as claimed:
                assert not claimed
        with store.claim("r1") as claimed:
            assert claimed


def test_a_partial_response_opened_after_a_commit_is_still_discarded(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    create(store)
    with store.batch():
        with store.open_response_part("r1") as part:
            part.write(b"first")
        store.commit_response("r1", {"status_code": 200})
        store.discard_partial_response("r1")  # nothing to discard
        with store.open_response_part("r1") as part:
            part.write(b"abandoned")
        store.discard_partial_response("r1")
        assert store.partial_response_size("r1") is None
    assert store.response_file_path("r1").read_bytes() == b"first"


def test_a_shared_store_takes_the_plain_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FileStore(tmp_path / "store")
    create(store)
    store.shared = True  # as for a store on NFS or GlusterFS (``shared_fs``)
    opens = count_calls(monkeypatch, "open")
    with store.batch():
        store.update_status("r1", lambda r: r.evolve(token=2))
        store.update_status("r1", lambda r: r.evolve(token=3))
    assert sum(Path(path).parent.name == "status" for path in opens) >= 4  # each change opens its own fds


def test_threads_each_in_a_batch_lose_no_update_across_compactions(tmp_path: Path) -> None:
    """Every thread holds its own fd of the log; each counts up under the lock, the others append and compact."""
    store = FileStore(tmp_path / "store", fsync=False)
    create(store)
    path = store.root / "status" / "r1.log"
    inodes: set[int] = set()
    errors: list[BaseException] = []

    def count_up() -> None:
        try:
            with store.batch():
                for _ in range(150):
                    store.update_status("r1", lambda r: r.evolve(metadata={"pad": "x" * 500}, token=r.token + 1))
                    inodes.add(path.stat().st_ino)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=count_up) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    record = FileStore(store.root).read_status("r1")
    assert record is not None and record.token == 1 + 4 * 150  # no update lost
    assert len(inodes) >= 2  # the log was compacted (replaced) meanwhile (freed inode numbers come back)


def test_a_final_record_lets_the_log_go_and_a_later_read_opens_it_again(tmp_path: Path) -> None:
    store, client = FileStore(tmp_path / "store"), FileStore(tmp_path / "store")
    create(store)
    amended: list[Any] = []
    with store.batch():
        assert store.read_status("r1") is not None
        assert store.update_status("r1", cancel).status is RequestStatus.CANCELLED
        other = threading.Thread(
            target=lambda: amended.append(
                client.update_status("r1", lambda r: r.evolve(last_error="late"), amend_terminal=True)
            ),
            daemon=True,
        )
        other.start()
        other.join(timeout=10)
        assert amended, "the other writer still waits for the status lock"
        assert store.read_status("r1") == amended[0]
