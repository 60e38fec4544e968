"""An awaiting submit that is cancelled (``asyncio.wait_for`` timed out, the task was cancelled).

The async client runs the blocking submit on a thread, and cancelling the await
does not stop that thread: the submit finishes. The caller got no
``RequestInfo``: a request with a generated ID, which it can never find, must
not run unseen (it is cancelled); one with the caller's own ``request_id`` is
kept, and submitting that ID again returns it and sends it once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.aio import AsyncBackgroundHttpClient
from bghttp.broker import create_broker
from tests.reliability.scripted_server import Connection, ScriptedServer
from tests.support import WorkerProcess, wait_until
from tests.test_async_client import BOUND, HoldEnqueue

pytestmark = [pytest.mark.rabbitmq]


def answer_ok(conn: Connection) -> None:
    conn.read_request()
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def test_a_cancelled_async_submit_leaves_no_request_running_unseen(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(rabbitmq_settings, threads=1)
    hold = HoldEnqueue()
    broker = create_broker(rabbitmq_settings, [hold])

    async def scenario() -> None:
        async with AsyncBackgroundHttpClient(rabbitmq_settings, broker=broker) as client:
            submit = asyncio.create_task(client.post(server.url("/payments"), data=b"pay 100"))
            await asyncio.get_running_loop().run_in_executor(None, hold.entered.wait, BOUND)
            submit.cancel()  # what asyncio.wait_for does when its timeout passes
            with contextlib.suppress(asyncio.CancelledError):
                await submit
            hold.release.set()  # the pool thread's publish goes on

    with ScriptedServer(answer_ok) as server:
        asyncio.run(scenario())
        store_dir = rabbitmq_settings.store_dir
        with BackgroundHttpClient(rabbitmq_settings) as reader:
            wait_until(lambda: all(r.is_terminal for r in reader.list()), timeout=30)
            records = reader.list()
        running_unseen = [r.request_id for r in records if r.status is not RequestStatus.CANCELLED]
        assert not running_unseen, f"{server.hits} POST(s) sent for a submit the caller saw cancelled: {store_dir}"


def test_a_cancelled_async_submit_with_the_callers_id_is_kept_and_sent_once(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(rabbitmq_settings, threads=1)
    hold = HoldEnqueue()
    broker = create_broker(rabbitmq_settings, [hold])

    async def scenario() -> str:
        async with AsyncBackgroundHttpClient(rabbitmq_settings, broker=broker) as client:
            submit = asyncio.create_task(client.post(server.url("/payments"), data=b"pay 100", request_id="pay-7"))
            await asyncio.get_running_loop().run_in_executor(None, hold.entered.wait, BOUND)
            submit.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await submit
            hold.release.set()
            again = await client.post(server.url("/payments"), data=b"pay 100", request_id="pay-7")  # the retry
            record = await client.wait(again.request_id, timeout=30)
            return record.status.value

    with ScriptedServer(answer_ok) as server:
        assert asyncio.run(scenario()) == "completed"
        assert server.hits == 1
