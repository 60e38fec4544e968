"""A cancel during an attempt never hides what the attempt did.

``cancel()`` makes the status final at once; the running attempt still gets its
real outcome into its attempt record, and a response the server delivered stays
readable.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, RequestStatus
from tests.conftest import local_settings
from tests.reliability.scripted_server import Connection, ScriptedServer, response_head
from tests.support import wait_until


@pytest.fixture
def local_client(tmp_path: Path) -> Iterator[BackgroundHttpClient]:
    with BackgroundHttpClient(local_settings(tmp_path / "store")) as client:
        yield client


def test_an_answer_that_arrives_as_the_request_is_cancelled_is_recorded(local_client: BackgroundHttpClient) -> None:
    received, cancelled = threading.Event(), threading.Event()

    def delayed_answer(conn: Connection) -> None:
        conn.read_request()
        received.set()
        cancelled.wait(10)
        conn.send(response_head(headers={"Content-Length": "7"}) + b"created")

    with ScriptedServer(delayed_answer) as server:
        info = local_client.post(server.url("/orders"), data={"n": 1}, timeout=30)
        assert received.wait(10)
        assert local_client.cancel(info.request_id).status is RequestStatus.CANCELLED
        cancelled.set()
        record = wait_until(
            lambda: (r := local_client.get_request_status(info.request_id)) and r.attempts[-1].finished_at and r,
            timeout=10,
        )
    assert server.hits == 1
    assert record.status is RequestStatus.CANCELLED  # what cancel() answered stays true
    attempt = record.attempts[-1]
    response = local_client.get_response(info.request_id)
    if attempt.outcome == "success":  # the answer came in before the worker saw the cancel
        assert attempt.status_code == 200 and record.last_status_code == 200
        assert response is not None and response.read_bytes() == b"created"
    else:  # the worker saw the cancel first and stopped reading
        assert attempt.outcome == "cancelled"
        assert attempt.error and "sent" in attempt.error, attempt.error
        assert response is None
    print(f"\nattempt recorded as {attempt}")
