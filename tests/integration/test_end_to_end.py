"""End to end: a real worker process, a real broker, a real HTTP server on loopback.

Every test checks from the server's side what it received, and from the store's
side what bghttp recorded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request
from werkzeug import Response as WerkzeugResponse

from bghttp import BackgroundHttpClient, MultipartFile, Phase, RequestExists, RequestStatus
from bghttp.broker import publish_request
from tests.support import wait_until

WAIT = 30.0


class Recorder:
    """Records what the server received, with arrival times."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, Request, bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, request: Request) -> None:
        with self.lock:
            self.requests.append((time.time(), request, request.get_data()))

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def responding(self, body: str = "ok") -> Callable[[Request], WerkzeugResponse]:
        """A handler that records each request and answers 200 with ``body``."""

        def handler(request: Request) -> WerkzeugResponse:
            self(request)
            return WerkzeugResponse(body)

        return handler


def test_every_verb_reaches_the_server(client: BackgroundHttpClient, worker: object, httpserver: HTTPServer) -> None:
    seen: list[str] = []

    def handler(request: Request) -> WerkzeugResponse:
        seen.append(request.method)
        return WerkzeugResponse(f"you sent {request.method}", status=200)

    httpserver.expect_request("/verbs").respond_with_handler(handler)
    url = httpserver.url_for("/verbs")
    infos = [
        client.get(url),
        client.head(url),
        client.delete(url),
        client.post(url, data="p"),
        client.put(url, data="p"),
        client.patch(url, data="p"),
        client.request("OPTIONS", url),
    ]
    for info in infos:
        assert client.wait(info.request_id, WAIT).status is RequestStatus.COMPLETED
        assert info.request_file_path.is_file()
    assert sorted(seen) == sorted(["GET", "HEAD", "DELETE", "POST", "PUT", "PATCH", "OPTIONS"])
    get_response = client.get_response(infos[0].request_id)
    assert get_response is not None and get_response.read_text() == "you sent GET"
    head_response = client.get_response(infos[1].request_id)
    assert head_response is not None and head_response.read_bytes() == b""


def test_json_text_and_bytes_bodies_arrive_as_sent(
    client: BackgroundHttpClient, worker: object, httpserver: HTTPServer
) -> None:
    recorder = Recorder()

    httpserver.expect_request("/body").respond_with_handler(recorder.responding())
    url = httpserver.url_for("/body")
    payload = {"name": "Zoë", "items": [1, 2.5, None, True], "nested": {"a": "b"}}
    sent = [
        client.post(url, data=payload),
        client.post(url, data=[1, "two"]),
        client.put(url, data="héllo wörld"),
        client.patch(url, data=b"\x00\x01\xffraw"),
        client.post(url, data=b"<x/>", headers={"Content-Type": "application/xml"}),
    ]
    for info in sent:
        assert client.wait(info.request_id, WAIT).status is RequestStatus.COMPLETED
    bodies = [(r.method, r.headers.get("Content-Type"), body) for _, r, body in recorder.requests]
    assert ("PUT", "text/plain; charset=utf-8", "héllo wörld".encode()) in bodies
    assert ("PATCH", "application/octet-stream", b"\x00\x01\xffraw") in bodies
    assert ("POST", "application/xml", b"<x/>") in bodies
    json_bodies = [json.loads(body) for method, ctype, body in bodies if ctype == "application/json"]
    assert payload in json_bodies and [1, "two"] in json_bodies
    assert len(bodies) == len(sent)


