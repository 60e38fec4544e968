"""A full disk that stays full while a worker records an attempt's outcome: the messages do not multiply.

A real worker on a store of its own small tmpfs (as test_full_disk_attempt_records). The
retry is published before the outcome write, which fails; Dramatiq runs the message again,
and the retry runs when due: each run that closes the attempt used to publish one more retry
before its write failed, so the request's messages doubled at every round.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.reliability.full_disk import fill_leaving
from tests.reliability.scripted_server import Connection, ScriptedServer
from tests.reliability.test_full_disk_attempt_records import PADDING, _store_settings, tmpfs_store  # noqa: F401
from tests.support import WorkerProcess, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq]

#: Dramatiq's Retries: "Retrying message '<id>' in <n> milliseconds."
RETRYING = re.compile(r"Retrying message '([0-9a-f-]+)'")


def _retried_messages(worker: WorkerProcess) -> list[str]:
    return RETRYING.findall(worker.log_path.read_text(errors="replace"))


def test_the_messages_of_an_outcome_that_cannot_be_written_do_not_multiply(
    tmpfs_store: Path,  # noqa: F811
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    settings = _store_settings(rabbitmq_settings, tmpfs_store)
    filler: list[Path] = []

    def fill_then_answer(conn: Connection) -> None:
        conn.read_request()
        if conn.server.hits == 1:
            filler.append(fill_leaving(tmpfs_store, 0))
            conn.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno")
            return
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with ScriptedServer(fill_then_answer) as server:
        worker = start_worker(settings, threads=1)
        with BackgroundHttpClient(settings) as client:
            info = client.get(server.url("/item"), retries=2, metadata=PADDING, timeout=30)
            # Runs fail while the disk stays full: wait for 8 of them.
            wait_until(lambda: len(_retried_messages(worker)) >= 8, timeout=120)
            retried = set(_retried_messages(worker))
            filler[0].unlink()
            record = client.wait(info.request_id, timeout=120)
        hits = server.hits
    # The message whose outcome write failed and the retry it published, nothing more.
    assert len(retried) <= 2, f"{len(retried)} messages of one request retried while the disk was full"
    assert record.status is RequestStatus.COMPLETED and record.retries_used == 1 and hits == 2, record
