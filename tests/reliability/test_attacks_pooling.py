"""Attack: bytes a server sends past the end of one response must not answer the next request.

A worker keeps connections to an origin alive and reuses them. A server that
writes more than the response it frames (a body after a HEAD response, which
has none; a body longer than its Content-Length) leaves those bytes in the
client's HTTP/1.1 parser. If the connection is then reused, the next request to
that origin (maybe another caller's, maybe a POST) is "answered" by bytes the
server wrote before that request was even sent: its record says ``completed``
with a response the server never gave it, and its real answer is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, RequestStatus
from bghttp.store import FileStore
from bghttp.worker.execution import build_http_client, perform_attempt
from bghttp.worker.retry_policy import Outcome
from tests.reliability.attempts import stored_spec
from tests.reliability.scripted_server import Connection, ScriptedServer
from tests.support import WorkerProcess

FORGED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nFORGED"
REAL = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nREAL"


def keep_alive_server(first_answer: Callable[[bytes], bytes]) -> Callable[[Connection], None]:
    """Keeps connections open; answers ``/first`` with ``first_answer(head)``, anything else with REAL."""

    def script(conn: Connection) -> None:
        for _ in range(4):
            try:
                head = conn.read_request()
            except ConnectionError:
                return
            conn.send(first_answer(head) if b" /first " in head.split(b"\r\n")[0] else REAL)

    return script


def head_with_a_body(head: bytes) -> bytes:
    # A HEAD response has no body whatever its Content-Length says; this one sends one anyway.
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(FORGED) + FORGED


def body_past_its_length(head: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + FORGED


@pytest.mark.parametrize(
    ("first_method", "first_answer"),
    [("HEAD", head_with_a_body), ("GET", body_past_its_length)],
    ids=["head-response-with-a-body", "body-longer-than-content-length"],
)
def test_bytes_past_a_response_never_answer_the_next_request(
    client: BackgroundHttpClient,
    worker: WorkerProcess | None,
    first_method: str,
    first_answer: Callable[[bytes], bytes],
) -> None:
    with ScriptedServer(keep_alive_server(first_answer)) as server:
        first = client.request(first_method, server.url("/first"))
        assert client.wait(first.request_id, timeout=20).status is RequestStatus.COMPLETED
        post = client.post(server.url("/orders"), data=b"order 7")
        record = client.wait(post.request_id, timeout=20)
        response = client.get_response(post.request_id)
        assert record.status is RequestStatus.COMPLETED
        assert response is not None
        # The POST's answer is the one the server gave it, not bytes sent before it.
        assert (response.status_code, response.response_file_path.read_bytes()) == (201, b"REAL")
        assert server.hits == 2


def test_a_connection_whose_response_ended_cleanly_is_still_reused(tmp_path: Path) -> None:
    """The guard above must not cost the pool its reuse (a TCP/TLS handshake per attempt)."""
    store = FileStore(tmp_path / "store", fsync=False)
    http = build_http_client()
    with ScriptedServer(keep_alive_server(lambda head: REAL)) as server:
        for number in range(3):
            spec = stored_spec(store, server.url("/first"), request_id=f"r{number}")
            assert perform_attempt(http, store, spec).outcome is Outcome.SUCCESS
        assert (server.hits, len(server.accepted_at)) == (3, 1)
