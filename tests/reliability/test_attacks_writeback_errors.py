"""A writeback error that another thread's sync reported first (issue 21, item 6).

A real failing disk: ext4 on a loop device whose backing file lives on a small
tmpfs, which is then filled, so the kernel's writeback of the store's pages
fails (EIO, "lost async page write"). ``syncfs`` reports such an error once
per open file, and the store syncs through one fd shared by every thread's
batch (``GroupCommit``): the sync that ran for another thread's batch reported
it and failed that batch, and the next sync, which this thread's batch waited
for, returned 0 with its pages lost. The batch committed: a worker would ack
its outcome, a ``submit_many`` accept its requests, with nothing on disk.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bghttp.durability import NotDurable
from bghttp.store import FileStore
from bghttp.validation import prepare_request
from tests.reliability.full_disk import fill_leaving, mounted_tmpfs
from tests.support import IN_CI


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


@contextlib.contextmanager
def failing_disk(base: Path) -> Iterator[tuple[Path, Path]]:
    """(an ext4 mount, its backing tmpfs): fill the tmpfs and writes to the ext4 fail at writeback."""
    with mounted_tmpfs(base / "backing", "12m") as backing:
        image = backing / "disk.img"
        with open(image, "wb") as handle:
            handle.truncate(64 << 20)  # sparse: its blocks take tmpfs pages only as they are written
        attached = _run("losetup", "--find", "--show", str(image))
        if attached.returncode != 0:
            if IN_CI:
                pytest.fail(f"cannot attach a loop device in CI: {attached.stderr}")
            pytest.skip(f"no loop device here: {attached.stderr.strip()}")
        device = attached.stdout.strip()
        mountpoint = base / "ext4"
        mountpoint.mkdir()
        try:
            made = _run("mkfs.ext4", "-q", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard", device)
            assert made.returncode == 0, made.stderr
            mounted = _run("mount", "-o", "errors=continue", device, str(mountpoint))
            assert mounted.returncode == 0, mounted.stderr
            try:
                yield mountpoint, backing
            finally:
                _run("umount", "-l", str(mountpoint))
        finally:
            _run("losetup", "-d", device)


def test_a_batch_whose_pages_failed_in_another_threads_sync_does_not_commit(tmp_path: Path) -> None:
    with failing_disk(tmp_path) as (disk, backing):
        store = FileStore(disk / "store")
        store.create_request(prepare_request("GET", "http://service.test/", request_id="laid-out").spec)
        written, go_on = threading.Event(), threading.Event()
        outcome: dict[str, BaseException | None] = {}

        def first_batch() -> None:
            try:
                with store.batch():
                    spec = prepare_request("POST", "http://service.test/", data=b"x" * 300_000, request_id="lost")
                    store.create_request(spec.spec, body=spec.body)
                    written.set()
                    go_on.wait(60)
                outcome["first"] = None
            except BaseException as error:  # the outcome under test
                outcome["first"] = error

        thread = threading.Thread(target=first_batch)
        thread.start()
        assert written.wait(60)
        fill_leaving(backing, 0)  # the loop device's writes fail from now on
        with pytest.raises(NotDurable), store.batch():  # this sync meets the failed writeback of "lost"
            store.create_request(prepare_request("GET", "http://service.test/", request_id="other").spec)
        go_on.set()
        thread.join(60)
        assert isinstance(outcome["first"], NotDurable), (
            f"committed although its pages were lost at writeback: {outcome['first']!r}"
        )
