"""A worker that dies after the request reached the server must not send it beyond its retries.

An attempt is marked "sent" just before its first byte goes out. When the
worker dies (``kill -9``, out of memory, a status write that fails and makes
Dramatiq re-run the message), the next run closes the attempt with what is
known: a response saved meanwhile is its outcome; an attempt marked sent spends
a retry (none left: ``failed``); one never sent runs again for free. Also: an
answer that could not be saved is not a reason to send a non-idempotent
request again.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.errors import StoreError
from bghttp.lifecycle import RequestLifecycle
from tests.conftest import local_settings
from tests.reliability.scripted_server import Connection, ScriptedServer
from tests.reliability.server import CountingServer
from tests.reliability.test_limits import small_tmpfs  # noqa: F401  (a fixture)
from tests.support import WorkerProcess, wait_until

pytestmark = [pytest.mark.slow]


def hold_the_first_then_answer(conn: Connection) -> None:
    conn.read_request()
    if conn.server.hits == 1:  # the worker that sent it is killed while it waits for the answer
        conn.wait_until_client_gone(limit=30)
        return
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


@pytest.mark.rabbitmq
def test_a_retries_0_post_that_reached_the_server_is_not_sent_again_after_a_worker_kill(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    with ScriptedServer(hold_the_first_then_answer) as server:
        first = start_worker(rabbitmq_settings, threads=1)
        with BackgroundHttpClient(rabbitmq_settings) as client:
            info = client.post(server.url("/payments"), data=b"pay 100", retries=0, timeout=60)
            wait_until(lambda: server.hits == 1, timeout=30)
            first.kill(signal.SIGKILL)
            first.process.wait(timeout=10)
            start_worker(rabbitmq_settings, threads=1)  # the unacked message comes back to it
            record = client.wait(info.request_id, timeout=60)
        hits = server.hits
    assert hits == 1, f"the server received the retries=0 POST {hits} times; record: {record.status.value}"
    assert record.status is RequestStatus.FAILED
    assert record.last_error == "the worker stopped during this attempt, after sending the request"


def answer_ok(conn: Connection) -> None:
    conn.read_request()
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def test_a_status_write_failing_after_the_send_does_not_send_a_retries_0_post_again(
    store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills (or the store's NFS blips) just when the outcome of a delivered POST is recorded."""
    record_attempt = RequestLifecycle.record_attempt
    failures: list[str] = []

    def fails_once(self: RequestLifecycle, *args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append("once")
            raise StoreError("cannot write status: [Errno 28] No space left on device")
        return record_attempt(self, *args, **kwargs)

    monkeypatch.setattr(RequestLifecycle, "record_attempt", fails_once)
    with ScriptedServer(answer_ok) as server, BackgroundHttpClient(local_settings(store_dir)) as client:
        info = client.post(server.url("/payments"), data=b"pay 100", retries=0, timeout=10)
        record = client.wait(info.request_id, timeout=30)
        hits = server.hits
    assert failures == ["once"]
    assert hits == 1, f"the server received the retries=0 POST {hits} times; record: {record.status.value}"


def test_a_post_answered_200_is_not_sent_again_because_its_response_could_not_be_saved(
    small_tmpfs: Path,  # noqa: F811
    counting_server: CountingServer,
) -> None:
    with BackgroundHttpClient(local_settings(small_tmpfs / "store")) as client:
        info = client.post(counting_server.url("/big?id=pay&size=3000000"), data=b"pay 100", retries=2)
        record = client.wait(info.request_id, timeout=60)
    assert [a.outcome for a in record.attempts][:1] == ["disk_full"]
    assert counting_server.hits["pay"] == 1, f"a 200-answered POST sent {counting_server.hits['pay']} times"
    assert record.status is RequestStatus.FAILED and record.last_status_code == 200
