"""Review of attack21d: the retry of a run whose commit failed, when RabbitMQ redelivers the message.

The rewrite of a final record (``rewrite_final``) is done only by a message that
carries the ``bghttp_not_durable`` option, which the worker sets on the message
Dramatiq's Retries middleware enqueues again. A worker killed after its commit
failed and before that retry was enqueued leaves RabbitMQ to redeliver the
original message, without the option: the next worker met the record
``completed`` in the page cache (the lost pages are kept as clean), committed
with an empty sync and acked; after a remount the record on the disk was not
the outcome, and no message was left. A real failing disk (``full_disk``), two
real worker processes, the first killed in the window (``killed_after_not_durable``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.models import Phase
from bghttp.store import FileStore
from tests.reliability.full_disk import failing_disk, fill_leaving
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess, queue_counts, wait_until


def test_an_outcome_whose_commit_failed_is_on_disk_when_its_message_is_redelivered_after_a_kill(
    rabbitmq_settings: Settings,
    tmp_path: Path,
    counting_server: CountingServer,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    mark = tmp_path / "not-durable"
    with failing_disk(tmp_path) as disk:
        settings = dataclasses.replace(rabbitmq_settings, store_dir=disk.mountpoint / "store")
        with BackgroundHttpClient(settings) as client:
            client.get(counting_server.url("/big?id=kept&size=300000"), request_id="kept")
        filler = fill_leaving(disk.backing, 0)  # the worker's writes fail at writeback from now on
        first = start_worker(
            settings,
            threads=1,
            extra_env={"BGHTTP_TEST_NOT_DURABLE_MARK": str(mark)},
            modules=("tests.reliability.killed_after_not_durable",),
        )
        wait_until(mark.exists, timeout=60)  # its commit failed; no retry enqueued yet
        first.kill()  # RabbitMQ redelivers the original message, without the option
        os.unlink(filler)  # the disk works again
        second = start_worker(settings, threads=1)
        wait_until(lambda: '"reason": "terminal"' in second.log_path.read_text(errors="replace"), timeout=60)
        second.stop()
        assert queue_counts(settings.queue_name)[0] == 0  # acked
        disk.remount()
        store = FileStore(settings.store_dir)
        record = store.read_status("kept")
        assert record is not None
        assert (record.status, record.phase) == (RequestStatus.COMPLETED, Phase.DONE), (
            f"an acked outcome was lost: {record.status}/{record.phase}"
        )
        assert store.response_body_path("kept").read_bytes() == b"x" * 300_000
