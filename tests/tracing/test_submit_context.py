"""Every submit path saves the caller's current trace context with the request (a StubBroker stands in
for RabbitMQ); without an active span nothing is saved."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker
from opentelemetry.sdk.trace import TracerProvider

from bghttp import AsyncBackgroundHttpClient, BackgroundHttpClient, BulkRequest, Settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[BackgroundHttpClient]:
    settings = Settings(store_dir=tmp_path / "store", queue_name="unit", fsync=False)
    with BackgroundHttpClient(settings, broker=StubBroker()) as bg_client:
        yield bg_client


@pytest.fixture
def tracer() -> Iterator[Any]:
    provider = TracerProvider()
    yield provider.get_tracer("tests")
    provider.shutdown()


def _traceparent(client: BackgroundHttpClient, request_id: str) -> str | None:
    spec = client.store.load_request(request_id)
    assert spec is not None
    return None if spec.trace_context is None else spec.trace_context["traceparent"]


def test_single_bulk_and_async_submits_save_the_current_span_as_the_parent(
    client: BackgroundHttpClient, tracer: Any
) -> None:
    with tracer.start_as_current_span("caller") as span:
        context = span.get_span_context()
        expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        client.get("http://service.test/", request_id="single")
        client.submit_many([BulkRequest("GET", "http://service.test/", request_id="bulk")])

        async def submit_async() -> None:
            aclient = AsyncBackgroundHttpClient(client=client)
            try:
                await aclient.get("http://service.test/", request_id="async")  # runs in a pool thread
            finally:
                aclient._pool.shutdown()

        asyncio.run(submit_async())
    client.get("http://service.test/", request_id="outside")
    assert [_traceparent(client, rid) for rid in ("single", "bulk", "async")] == [expected] * 3
    assert _traceparent(client, "outside") is None


def test_a_span_never_carries_the_requests_secrets() -> None:
    from bghttp import tracing
    from bghttp.validation import prepare_request

    spec = prepare_request(
        "GET", "https://user:hunter2@api.test/x?key=tok3n", headers={"Authorization": "tok3n"}
    ).spec
    attributes = tracing._attributes(spec, 3)
    assert "hunter2" not in str(attributes) and "tok3n" not in str(attributes)
    where = (attributes["server.address"], attributes["server.port"], attributes["bghttp.attempt"])
    assert where == ("api.test", 443, 3)
