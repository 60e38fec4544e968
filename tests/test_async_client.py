"""AsyncBackgroundHttpClient inside a running event loop, with real RabbitMQ and a real worker.

"The loop stays responsive" is shown without timing: the blocking part of each
call waits for an event that only a coroutine on the same loop sets. If the call
blocked the loop, that coroutine could never run and the test would fail on its
bounded wait.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from bghttp import RequestStatus, Settings, UnknownRequest, WaitTimeout
from bghttp.aio import AsyncBackgroundHttpClient
from bghttp.broker import create_broker
from tests.support import WorkerProcess

BOUND = 30.0  # seconds: only reached when the loop was blocked


class HoldEnqueue(Middleware):
    """Holds every publish (in the caller's thread) until ``release`` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: int | None) -> None:
        self.entered.set()
        if not self.release.wait(BOUND):
            raise RuntimeError("publish was never released: the event loop was blocked")


def test_submit_runs_off_the_event_loop(rabbitmq_settings: Settings) -> None:
    hold = HoldEnqueue()
    broker = create_broker(rabbitmq_settings, [hold])

    async def scenario() -> str:
        async with AsyncBackgroundHttpClient(rabbitmq_settings, broker=broker) as client:
            submit = asyncio.create_task(client.post("http://127.0.0.1:9/x", data={"n": 1}))
            # This coroutine runs while the publish is held: proof the loop is free.
            entered = await asyncio.get_running_loop().run_in_executor(None, hold.entered.wait, BOUND)
            assert entered and not submit.done()
            hold.release.set()
            info = await asyncio.wait_for(submit, BOUND)
            record = await client.get_request_status(info.request_id)
            assert record is not None and record.status is RequestStatus.IN_PROGRESS
            return info.request_id

    request_id = asyncio.run(scenario())
    assert (rabbitmq_settings.store_dir / "requests" / f"{request_id}.json").exists()


def test_wait_polls_without_blocking_and_mirrors_the_client(
    rabbitmq_settings: Settings, worker: WorkerProcess, httpserver: HTTPServer
) -> None:
    gate = threading.Event()

    def held_response(request: Request) -> Response:
        gate.wait(BOUND)  # the worker's request waits until the loop opens the gate
        return Response("async ok", headers={"X-Seen": request.headers.get("X-Token", "")})

    httpserver.expect_request("/held").respond_with_handler(held_response)
    httpserver.expect_request("/never").respond_with_data("no")

    async def open_gate_later(client: AsyncBackgroundHttpClient, request_id: str) -> None:
        # Runs only if wait() yields to the loop; the request cannot finish before it does.
        while (record := await client.get_request_status(request_id)) is None or record.phase.value != "running":
            await asyncio.sleep(0.01)
        gate.set()

    async def scenario() -> None:
        async with AsyncBackgroundHttpClient(rabbitmq_settings) as client:
            info = await client.get(httpserver.url_for("/held"), headers={"X-Token": "t1"}, request_id="async-1")
            opener = asyncio.create_task(open_gate_later(client, info.request_id))
            record = await client.wait(info.request_id, timeout=BOUND)
            await opener
            assert record.status is RequestStatus.COMPLETED
            response = await client.get_response(info.request_id)
            assert response is not None and response.read_text() == "async ok"
            assert response.header("X-Seen") == "t1"

            listed = await client.list(status="completed")
            assert [r.request_id for r in listed] == ["async-1"]
            assert await client.remove("async-1") is True
            assert await client.get_request_status("async-1") is None

    asyncio.run(scenario())


def test_wait_timeout_and_cancel(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "store", fsync=False)

    async def scenario() -> None:
        # A broker nobody consumes from: the request stays queued until cancelled.
        async with AsyncBackgroundHttpClient(settings, broker=StubBroker()) as client:
            info = await client.post_multipart("http://127.0.0.1:9/x", fields={"a": "1"})
            with pytest.raises(WaitTimeout):
                await client.wait(info.request_id, timeout=0.2)
            cancelled = await client.cancel(info.request_id)
            assert cancelled.status is RequestStatus.CANCELLED
            assert (await client.wait(info.request_id)).status is RequestStatus.CANCELLED
            with pytest.raises(UnknownRequest):
                await client.wait("no-such-request")
        with pytest.raises(RuntimeError, match="closed"):
            await client.get("http://127.0.0.1:9/x")

    asyncio.run(scenario())


def _public_methods(cls: type) -> set[str]:
    return {name for name, value in vars(cls).items() if callable(value) and not name.startswith("_")}


def test_the_async_client_has_every_public_method_of_the_sync_one_as_a_coroutine() -> None:
    import inspect

    from bghttp import BackgroundHttpClient

    assert _public_methods(AsyncBackgroundHttpClient) == _public_methods(BackgroundHttpClient)
    for name in _public_methods(AsyncBackgroundHttpClient):
        assert inspect.iscoroutinefunction(getattr(AsyncBackgroundHttpClient, name)), name


def test_async_received_bytes_mirrors_the_client(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "store", fsync=False)

    async def scenario() -> tuple[int | None, int | None]:
        async with AsyncBackgroundHttpClient(settings, broker=StubBroker()) as client:
            info = await client.get("http://127.0.0.1:9/x")
            before = await client.received_bytes(info.request_id)
            with client.sync.store.open_response_part(info.request_id) as part:  # as a streaming attempt does
                part.write(b"12345")
                part.flush()
                return before, await client.received_bytes(info.request_id)

    assert asyncio.run(scenario()) == (None, 5)
