"""Traces across processes: a submit under a parent span, attempt spans in a real worker process.

The test process records its parent span with the SDK's InMemorySpanExporter;
the worker process (a real ``dramatiq bghttp.actors``) gets an SDK provider from
``boot/sitecustomize.py`` that writes its spans to a file. The server on loopback
records the ``traceparent`` it received.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pytest_httpserver import HTTPServer
from werkzeug import Request
from werkzeug import Response as WerkzeugResponse

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.support import WorkerProcess, wait_until

BOOT = Path(__file__).resolve().parent / "boot"
WAIT = 30.0


@pytest.fixture
def tracer() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    """A tracer of the test process's own (the global provider is left alone), and its spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("tests"), exporter
    provider.shutdown()


class Target:
    """Answers 503 to the first request and 200 after; records each request's ``traceparent``."""

    def __init__(self) -> None:
        self.traceparents: list[str | None] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> WerkzeugResponse:
        with self.lock:
            self.traceparents.append(request.headers.get("traceparent"))
            first = len(self.traceparents) == 1
        return WerkzeugResponse("busy", status=503) if first else WerkzeugResponse("ok")


def _spans(path: Path, request_id: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    spans = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(
        (span for span in spans if span["attributes"].get("bghttp.request_id") == request_id),
        key=lambda span: span["attributes"]["bghttp.attempt"],
    )


@pytest.mark.parametrize("propagate", [True, False], ids=["propagated", "not-propagated"])
def test_attempt_spans_are_children_of_the_submitters_span_in_another_process(
    propagate: bool,
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    httpserver: HTTPServer,
    tracer: tuple[Any, InMemorySpanExporter],
    tmp_path: Path,
) -> None:
    span_file = tmp_path / "worker-spans.jsonl"
    start_worker(
        rabbitmq_settings,
        extra_env={
            "PYTHONPATH": os.pathsep.join(filter(None, [str(BOOT), os.environ.get("PYTHONPATH", "")])),
            "BGHTTP_TEST_SPAN_FILE": str(span_file),
            "BGHTTP_PROPAGATE_TRACE": "1" if propagate else "0",
        },
    )
    target = Target()
    httpserver.expect_request("/traced").respond_with_handler(target)
    test_tracer, exporter = tracer
    with BackgroundHttpClient(rabbitmq_settings) as client:
        with test_tracer.start_as_current_span("checkout") as parent:
            info = client.get(httpserver.url_for("/traced"), retries=1)
        assert client.wait(info.request_id, timeout=WAIT).status is RequestStatus.COMPLETED
        assert client.store.load_request(info.request_id).trace_context["traceparent"].startswith("00-")

    (recorded_parent,) = exporter.get_finished_spans()
    trace_id = f"{recorded_parent.context.trace_id:032x}"
    parent_id = f"{recorded_parent.context.span_id:016x}"
    assert parent.get_span_context().trace_id == recorded_parent.context.trace_id

    first, second = wait_until(lambda: (spans := _spans(span_file, info.request_id)) and len(spans) == 2 and spans)
    for number, span in ((1, first), (2, second)):
        assert span["pid"] != os.getpid()  # recorded by the worker, not here
        assert (span["trace_id"], span["parent_span_id"], span["kind"]) == (trace_id, parent_id, "CLIENT")
        assert span["attributes"]["bghttp.attempt"] == number
        assert span["attributes"]["http.request.method"] == "GET"
        assert span["attributes"]["url.full"] == httpserver.url_for("/traced")
        assert span["attributes"]["server.address"] == httpserver.host
        assert span["attributes"]["server.port"] == httpserver.port
    assert first["attributes"]["http.response.status_code"] == 503
    assert first["attributes"]["error.type"] == "503" and first["status"] == "ERROR"
    assert second["attributes"]["http.response.status_code"] == 200 and "error.type" not in second["attributes"]

    if propagate:
        # version-trace_id-span_id-flags: each attempt's own span, in the submitter's trace.
        received = [(value or "").rsplit("-", 1)[0] for value in target.traceparents]
        assert received == [f"00-{trace_id}-{span['span_id']}" for span in (first, second)]
    else:
        assert target.traceparents == [None, None]
