"""Record logs: the latest version survives torn appends, garbage, compaction and racing readers."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bghttp import record_log
from bghttp.errors import StoreError
from bghttp.models import Phase, RequestStatus, StatusRecord
from bghttp.store import FileStore
from bghttp.validation import prepare_request


@pytest.fixture
def log_fd(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path / "r.log", os.O_RDWR | os.O_CREAT, 0o600)
    yield fd
    os.close(fd)


def _append(fd: int, n: int, pad: str = "") -> None:
    record_log.append(fd, {"n": n, "pad": pad}, sync=False)


def test_the_last_version_is_current(log_fd: int) -> None:
    assert record_log.read_last(log_fd) is None  # empty file: no record yet
    for n in range(5):
        _append(log_fd, n)
        assert record_log.read_last(log_fd) == {"n": n, "pad": ""}


def test_a_torn_append_leaves_the_version_before_it(tmp_path: Path, log_fd: int) -> None:
    _append(log_fd, 1)
    _append(log_fd, 2, pad="x" * 50)
    whole = (tmp_path / "r.log").read_bytes()
    first_end = whole.index(b"\n") + 1
    for cut in range(first_end, len(whole)):  # the second line cut at every byte
        os.ftruncate(log_fd, cut)
        assert record_log.read_last(log_fd) == {"n": 1, "pad": ""}, cut
    os.pwrite(log_fd, whole[first_end:], first_end)
    assert record_log.read_last(log_fd) == {"n": 2, "pad": "x" * 50}


def test_a_bad_checksum_zero_fill_or_non_object_line_is_skipped(tmp_path: Path, log_fd: int) -> None:
    _append(log_fd, 1)
    good = (tmp_path / "r.log").read_bytes()
    line = record_log.encode({"n": 2})
    flipped = line.replace(b'"n":2', b'"n":3')  # same length, checksum no longer matches
    for tail in (flipped, b"\0" * 300, b"00000000 [1]\n", b"nonsense\n", b"\n\n"):
        os.ftruncate(log_fd, 0)
        os.pwrite(log_fd, good + tail, 0)
        assert record_log.read_last(log_fd) == {"n": 1, "pad": ""}, tail
    # An append after the garbage is current again.
    _append(log_fd, 4)
    assert record_log.read_last(log_fd) == {"n": 4, "pad": ""}


def test_only_garbage_is_corrupt_and_only_zeros_is_empty(log_fd: int) -> None:
    os.pwrite(log_fd, b"\0" * 100, 0)
    assert record_log.read_last(log_fd) is None
    os.pwrite(log_fd, b"not a record\n", 0)
    with pytest.raises(record_log.CorruptRecord):
        record_log.read_last(log_fd)


def _store_with_request(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path / "store", fsync=False)
    store.create_request(prepare_request("GET", "http://service.test/", request_id="r1").spec)
    return store


def _next_token(record: StatusRecord) -> StatusRecord:
    return record.evolve(token=record.token + 1)


def test_compaction_bounds_the_file_and_readers_of_the_old_file_see_the_latest(tmp_path: Path) -> None:
    store = _store_with_request(tmp_path)
    status_file = tmp_path / "store" / "status" / "r1.log"
    old_reader = os.open(status_file, os.O_RDONLY)
    try:
        first_inode = os.fstat(old_reader).st_ino
        while status_file.stat().st_ino == first_inode:  # until the first compaction
            latest = store.update_status("r1", _next_token)
            assert status_file.stat().st_size <= record_log.COMPACT_BYTES + 2000
        old_version = record_log.read_last(old_reader)
        assert old_version is not None and old_version["token"] == latest.token
    finally:
        os.close(old_reader)
    for _ in range(500):
        latest = store.update_status("r1", _next_token)
        assert status_file.stat().st_size <= record_log.COMPACT_BYTES + 2000
    record = store.read_status("r1")
    assert record is not None and record.token == latest.token


def test_a_record_longer_than_the_tail_window_is_found(log_fd: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record_log, "TAIL_BYTES", 64)
    _append(log_fd, 1, pad="z" * 500)
    assert record_log.read_last(log_fd) == {"n": 1, "pad": "z" * 500}


def test_readers_racing_updates_and_compactions_never_see_a_bad_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record_log, "COMPACT_BYTES", 2048)  # compact every few updates
    store = _store_with_request(tmp_path)
    stop = threading.Event()
    problems: list[str] = []
    reads = [0, 0]

    def read_loop(slot: int) -> None:
        last = 0
        while not stop.is_set():
            try:
                record = store.read_status("r1")
            except Exception as error:
                problems.append(repr(error))
                continue
            if record is None or record.token < last:
                problems.append(f"went from token {last} to {record}")
            else:
                last = record.token
            reads[slot] += 1

    readers = [threading.Thread(target=read_loop, args=(slot,)) for slot in range(2)]
    for reader in readers:
        reader.start()
    try:
        for _ in range(3000):
            store.update_status("r1", _next_token)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert problems == []
    assert min(reads) > 100  # the readers really ran alongside the writer


def test_concurrent_updates_across_compactions_lose_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiters on a file that a compaction replaced lock the new file; no update is lost."""
    monkeypatch.setattr(record_log, "COMPACT_BYTES", 2048)
    store = _store_with_request(tmp_path)
    start = store.read_status("r1")
    assert start is not None

    def writer() -> None:
        for _ in range(400):
            store.update_status("r1", _next_token)

    writers = [threading.Thread(target=writer) for _ in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    record = store.read_status("r1")
    assert record is not None and record.token == start.token + 1600


def test_store_updates_append_in_place(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    prepared = prepare_request("GET", "http://service.test/", request_id="r1")
    store.create_request(prepared.spec)
    status_file = tmp_path / "store" / "status" / "r1.log"
    inode = status_file.stat().st_ino
    store.update_status("r1", lambda r: r.evolve(phase=Phase.RUNNING))
    store.update_status("r1", lambda r: r.evolve(phase=Phase.WAITING_RETRY))
    assert status_file.stat().st_ino == inode
    assert len(status_file.read_bytes().splitlines()) == 3
    record = store.read_status("r1")
    assert record is not None and record.phase is Phase.WAITING_RETRY


def test_a_corrupt_status_file_is_a_store_error(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    prepared = prepare_request("GET", "http://service.test/", request_id="r1")
    store.create_request(prepared.spec)
    (tmp_path / "store" / "status" / "r1.log").write_bytes(b"garbage\n")
    with pytest.raises(StoreError, match=r"r1\.log"):
        store.read_status("r1")


def test_a_first_version_still_being_written_is_no_version_yet(log_fd: int) -> None:
    line = record_log.encode({"n": 1})
    os.pwrite(log_fd, line[:-1], 0)  # everything but the newline
    assert record_log.read_last(log_fd) is None
    os.pwrite(log_fd, line[-1:], len(line) - 1)
    assert record_log.read_last(log_fd) == {"n": 1}


def test_a_new_request_replaces_a_status_file_left_by_an_unfinished_removal(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=True)
    leftover = tmp_path / "store" / "status" / "r1.log"
    leftover.parent.mkdir(parents=True)  # a FileStore creates its directories at its first write
    leftover.write_bytes(record_log.encode({"stale": True}))
    prepared = prepare_request("GET", "http://service.test/", request_id="r1")
    assert store.create_request(prepared.spec) is not None
    record = store.read_status("r1")
    assert record is not None and record.phase is Phase.QUEUED
    assert len(leftover.read_bytes().splitlines()) == 1


# ------------------------------------------------------------ appends after a torn tail
# A crash can leave the file ending in part of a line, or in zeros (a torn write
# on a file system that extends the file before writing its data). The next
# append must start a line of its own: glued to the fragment, it would fail its
# checksum and be lost, and the record would go back to the version before.


def _torn_tails(line: bytes) -> list[bytes]:
    """Every way the end of ``line`` can be torn, plus zero-filled tails."""
    return [line[:cut] for cut in range(1, len(line))] + [b"\0" * n for n in (1, 7, 300)]


@pytest.mark.parametrize("appends", [1, 2])
def test_appends_after_a_torn_tail_are_kept(tmp_path: Path, log_fd: int, appends: int) -> None:
    _append(log_fd, 1)
    good = (tmp_path / "r.log").read_bytes()
    for tail in _torn_tails(record_log.encode({"n": 2, "pad": "y" * 20})):
        os.ftruncate(log_fd, 0)
        os.pwrite(log_fd, good + tail, 0)
        for n in range(3, 3 + appends):
            _append(log_fd, n)
            assert record_log.read_last(log_fd) == {"n": n, "pad": ""}, tail


def test_an_append_after_a_torn_first_version_is_kept(log_fd: int) -> None:
    for tail in _torn_tails(record_log.encode({"n": 1})):
        os.ftruncate(log_fd, 0)
        os.pwrite(log_fd, tail, 0)
        _append(log_fd, 2)
        assert record_log.read_last(log_fd) == {"n": 2, "pad": ""}, tail


@pytest.mark.parametrize("updates", [1, 2])
def test_status_updates_after_a_torn_tail_are_kept(tmp_path: Path, updates: int) -> None:
    """Through the store: what update_status returned is what a re-read says (a cancel stays cancelled)."""
    store = _store_with_request(tmp_path)
    status_file = tmp_path / "store" / "status" / "r1.log"
    store.update_status("r1", lambda r: r.evolve(phase=Phase.RUNNING))
    good = status_file.read_bytes()
    torn_line = status_file.read_bytes().splitlines(keepends=True)[-1]
    for tail in _torn_tails(torn_line):
        status_file.write_bytes(good + tail)
        for _ in range(updates - 1):
            store.update_status("r1", _next_token)
        cancelled = store.update_status(
            "r1", lambda r: r.evolve(status=RequestStatus.CANCELLED, phase=Phase.DONE)
        )
        assert cancelled.status is RequestStatus.CANCELLED
        assert store.read_status("r1") == cancelled, tail


def test_response_metadata_after_a_torn_tail_is_kept(tmp_path: Path) -> None:
    store = _store_with_request(tmp_path)
    meta_file = tmp_path / "store" / "responses" / "r1.meta.log"

    def commit(n: int) -> None:
        store.response_part_path("r1").write_bytes(b"body %d" % n)
        store.commit_response("r1", {"status_code": 200, "n": n})

    commit(1)
    good = meta_file.read_bytes()
    for n, tail in enumerate(_torn_tails(record_log.encode({"status_code": 500, "n": 0})), start=2):
        meta_file.write_bytes(good + tail)
        commit(n)
        assert store.read_response_metadata("r1") == {"status_code": 200, "n": n}, tail


def test_a_torn_tail_longer_than_the_tail_window(log_fd: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window that read_last looks at first holds only garbage: it reads on, then finds the append."""
    monkeypatch.setattr(record_log, "TAIL_BYTES", 64)
    _append(log_fd, 1)
    os.pwrite(log_fd, b"\0" * 500, os.fstat(log_fd).st_size)
    assert record_log.read_last(log_fd) == {"n": 1, "pad": ""}
    _append(log_fd, 2)
    assert record_log.read_last(log_fd) == {"n": 2, "pad": ""}
