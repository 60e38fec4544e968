"""Big submit messages: a worker's memory stays bounded, and a body over the limit is one ``request.rejected``.

Before, 8 submit messages with 48 MiB bodies took a worker from 45 to 867 MiB:
its intake consumer prefetched as many messages as its work queue's (hundreds),
and each was assembled and decoded whole (pika's frames and their join, the
JSON text, its strings, the decoded body).
A real ``bghttp worker`` (2 processes, its defaults) takes 8 such messages here
while the RSS of all its processes is sampled.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bghttp import Settings
from bghttp.store import FileStore
from tests.cli.helpers import BghttpWorker
from tests.messaging import EventQueue, remove_message_queues, submit_message, with_own_exchange
from tests.support import delete_queues

MiB = 1024 * 1024
MESSAGES = 8
BODY = 48 * MiB
#: What the issue allows the worker group (its processes' RSS summed) to grow by while it takes them.
MAX_GROWTH = 256 * MiB


class GroupRss:
    """Samples the RSS of a process's children every 20 ms: each one's peak, and the peak of their sum."""

    def __init__(self, pid: int) -> None:
        self.processes = psutil.Process(pid).children(recursive=True)
        self.start = self._sample()
        self.peak = dict(self.start)
        self.peak_total = sum(self.start.values())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> dict[int, int]:
        rss = {}
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                rss[process.pid] = process.memory_info().rss
        return rss

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            now = self._sample()
            self.peak_total = max(self.peak_total, sum(now.values()))
            for pid, rss in now.items():
                self.peak[pid] = max(self.peak[pid], rss)

    def stop(self) -> tuple[int, int]:
        """(the largest growth of one process, the growth of the group's total)."""
        self._stop.set()
        self._thread.join()
        largest = max(self.peak[pid] - self.start[pid] for pid in self.start)
        return largest, self.peak_total - sum(self.start.values())


@pytest.fixture
def settings(rabbitmq_settings: Settings) -> Iterator[Settings]:
    settings = with_own_exchange(dataclasses.replace(rabbitmq_settings, fsync=False))
    FileStore(settings.store_dir)
    yield settings
    remove_message_queues(settings)
    delete_queues(f"{settings.queue_name}.submit")


#: Where the messages are published: the submit queue, and the queues a producer may mistake for it.
#: Seen: published to the work queue (routing key ``bghttp``, not ``bghttp.submit``), Dramatiq ran
#: ``submit_request`` from it (it finds an actor by name, whatever the queue) with the work queue's
#: prefetch (hundreds) and no size limit: 8 such messages took a worker process from 45 to 496 MiB.
QUEUE_SUFFIXES = {
    "submit-queue": ".submit",
    "work-queue": "",
    "work-delay-queue": ".DQ",
    "submit-delay-queue": ".submit.DQ",
}


@pytest.mark.parametrize("where", sorted(QUEUE_SUFFIXES))
def test_big_submit_messages_keep_the_worker_small_and_are_rejected(
    settings: Settings, tmp_path: Path, where: str
) -> None:
    worker = BghttpWorker(settings, log_path=tmp_path / "worker.log")
    events = EventQueue(settings.events_exchange)
    try:
        deadline = time.monotonic() + 60
        while worker.log_path.read_text(errors="replace").count("Worker process is ready") < 2:
            assert worker.process.poll() is None and time.monotonic() < deadline, worker.log_path.read_text()
            time.sleep(0.1)
        rss = GroupRss(worker.process.pid)
        queue = f"{settings.queue_name}{QUEUE_SUFFIXES[where]}"
        encoded = base64.b64encode(os.urandom(BODY)).decode()
        for number in range(MESSAGES):
            spec = {"method": "POST", "url": "http://127.0.0.1:9/big", "request_id": f"big-{number}", "base64": encoded}
            events.publish(queue, submit_message(queue, spec))
        del encoded
        store = FileStore(settings.store_dir)
        deadline = time.monotonic() + 180
        while len(events.drain()) + len(list(store.request_ids())) < MESSAGES:
            assert time.monotonic() < deadline, f"{len(events.received)} events after 180 s"
            time.sleep(0.2)
        growth, group_growth = rss.stop()
    finally:
        events.close()
        worker.stop()

    grew = f"a worker process grew by {growth / MiB:.0f} MiB, the group (summed) by {group_growth / MiB:.0f} MiB"
    print(grew)
    assert group_growth <= MAX_GROWTH, grew
    assert list(store.request_ids()) == []
    assert [key for key, _ in events.received] == ["request.rejected"] * MESSAGES
    assert all("BGHTTP_MAX_SUBMIT_BODY" in event["last_error"] for _, event in events.received), events.received
    assert sorted(event["request_id"] for _, event in events.received) == [f"big-{n}" for n in range(MESSAGES)]
