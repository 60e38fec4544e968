"""Replay (``client.retry``, ``bghttp retry``) with a real worker, a real broker and a real partner server.

The partner is a loopback server that answers 500 while it is "down" and 200
once it is back, and counts the hits of every request ID: it, not bghttp, is
the witness that a replay sends each request exactly once more.
"""

from __future__ import annotations

import collections
import threading
import urllib.parse
from collections.abc import Callable, Iterator

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request
from werkzeug import Response as WerkzeugResponse

from bghttp import BackgroundHttpClient, BulkRequest, RequestStatus, RetryRefused, Settings, UnknownRequest
from tests.cli.helpers import assert_one_line_error, json_output, run_cli
from tests.support import WorkerProcess, wait_until

WAIT = 60.0


class Partner:
    """Answers 500 while ``down``, 200 when back; counts hits per ``?id=``."""

    def __init__(self) -> None:
        self.down = True
        self.hits: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> WerkzeugResponse:
        with self.lock:
            self.hits[request.args.get("id", "")] += 1
        return WerkzeugResponse("down", status=500) if self.down else WerkzeugResponse("ok")


@pytest.fixture
def partner(httpserver: HTTPServer) -> Iterator[tuple[Partner, str]]:
    server = Partner()
    httpserver.expect_request("/partner").respond_with_handler(server)
    yield server, httpserver.url_for("/partner")


def _failed(client: BackgroundHttpClient, request_ids: list[str]) -> bool:
    return all(
        (record := client.get_request_status(request_id)) is not None and record.status is RequestStatus.FAILED
        for request_id in request_ids
    )


@pytest.mark.slow
def test_after_a_partner_outage_retry_status_failed_sends_each_request_exactly_once_more(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    partner: tuple[Partner, str],
) -> None:
    server, url = partner
    worker = start_worker(rabbitmq_settings, threads=8)
    request_ids = [f"outage-{n:02d}" for n in range(50)]
    with BackgroundHttpClient(rabbitmq_settings) as client:
        client.submit_many(
            BulkRequest("GET", url, query_parameters={"id": rid}, request_id=rid, retries=1) for rid in request_ids
        )
        wait_until(lambda: _failed(client, request_ids), timeout=WAIT)
        assert all(server.hits[rid] == 2 for rid in request_ids)  # the first try and its one retry

        server.down = False  # the partner is back
        result = run_cli(rabbitmq_settings, "retry", "--status", "failed", "--since", "2h")
        assert result.returncode == 0, result.stderr
        assert sorted(result.stdout.split()) == request_ids
        assert "retried 50 failed request(s)" in result.stderr

        records = [client.wait(rid, timeout=WAIT) for rid in request_ids]
    worker.stop()  # nothing in flight any more: the counts below are final
    assert all(record.status is RequestStatus.COMPLETED for record in records)
    assert {rid: server.hits[rid] for rid in request_ids} == {rid: 3 for rid in request_ids}
    for record in records:
        assert [attempt.number for attempt in record.attempts] == [1, 2, 3]  # the history stays
        assert [attempt.status_code for attempt in record.attempts] == [500, 500, 200]
        assert (record.replays, record.earlier_attempts, record.retries_used) == (1, 2, 0)


def test_a_replay_has_a_fresh_retry_budget_and_concurrent_replays_run_it_once(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    partner: tuple[Partner, str],
) -> None:
    server, url = partner
    start_worker(rabbitmq_settings)
    with BackgroundHttpClient(rabbitmq_settings) as client:
        info = client.get(url, query_parameters={"id": "budget"}, retries=2, request_id="budget")
        assert client.wait(info.request_id, timeout=WAIT).status is RequestStatus.FAILED
        assert server.hits["budget"] == 3

        # Still down: the replay spends a whole new budget of 2 retries, then fails again.
        outcomes: list[str] = []
        barrier = threading.Barrier(4)

        def replay() -> None:
            barrier.wait()
            try:
                client.retry("budget")
                outcomes.append("replayed")
            except RetryRefused:
                outcomes.append("refused")

        threads = [threading.Thread(target=replay) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert sorted(outcomes) == ["refused"] * 3 + ["replayed"]
        record = client.wait("budget", timeout=WAIT)
        assert record.status is RequestStatus.FAILED and record.retries_used == 2
        assert server.hits["budget"] == 6
        assert [attempt.number for attempt in record.attempts] == [1, 2, 3, 4, 5, 6]

        server.down = False
        assert client.retry("budget").replays == 2  # (the worker may have finished it already)
        assert client.wait("budget", timeout=WAIT).status is RequestStatus.COMPLETED
        assert server.hits["budget"] == 7

        with pytest.raises(RetryRefused, match="completed"):
            client.retry("budget")
        with pytest.raises(UnknownRequest):
            client.retry("never-submitted")


def test_the_cli_replays_a_cancelled_request_and_refuses_the_rest_in_one_line(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    partner: tuple[Partner, str],
) -> None:
    server, url = partner
    server.down = False
    with BackgroundHttpClient(rabbitmq_settings) as client:
        client.get(url, query_parameters={"id": "held"}, request_id="held")  # no worker yet: stays queued
        client.cancel("held")
        client.get(url, query_parameters={"id": "done"}, request_id="done")
        start_worker(rabbitmq_settings)
        assert client.wait("done", timeout=WAIT).status is RequestStatus.COMPLETED
        assert server.hits["held"] == 0

        refused = run_cli(rabbitmq_settings, "retry", "done")
        assert_one_line_error(refused, 1)
        assert "only failed and cancelled requests can be retried" in refused.stderr
        assert_one_line_error(run_cli(rabbitmq_settings, "retry", "nope"), 3)
        assert_one_line_error(run_cli(rabbitmq_settings, "retry"), 2)
        assert_one_line_error(run_cli(rabbitmq_settings, "retry", "held", "--status", "failed"), 2)
        assert_one_line_error(run_cli(rabbitmq_settings, "retry", "held", "--host", "x"), 2)

        # --host selects by the URL's host: nothing of ours goes to another host.
        def retry_cancelled(host: str) -> object:
            return json_output(run_cli(rabbitmq_settings, "--json", "retry", "--status", "cancelled", "--host", host))

        assert retry_cancelled("x.test") == {"retried": [], "refused": {}}
        mine = retry_cancelled(str(urllib.parse.urlsplit(url).hostname))
        assert mine == {"retried": ["held"], "refused": {}}
        assert client.wait("held", timeout=WAIT).status is RequestStatus.COMPLETED
        assert server.hits["held"] == 1
