"""Whatever an attempt runs into is an attempt outcome, never a worker crash.

A crash is re-run by Dramatiq's ``Retries`` (5 times), i.e. the request is sent
again although no ``retries`` value allowed it. The server counts what it gets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.broker import publish_request
from bghttp.models import FilePart
from bghttp.store import FileStore
from bghttp.worker.execution import build_http_client, perform_attempt
from bghttp.worker.retry_policy import Outcome
from tests.reliability.attempts import stored_spec
from tests.reliability.scripted_server import Connection, ScriptedServer, response_head
from tests.support import WorkerProcess

WAIT = 60


def lying_gzip(conn: Connection) -> None:
    conn.read_request()
    conn.send(response_head(headers={"Content-Encoding": "gzip", "Content-Length": "12"}) + b"this is text")


def answer_ok(conn: Connection) -> None:
    conn.read_request()
    conn.send(response_head(headers={"Content-Length": "2"}) + b"ok")


def crash_lines(worker: WorkerProcess) -> list[str]:
    return [line for line in worker.log_path.read_text().splitlines() if "Failed to process message" in line]


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_a_lying_content_encoding_is_one_failed_attempt_not_five_crashes(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(rabbitmq_settings, threads=2)
    with ScriptedServer(lying_gzip) as server, BackgroundHttpClient(rabbitmq_settings) as client:
        info = client.post(server.url("/orders"), data={"n": 1}, retries=0)
        record = client.wait(info.request_id, timeout=WAIT)
        assert record.status is RequestStatus.FAILED, record
        assert [a.outcome for a in record.attempts] == ["bad_response"]
        assert record.last_error and "gzip" in record.last_error, record.last_error
        assert record.last_status_code == 200
        assert server.hits == 1
        assert crash_lines(worker) == []


@pytest.mark.rabbitmq
@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "url", "headers"),
    [
        ("vertical tab in a header value", None, [("X-Note", "a\x0bb")]),
        ("non-ASCII header value", None, [("X-Note", "café")]),
        ("URL httpx cannot parse", "http://0177.0.0.1:{port}/", []),
        ("unsupported scheme", "gopher://127.0.0.1:{port}/", []),
    ],
)
def test_a_stored_request_the_worker_cannot_send_fails_invalid_after_one_try(
    case: str,
    url: str | None,
    headers: list[tuple[str, str]],
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(rabbitmq_settings, threads=2)
    with ScriptedServer(answer_ok) as server, BackgroundHttpClient(rabbitmq_settings) as client:
        # Written straight into the store: submit validation would refuse it, but an
        # older client, a hand-edited file or a new httpx rule can still bring one here.
        target = (url or "http://127.0.0.1:{port}/").format(port=server.port)
        stored_spec(client.store, target, headers=headers, request_id="unsendable")
        publish_request(client.broker, rabbitmq_settings.queue_name, "unsendable", 1)
        record = client.wait("unsendable", timeout=WAIT)
        assert record.status is RequestStatus.FAILED, record
        assert [a.outcome for a in record.attempts] == ["invalid"], record.attempts
        assert record.last_error and "cannot be sent" in record.last_error, record.last_error
        assert server.hits == 0
        assert crash_lines(worker) == []


def test_a_body_file_that_vanished_is_an_invalid_attempt(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    with ScriptedServer(answer_ok) as server, build_http_client() as http:
        spec = stored_spec(store, server.url("/"), method="POST", body=b"payload")
        store.body_path(spec.request_id).unlink()
        result = perform_attempt(http, store, spec)
    assert result.outcome is Outcome.INVALID and "cannot be sent" in (result.error or ""), result
    assert server.hits == 0


def test_a_missing_multipart_file_is_an_invalid_attempt(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    with ScriptedServer(answer_ok) as server, build_http_client() as http:
        spec = stored_spec(store, server.url("/"), method="POST")
        spec = dataclasses.replace(spec, form_fields=[], file_parts=[FilePart("f", "gone.bin", "gone.bin", "a/b")])
        result = perform_attempt(http, store, spec)
    assert result.outcome is Outcome.INVALID, result
    assert server.hits == 0
