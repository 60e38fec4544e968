"""Retry-After with a real worker process, a real broker and a real server on loopback.

The server answers 503 (or 429) with ``Retry-After`` once, then 200; the worker
runs with ``BGHTTP_BACKOFF_SCALE=0.05``, so its own schedule would retry after
0.1 s: only the server's value can make the second attempt wait longer.
"""

from __future__ import annotations

import dataclasses
import email.utils
import threading
import time
from collections.abc import Callable

from pytest_httpserver import HTTPServer
from werkzeug import Request
from werkzeug import Response as WerkzeugResponse

from bghttp import BackgroundHttpClient, RequestStatus, Settings, StatusRecord
from tests.support import WorkerProcess

WAIT = 40.0


class BusyOnce:
    """Answers the first request with ``status`` and ``Retry-After: <retry_after()>``, later ones 200;
    records when each request arrived."""

    def __init__(self, status: int, retry_after: Callable[[], str]) -> None:
        self.status = status
        self.retry_after = retry_after
        self.arrivals: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> WerkzeugResponse:
        with self.lock:
            self.arrivals.append(time.time())
            first = len(self.arrivals) == 1
        if first:
            return WerkzeugResponse("busy", status=self.status, headers={"Retry-After": self.retry_after()})
        return WerkzeugResponse("ok")


def _run(
    settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    httpserver: HTTPServer,
    server: BusyOnce,
    **env: str,
) -> tuple[BusyOnce, StatusRecord]:
    settings = dataclasses.replace(settings, backoff_scale=0.05)
    start_worker(settings, extra_env=env)
    httpserver.expect_request("/busy").respond_with_handler(server)
    with BackgroundHttpClient(settings) as client:
        info = client.get(httpserver.url_for("/busy"), retries=2)
        record = client.wait(info.request_id, timeout=WAIT)
    assert record.status is RequestStatus.COMPLETED
    assert len(server.arrivals) == 2
    assert record.retries_used == 1  # the wait still spent a retry
    return server, record


def test_a_503_with_retry_after_seconds_delays_the_next_attempt(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], httpserver: HTTPServer
) -> None:
    server, record = _run(rabbitmq_settings, start_worker, httpserver, BusyOnce(503, lambda: "3"))
    first, second = record.attempts
    assert first.status_code == 503
    assert first.retry_after == 3.0  # the attempt record shows the server's value
    assert second.started_at - first.finished_at >= 3.0
    assert server.arrivals[1] - server.arrivals[0] >= 3.0


def test_a_429_with_an_http_date_waits_until_that_date(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], httpserver: HTTPServer
) -> None:
    # Whole seconds on the wire: a date 4 to 5 s after the answer is sent (the worker reads it a moment later).
    server, record = _run(
        rabbitmq_settings,
        start_worker,
        httpserver,
        BusyOnce(429, lambda: email.utils.formatdate(time.time() + 5, usegmt=True)),
    )
    first, second = record.attempts
    assert first.status_code == 429
    assert first.retry_after is not None and 3.0 <= first.retry_after <= 5.0
    assert second.started_at - first.finished_at >= first.retry_after
    assert server.arrivals[1] - server.arrivals[0] >= 3.0


def test_a_retry_after_above_the_cap_is_capped(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], httpserver: HTTPServer
) -> None:
    _, record = _run(
        rabbitmq_settings,
        start_worker,
        httpserver,
        BusyOnce(503, lambda: "3600"),
        BGHTTP_MAX_RETRY_AFTER="1.5",
    )
    first, second = record.attempts
    assert first.retry_after == 3600.0  # as the server gave it
    # Due after the cap (1.5 s), not after the server's hour (nor the scaled schedule's 0.1 s).
    assert second.due_at is not None
    assert 1.5 <= second.due_at - first.finished_at < 60
    assert second.started_at - first.finished_at >= 1.5