def test_multipart_fields_and_files_arrive_whole(
    client: BackgroundHttpClient, worker: object, httpserver: HTTPServer, tmp_path: Path
) -> None:
    report_bytes = bytes(range(256)) * 4096  # 1 MiB of every byte value
    report = tmp_path / "report.bin"
    report.write_bytes(report_bytes)
    note = tmp_path / "note.txt"
    note.write_text("a small note\n")
    received: dict[str, object] = {}

    def handler(request: Request) -> WerkzeugResponse:
        received["form"] = request.form.to_dict(flat=False)
        received["files"] = {
            name: (f.filename, f.mimetype, f.read()) for name, f in request.files.items(multi=True)
        }
        return WerkzeugResponse("stored", status=201)

    httpserver.expect_request("/upload", method="POST").respond_with_handler(handler)
    info = client.post_multipart(
        httpserver.url_for("/upload"),
        fields={"title": "Quarterly", "count": 3},
        files={
            "report": report,
            "note": MultipartFile(note, filename="renamed.txt", content_type="text/markdown"),
        },
    )
    note.unlink()  # the store keeps its own copy: the caller's file may go away
    record = client.wait(info.request_id, WAIT)
    assert record.status is RequestStatus.COMPLETED
    assert received["form"] == {"title": ["Quarterly"], "count": ["3"]}
    files = received["files"]
    assert isinstance(files, dict)
    assert files["report"] == ("report.bin", "application/octet-stream", report_bytes)
    assert files["note"] == ("renamed.txt", "text/markdown", b"a small note\n")


def test_query_parameters_merge_with_the_url_query(
    client: BackgroundHttpClient, worker: object, httpserver: HTTPServer
) -> None:
    recorder = Recorder()

    httpserver.expect_request("/search").respond_with_handler(recorder.responding())
    info = client.get(
        httpserver.url_for("/search") + "?q=first&lang=en",
        query_parameters={"q": "second", "tag": ["a", "b c"], "page": 2, "exact": True},
    )
    assert client.wait(info.request_id, WAIT).status is RequestStatus.COMPLETED
    (_, request, _), = recorder.requests
    assert request.args.getlist("q") == ["first", "second"]
    assert request.args.getlist("tag") == ["a", "b c"]
    assert request.args["lang"] == "en" and request.args["page"] == "2" and request.args["exact"] == "true"


def test_a_cookie_one_response_sets_is_never_sent_with_another_request(
    client: BackgroundHttpClient, worker: object, httpserver: HTTPServer
) -> None:
    """Requests are independent, though a worker sends them all through one HTTP client."""
    cookies_seen: list[str | None] = []

    def handler(request: Request) -> WerkzeugResponse:
        cookies_seen.append(request.headers.get("Cookie"))
        response = WerkzeugResponse("ok")
        response.headers.add("Set-Cookie", "session=tenant-a-secret; Path=/")
        return response

    httpserver.expect_request("/hook").respond_with_handler(handler)
    first = client.get(httpserver.url_for("/hook"))
    assert client.wait(first.request_id, WAIT).status is RequestStatus.COMPLETED
    second = client.get(httpserver.url_for("/hook"))
    assert client.wait(second.request_id, WAIT).status is RequestStatus.COMPLETED
    explicit = client.get(httpserver.url_for("/hook"), headers={"Cookie": "mine=1"})
    assert client.wait(explicit.request_id, WAIT).status is RequestStatus.COMPLETED
    assert cookies_seen == [None, None, "mine=1"]


def test_headers_are_sent_and_response_metadata_is_saved(
    client: BackgroundHttpClient, worker: object, httpserver: HTTPServer
) -> None:
    recorder = Recorder()

    def final(request: Request) -> WerkzeugResponse:
        recorder(request)
        response = WerkzeugResponse(json.dumps({"ok": True}), content_type="application/json; charset=utf-8")
        response.headers.add("Set-Cookie", "a=1")
        response.headers.add("Set-Cookie", "b=2")
        return response

    httpserver.expect_request("/start").respond_with_response(
        WerkzeugResponse("", status=302, headers={"Location": httpserver.url_for("/final")})
    )
    httpserver.expect_request("/final").respond_with_handler(final)
    info = client.get(httpserver.url_for("/start"), headers={"X-Trace": "abc-123", "Accept": "application/json"})
    assert client.wait(info.request_id, WAIT).status is RequestStatus.COMPLETED

    (_, request, _), = recorder.requests
    assert request.headers["X-Trace"] == "abc-123"
    assert request.headers["Accept"] == "application/json"
    response = client.get_response(info.request_id)
    assert response is not None
    assert response.status_code == 200
    assert response.url == httpserver.url_for("/final")
    assert [v for k, v in response.headers if k.lower() == "set-cookie"] == ["a=1", "b=2"]
    assert response.http_version in {"HTTP/1.0", "HTTP/1.1"}  # werkzeug's dev server answers 1.0
    assert response.elapsed_ms is not None and response.elapsed_ms >= 0
    assert response.json() == {"ok": True}
    assert response.response_file_path.name == f"{info.request_id}.body"
    assert response.status is RequestStatus.COMPLETED and response.error is None


