"""Test-only bootstrap for worker processes: with ``BGHTTP_TEST_SPAN_FILE`` set, install an
OpenTelemetry SDK TracerProvider that appends every finished span to that file as one JSON line.

A worker process picks it up when this directory is on its ``PYTHONPATH`` (Python imports
``sitecustomize`` at start); the test process reads the file. bghttp itself configures no provider.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence

SPAN_FILE = os.environ.get("BGHTTP_TEST_SPAN_FILE")

if SPAN_FILE:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class JsonLinesExporter(SpanExporter):
        def __init__(self, path: str) -> None:
            self.path = path
            self.lock = threading.Lock()

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            lines = []
            for span in spans:
                context, parent = span.get_span_context(), span.parent
                lines.append(
                    json.dumps(
                        {
                            "name": span.name,
                            "kind": span.kind.name,
                            "trace_id": f"{context.trace_id:032x}",
                            "span_id": f"{context.span_id:016x}",
                            "parent_span_id": None if parent is None else f"{parent.span_id:016x}",
                            "attributes": dict(span.attributes or {}),
                            "status": span.status.status_code.name,
                            "pid": os.getpid(),
                        }
                    )
                )
            with self.lock, open(self.path, "a") as out:
                out.write("".join(line + "\n" for line in lines))
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(SPAN_FILE)))
    trace.set_tracer_provider(provider)
