"""Traces with OpenTelemetry, when the optional extra ``bghttp[otel]`` is installed.

* A submit saves the caller's current W3C trace context (``traceparent``,
  ``tracestate``) with the request (:func:`current_trace_context`).
* The worker opens one span per attempt (:func:`attempt_span`), a child of that
  context, with the HTTP client semantic-convention attributes plus
  ``bghttp.request_id`` and ``bghttp.attempt``; with ``BGHTTP_PROPAGATE_TRACE=1``
  the target receives the attempt span's ``traceparent``.

Without the extra nothing changes and nothing of OpenTelemetry is imported: each
entry point asks :func:`available` (a ``find_spec``, which imports nothing) and
imports ``opentelemetry`` only inside the function, once it is known to be there.
Spans go wherever the process's TracerProvider sends them; bghttp configures none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .core.outcomes import Outcome
from .core.urls import origin_key
from .models import RequestSpec
from .redaction import request_secrets, scrub

if TYPE_CHECKING:
    from .worker.execution import AttemptResult

TRACER_NAME = "bghttp"
#: The W3C trace-context headers a submit saves and a worker may send.
TRACE_HEADERS = ("traceparent", "tracestate")


@functools.cache
def available() -> bool:
    """True if the OpenTelemetry API is installed (``bghttp[otel]``); imports nothing to find out."""
    try:
        return importlib.util.find_spec("opentelemetry") is not None and _has_trace_api()
    except (ImportError, ValueError):  # an import hook that refuses it counts as absent
        return False


def _has_trace_api() -> bool:
    import opentelemetry.trace  # noqa: F401  (the namespace package exists, is the API there?)

    return True


def current_trace_context() -> dict[str, str] | None:
    """The caller's current trace context as W3C headers, or None (no extra, or no span is active)."""
    if not available():
        return None
    carrier: dict[str, str] = {}
    _propagator().inject(carrier)
    return carrier if "traceparent" in carrier else None


@functools.cache
def _propagator() -> Any:
    """W3C trace context only (``traceparent``, ``tracestate``), whatever the process's global propagators."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def with_trace_context(spec: RequestSpec) -> RequestSpec:
    """``spec`` carrying the caller's current trace context (``spec`` itself if there is none)."""
    context = current_trace_context()
    return spec if context is None else dataclasses.replace(spec, trace_context=context)


@dataclasses.dataclass
class AttemptSpan:
    """What the runner needs of an attempt's span: the spec to send, and where the outcome goes."""

    spec: RequestSpec
    span: Any = None

    def record(self, result: AttemptResult) -> None:
        """Put the attempt's outcome on the span (a no-op without the extra)."""
        if self.span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        if result.status_code is not None:
            self.span.set_attribute("http.response.status_code", result.status_code)
        if result.outcome is not Outcome.SUCCESS:
            # The semantic conventions: the status code as text for an HTTP error, else the failure's name.
            error_type = str(result.status_code) if result.outcome is Outcome.HTTP_ERROR else result.outcome.value
            self.span.set_attribute("error.type", error_type)
            self.span.set_status(Status(StatusCode.ERROR, result.error))


@contextlib.contextmanager
def attempt_span(spec: RequestSpec, attempt: int, *, propagate: bool) -> Iterator[AttemptSpan]:
    """A span around attempt number ``attempt`` of ``spec``, a child of the context saved at submit.

    With ``propagate`` the yielded spec also carries the span's ``traceparent``
    (and the saved ``tracestate``) as headers, replacing any the caller set.
    """
    if not available():
        yield AttemptSpan(spec)
        return
    from opentelemetry import trace

    propagator = _propagator()
    parent = propagator.extract(spec.trace_context or {})
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        spec.method, context=parent, kind=trace.SpanKind.CLIENT, attributes=_attributes(spec, attempt)
    ) as span:
        sent = spec
        if propagate:
            carrier: dict[str, str] = {}
            propagator.inject(carrier)  # the current span: this attempt's
            kept = [(name, value) for name, value in spec.headers if name.lower() not in TRACE_HEADERS]
            sent = dataclasses.replace(spec, headers=kept + sorted(carrier.items()))
        yield AttemptSpan(sent, span)


def _attributes(spec: RequestSpec, attempt: int) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {
        "http.request.method": spec.method,
        # Secrets of the request (a password in the URL, a secret header's value) never leave in a span.
        "url.full": scrub(spec.url, request_secrets(spec.headers, spec.url)),
        "bghttp.request_id": spec.request_id,
        "bghttp.attempt": attempt,
    }
    _, host, port = origin_key(spec.url)  # ("", "", 0) for a hand-edited URL: its attempt says what is wrong
    if host:
        attributes["server.address"] = host
    if port:
        attributes["server.port"] = port
    return attributes


__all__ = ["AttemptSpan", "attempt_span", "available", "current_trace_context", "with_trace_context"]