def test_retries_zero_and_http_500_fails_with_the_response_kept(
    client: BackgroundHttpClient, worker: object, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/broken").respond_with_data("database down", status=500)
    info = client.get(httpserver.url_for("/broken"), retries=0)
    record = client.wait(info.request_id, WAIT)
    assert record.status is RequestStatus.FAILED
    assert record.attempt_count == 1 and record.retries_used == 0
    assert record.last_status_code == 500 and "500" in (record.last_error or "")
    response = client.get_response(info.request_id)
    assert response is not None
    assert response.status_code == 500 and response.read_text() == "database down"
    assert response.status is RequestStatus.FAILED and "500" in (response.error or "")


def test_fails_twice_then_succeeds_with_three_attempts(
    client: BackgroundHttpClient, worker: object, httpserver: HTTPServer
) -> None:
    calls: list[float] = []

    def flaky(request: Request) -> WerkzeugResponse:
        calls.append(time.time())
        if len(calls) <= 2:
            return WerkzeugResponse("not yet", status=503)
        return WerkzeugResponse("finally")

    httpserver.expect_request("/flaky").respond_with_handler(flaky)
    info = client.post(httpserver.url_for("/flaky"), data={"n": 1}, retries=3)
    record = client.wait(info.request_id, WAIT)
    assert record.status is RequestStatus.COMPLETED
    assert len(calls) == 3
    assert record.attempt_count == 3 and record.retries_used == 2
    assert [a.outcome for a in record.attempts] == ["http_error", "http_error", "success"]
    response = client.get_response(info.request_id)
    assert response is not None and response.read_text() == "finally"


def test_backoff_schedule_is_exact_and_no_attempt_runs_early(
    client: BackgroundHttpClient, worker: object, httpserver: HTTPServer
) -> None:
    scale = client.settings.backoff_scale
    arrivals: list[float] = []

    def always_down(request: Request) -> WerkzeugResponse:
        arrivals.append(time.time())
        return WerkzeugResponse("down", status=503)

    httpserver.expect_request("/down").respond_with_handler(always_down)
    retries = 5
    info = client.get(httpserver.url_for("/down"), retries=retries)
    record = client.wait(info.request_id, WAIT + 60 * scale * 64)
    assert record.status is RequestStatus.FAILED
    assert record.retries_used == retries and record.attempt_count == retries + 1 == len(arrivals)
    attempts = record.attempts
    for n in range(1, retries + 1):
        previous, current = attempts[n - 1], attempts[n]
        expected_delay = min(2**n, 512) * scale
        assert previous.finished_at is not None and current.due_at is not None
        # The due time is the previous attempt's end plus exactly the backoff.
        assert current.due_at - previous.finished_at == pytest.approx(expected_delay, abs=0.05)
        # No attempt ran before it was due, as recorded by the worker and seen by the server.
        assert current.started_at >= current.due_at
        assert arrivals[n] - arrivals[n - 1] >= expected_delay


def test_waiting_retry_status_shows_attempts_error_and_due_time(
    rabbitmq_settings: object, start_worker: object, httpserver: HTTPServer
) -> None:
    from dataclasses import replace

    from bghttp import Settings

    assert isinstance(rabbitmq_settings, Settings)
    settings = replace(rabbitmq_settings, backoff_scale=5.0)  # first retry due in 10 s
    start_worker(settings)  # type: ignore[operator]
    httpserver.expect_request("/later").respond_with_data("busy", status=429)
    with BackgroundHttpClient(settings) as bg:
        info = bg.get(httpserver.url_for("/later"), retries=2)
        record = wait_until(
            lambda: (r := bg.get_request_status(info.request_id)) and r.phase is Phase.WAITING_RETRY and r, WAIT
        )
        assert record.status is RequestStatus.IN_PROGRESS
        assert record.attempt_count == 1 and record.retries_used == 1
        assert record.last_error == "HTTP 429 TOO MANY REQUESTS" and record.last_status_code == 429
        assert record.next_attempt_at is not None
        assert record.next_attempt_at - record.attempts[0].finished_at == pytest.approx(10.0, abs=0.05)  # type: ignore[operator]
        bg.cancel(info.request_id)


def test_timeout_bounds_the_attempt(client: BackgroundHttpClient, worker: object, httpserver: HTTPServer) -> None:
    def slow(request: Request) -> WerkzeugResponse:
        time.sleep(2)
        return WerkzeugResponse("too late")

    httpserver.expect_request("/slow").respond_with_handler(slow)
    info = client.get(httpserver.url_for("/slow"), timeout=0.5)
    record = client.wait(info.request_id, WAIT)
    assert record.status is RequestStatus.FAILED
    assert record.attempts[0].outcome == "timeout" and "timeout" in (record.last_error or "")
    assert client.get_response(info.request_id) is None


def test_a_duplicated_message_sends_one_http_request(
    client: BackgroundHttpClient, worker: object, httpserver: HTTPServer
) -> None:
    recorder = Recorder()

    def slow_ok(request: Request) -> WerkzeugResponse:
        recorder(request)
        time.sleep(1.0)
        return WerkzeugResponse("once")

    httpserver.expect_request("/once").respond_with_handler(slow_ok)
    info = client.post(httpserver.url_for("/once"), data={"pay": 10})
    # Two more copies of the very same message, as a redelivery would produce:
    # one arrives while the first runs, one after it completed.
    publish_request(client.broker, client.settings.queue_name, info.request_id, 1)
    wait_until(lambda: recorder.count() >= 1, WAIT)
    publish_request(client.broker, client.settings.queue_name, info.request_id, 1)
    assert client.wait(info.request_id, WAIT).status is RequestStatus.COMPLETED
    publish_request(client.broker, client.settings.queue_name, info.request_id, 1)
    time.sleep(1.5)  # give the duplicates every chance to run
    assert recorder.count() == 1
    record = client.get_request_status(info.request_id)
    assert record is not None and record.status is RequestStatus.COMPLETED and record.attempt_count == 1


def test_same_request_id_twice_sends_once(client: BackgroundHttpClient, worker: object, httpserver: HTTPServer) -> None:
    recorder = Recorder()

    httpserver.expect_request("/idem").respond_with_handler(recorder.responding())
    first = client.post(httpserver.url_for("/idem"), data={"x": 1}, request_id="order-42.webhook")
    second = client.post(httpserver.url_for("/idem"), data={"x": 1}, request_id="order-42.webhook")
    assert first.request_id == second.request_id == "order-42.webhook"
    assert first.request_file_path == second.request_file_path
    with pytest.raises(RequestExists, match="body differs"):  # another request under the ID is not sent
        client.post(httpserver.url_for("/idem"), data={"x": 2}, request_id="order-42.webhook")
    assert client.wait(first.request_id, WAIT).status is RequestStatus.COMPLETED
    time.sleep(0.5)
    assert recorder.count() == 1
    assert json.loads(recorder.requests[0][2]) == {"x": 1}


def test_cancelled_queued_request_never_runs(
    rabbitmq_settings: object, start_worker: object, httpserver: HTTPServer
) -> None:
    from bghttp import Settings

    assert isinstance(rabbitmq_settings, Settings)
    recorder = Recorder()
    httpserver.expect_request("/never").respond_with_handler(recorder.responding())
    with BackgroundHttpClient(rabbitmq_settings) as bg:
        info = bg.get(httpserver.url_for("/never"))
        cancelled = bg.cancel(info.request_id)  # no worker yet: it is queued
        assert cancelled.status is RequestStatus.CANCELLED
        start_worker(rabbitmq_settings)  # type: ignore[operator]
        time.sleep(1.5)
        assert recorder.count() == 0
        record = bg.get_request_status(info.request_id)
        assert record is not None and record.status is RequestStatus.CANCELLED
