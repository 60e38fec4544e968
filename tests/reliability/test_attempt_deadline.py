"""The timeout bounds the whole attempt, and cancel stops a running one, whatever the server does.

Each server below stalls in its own way (trickled headers, trickled body, no
answer at all, an upload sink that reads slowly, slow redirect hops). The
attempt must end within ``timeout + 1`` s, measured here, and the server must
see the connection closed. Cancel latency is measured from ``cancel()`` to the
server seeing the client go.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, RequestStatus
from bghttp.store import FileStore
from bghttp.worker.execution import build_http_client, perform_attempt
from bghttp.worker.retry_policy import Outcome
from tests.conftest import local_settings
from tests.reliability.attempts import stored_spec
from tests.reliability.scripted_server import Connection, ScriptedServer, response_head
from tests.support import wait_until

TIMEOUT = 2.0
SLACK = 1.0
CANCEL_LATENCY = 0.5


def trickled_headers(conn: Connection) -> None:
    conn.read_request()
    conn.trickle(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 12 + b"\r\n\r\n", 0.5)


def trickled_body(conn: Connection) -> None:
    conn.read_request()
    conn.send(response_head(headers={"Content-Length": "40"}))
    conn.trickle(b"x" * 40, 0.5)


def trickled_chunked_body(conn: Connection) -> None:
    conn.read_request()
    conn.send(response_head(headers={"Transfer-Encoding": "chunked"}))
    conn.trickle(b"28\r\n" + b"x" * 40 + b"\r\n0\r\n\r\n", 0.5)


def never_answers(conn: Connection) -> None:
    conn.read_request()
    conn.wait_until_client_gone()


def slow_upload_sink(conn: Connection) -> None:
    """Reads 64 KiB every 0.05 s: the upload keeps moving, but 48 MiB would take 40 s."""
    conn.sock.settimeout(30)
    while True:
        time.sleep(0.05)
        if not conn.sock.recv(65536):
            conn.server.note_client_gone()
            return


def slow_redirects(conn: Connection) -> None:
    """Every hop answers after 0.8 s with a redirect to the next one: 5 hops outlast the timeout."""
    head = conn.read_request()
    hop = int(head.split(b" ")[1].rsplit(b"/", 1)[1] or b"0")
    time.sleep(0.8)
    conn.send(response_head("302 Found", {"Location": f"/hop/{hop + 1}", "Content-Length": "0"}))
    conn.wait_until_client_gone()


STALLS: dict[str, tuple[Callable[[Connection], None], str, bytes | None]] = {
    "trickled headers": (trickled_headers, "GET", None),
    "trickled body": (trickled_body, "GET", None),
    "trickled chunked body": (trickled_chunked_body, "GET", None),
    "no answer": (never_answers, "GET", None),
    "slow upload sink": (slow_upload_sink, "POST", b"u" * (48 * 1024 * 1024)),
    "slow redirect hops": (slow_redirects, "GET", None),
}


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "store", fsync=False)


@pytest.mark.parametrize("stall", list(STALLS))
def test_the_timeout_bounds_the_whole_attempt(stall: str, store: FileStore) -> None:
    script, method, body = STALLS[stall]
    with ScriptedServer(script, receive_buffer=65536) as server, build_http_client() as http:
        spec = stored_spec(store, server.url("/hop/0"), method=method, body=body, timeout=TIMEOUT)
        started = time.monotonic()
        result = perform_attempt(http, store, spec)
        ended = time.monotonic()
        print(f"\n{stall}: attempt ended after {ended - started:.2f} s: {result.outcome} {result.error}")
        assert ended - started <= TIMEOUT + SLACK
        assert result.outcome is Outcome.TIMEOUT, result
        if stall == "slow upload sink":
            return  # the kernel still delivers what the client had queued: the sink sees the end late
        gone = wait_until(lambda: server.client_gone_at, timeout=5)[-1]
    print(f"{stall}: the server saw the client go after {gone - started:.2f} s")
    assert gone - started <= TIMEOUT + SLACK + 0.5  # the server notices on its next byte (every 0.5 s)


def stall_until_cancelled(answer_after: threading.Event) -> Callable[[Connection], None]:
    def script(conn: Connection) -> None:
        conn.read_request()
        answer_after.set()
        conn.wait_until_client_gone()

    return script


def stream_until_cancelled(streaming: threading.Event) -> Callable[[Connection], None]:
    def script(conn: Connection) -> None:
        conn.read_request()
        conn.send(response_head(headers={"Content-Length": "100000"}) + b"x" * 10)
        streaming.set()
        conn.trickle(b"x" * 99990, 0.05)

    return script


@pytest.fixture
def local_client(tmp_path: Path) -> Iterator[BackgroundHttpClient]:
    with BackgroundHttpClient(local_settings(tmp_path / "store")) as client:
        yield client


def upload_until_cancelled(uploading: threading.Event) -> Callable[[Connection], None]:
    def script(conn: Connection) -> None:
        conn.sock.recv(65536)
        uploading.set()
        slow_upload_sink(conn)

    return script


CANCEL_PHASES = {
    "waiting for headers": stall_until_cancelled,
    "streaming the body": stream_until_cancelled,
    "uploading the body": upload_until_cancelled,
}


@pytest.mark.parametrize("phase", list(CANCEL_PHASES))
def test_cancel_stops_a_running_attempt_within_half_a_second(phase: str, local_client: BackgroundHttpClient) -> None:
    reached = threading.Event()
    uploading = phase == "uploading the body"
    with ScriptedServer(CANCEL_PHASES[phase](reached), receive_buffer=65536) as server:
        if uploading:
            info = local_client.post(server.url("/"), data=b"u" * (48 * 1024 * 1024), timeout=60)
        else:
            info = local_client.get(server.url("/"), timeout=60)
        assert reached.wait(10)
        time.sleep(0.3)  # let the worker settle into its read or write
        cancelled_at, cancelled_at_wall = time.monotonic(), time.time()
        assert local_client.cancel(info.request_id).status is RequestStatus.CANCELLED
        record = wait_until(
            lambda: (r := local_client.get_request_status(info.request_id)) and r.attempts[-1].finished_at and r,
            timeout=10,
        )
        # The uploading client's close reaches the sink only after the bytes the kernel still holds.
        gone = None if uploading else wait_until(lambda: server.client_gone_at, timeout=10)[-1] - cancelled_at
    attempt = record.attempts[-1]
    assert attempt.finished_at is not None
    ended = attempt.finished_at - cancelled_at_wall
    print(f"\ncancel while {phase}: attempt recorded finished {ended:.3f} s after cancel(); server saw it go: {gone}")
    assert ended <= CANCEL_LATENCY
    if gone is not None:
        assert gone <= CANCEL_LATENCY
    assert record.status is RequestStatus.CANCELLED
    assert attempt.outcome == "cancelled"
    if phase == "streaming the body":
        assert attempt.status_code == 200  # the server had answered: the record says so
    assert local_client.get_response(info.request_id) is None


def test_a_pooled_connection_is_bounded_too(store: FileStore) -> None:
    """The second attempt reuses the first one's kept-alive connection; its deadline still holds."""

    def keep_alive_then_trickle(conn: Connection) -> None:
        conn.read_request()
        conn.send(response_head(headers={"Content-Length": "2"}) + b"ok")
        conn.read_request()
        conn.send(response_head(headers={"Content-Length": "40"}))
        conn.trickle(b"x" * 40, 0.5)

    with ScriptedServer(keep_alive_then_trickle) as server, build_http_client() as http:
        first = perform_attempt(http, store, stored_spec(store, server.url("/"), request_id="first"))
        started = time.monotonic()
        second = perform_attempt(http, store, stored_spec(store, server.url("/"), request_id="second"))
        elapsed = time.monotonic() - started
        assert len(server.accepted_at) == 1  # one connection served both
    assert first.outcome is Outcome.SUCCESS
    assert second.outcome is Outcome.TIMEOUT and elapsed <= TIMEOUT + SLACK, (second, elapsed)
