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

import pytest

from bghttp import BackgroundHttpClient, RequestStatus
from tests.reliability.scripted_server import Connection, ScriptedServer
from tests.support import WorkerProcess

FORGED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nFORGED"
REAL = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\n\r\nREAL"


def keep_alive_server(first_answer: Callable[[bytes], bytes]) -> Callable[[Connection], None]:
    """Answers the first request of each connection with ``first_answer(head)``, later ones with REAL."""

    def script(conn: Connection) -> None:
        answer = first_answer
        for _ in range(4):
            try:
                head = conn.read_request()
            except ConnectionError:
                return
            conn.send(answer(head) if answer is not None else REAL)
            answer = None

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
