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

import dataclasses
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.durability import NotDurable
from bghttp.models import Phase
from bghttp.store import FileStore
from bghttp.validation import prepare_request
from tests.reliability.full_disk import failing_disk, fill_leaving
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess, queue_counts, wait_until


def test_a_batch_whose_pages_failed_in_another_threads_sync_does_not_commit(tmp_path: Path) -> None:
    with failing_disk(tmp_path) as disk:
        store = FileStore(disk.mountpoint / "store")
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
        fill_leaving(disk.backing, 0)  # the loop device's writes fail from now on
        with pytest.raises(NotDurable), store.batch():  # this sync meets the failed writeback of "lost"
            store.create_request(prepare_request("GET", "http://service.test/", request_id="other").spec)
        go_on.set()
        thread.join(60)
        assert isinstance(outcome["first"], NotDurable), (
            f"committed although its pages were lost at writeback: {outcome['first']!r}"
        )


def test_an_outcome_whose_commit_failed_is_on_disk_before_its_retry_is_acked(
    rabbitmq_settings: Settings,
    tmp_path: Path,
    counting_server: CountingServer,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """After a failed writeback the kernel keeps the pages, clean: the next sync has nothing to write and
    returns 0. The worker's run failed its commit (``run_not_durable``); its message was retried, met the
    record ``completed`` (in the page cache), committed with that empty sync and was acked. After a remount
    (a power cut) the record on the disk said ``in_progress/running``, and no message was left to run it."""
    with failing_disk(tmp_path) as disk:
        settings = dataclasses.replace(rabbitmq_settings, store_dir=disk.mountpoint / "store")
        with BackgroundHttpClient(settings) as client:
            client.get(counting_server.url("/big?id=kept&size=300000"), request_id="kept")
        filler = fill_leaving(disk.backing, 0)  # the worker's writes fail at writeback from now on
        worker = start_worker(settings)
        wait_until(lambda: "run_not_durable" in worker.log_path.read_text(errors="replace"), timeout=60)
        os.unlink(filler)  # the disk works again before the message's retry
        wait_until(lambda: '"reason": "terminal"' in worker.log_path.read_text(errors="replace"), timeout=60)
        worker.stop()
        assert queue_counts(settings.queue_name)[0] == 0  # acked
        disk.remount()
        store = FileStore(settings.store_dir)
        record = store.read_status("kept")
        assert record is not None
        assert (record.status, record.phase) == (RequestStatus.COMPLETED, Phase.DONE), "an acked outcome was lost"
        assert store.response_body_path("kept").read_bytes() == b"x" * 300_000
        metadata = store.read_response_metadata("kept")
        assert metadata is not None and metadata["status_code"] == 200
