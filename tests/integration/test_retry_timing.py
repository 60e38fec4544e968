"""Retries on time: ``due_at`` is exactly the previous attempt's end plus the backoff, and no retry runs early.

A real worker, a real broker and a loopback server that fails each request's
first two attempts and records when each attempt arrived. Before, ``due_at``
was computed when the retry was decided (after the outcome was judged and the
network checked), a few milliseconds after the attempt ended; and a delayed
message was looked at once per consumer wake-up (1 s), so retries came late.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

from pytest_httpserver import HTTPServer
from werkzeug import Request
from werkzeug import Response as WerkzeugResponse

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.worker.actor import worker_middleware
from bghttp.worker.retry_policy import backoff_seconds
from tests.support import WorkerProcess

SCALE = 0.05
REQUESTS = 8


class FailsTwice:
    """500 for each request's first two attempts, then 200; records when each attempt arrived."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> WerkzeugResponse:
        now = time.time()
        with self.lock:
            seen = self.arrivals.setdefault(request.path, [])
            seen.append(now)
            failing = len(seen) <= 2
        return WerkzeugResponse("no" if failing else "ok", status=500 if failing else 200)


def test_retries_are_due_exactly_at_the_previous_end_plus_the_backoff_and_never_run_early(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], httpserver: HTTPServer
) -> None:
    settings = dataclasses.replace(rabbitmq_settings, backoff_scale=SCALE)
    start_worker(settings, threads=REQUESTS)
    server = FailsTwice()
    for index in range(REQUESTS):
        httpserver.expect_request(f"/fails-twice/{index}").respond_with_handler(server)
    with BackgroundHttpClient(settings) as client:
        urls = [httpserver.url_for(f"/fails-twice/{index}") for index in range(REQUESTS)]
        ids = [client.get(url, retries=2).request_id for url in urls]
        records = [client.wait(request_id, timeout=60) for request_id in ids]

    for index, record in enumerate(records):
        assert record.status is RequestStatus.COMPLETED, record
        attempts = record.attempts
        arrivals = server.arrivals[f"/fails-twice/{index}"]
        assert len(attempts) == len(arrivals) == 3
        for retry in (1, 2):
            previous, attempt = attempts[retry - 1], attempts[retry]
            assert previous.finished_at is not None
            # Exactly as documented (models.AttemptRecord.due_at): the previous end + the backoff.
            assert attempt.due_at == previous.finished_at + backoff_seconds(retry, SCALE), (retry, attempts)
            # Never early: neither the attempt's start nor its arrival at the server.
            assert attempt.started_at >= attempt.due_at, (retry, attempts)
            assert arrivals[retry] >= attempt.due_at, (retry, arrivals, attempts)


def test_a_worker_looks_at_its_delayed_messages_often(rabbitmq_settings: Settings) -> None:
    """Dramatiq moves a due delayed message to the work queue when the delay queue's consumer wakes up."""
    consumers = {name: SimpleNamespace(queue_name=name, worker_timeout=1000) for name in ("q", "q.DQ")}
    for middleware in worker_middleware(rabbitmq_settings):
        for consumer in consumers.values():
            middleware.after_consumer_thread_boot(None, consumer)  # type: ignore[arg-type]

    assert consumers["q.DQ"].worker_timeout <= 50
    assert consumers["q"].worker_timeout == 1000  # the work queue's consumer wakes on each message anyway
