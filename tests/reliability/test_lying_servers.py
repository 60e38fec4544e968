"""Servers that lie or misbehave: each ends as one attempt outcome, bounded in time and memory.

Nothing here may raise out of ``perform_attempt``, save a response that is not
whole, or outlive the timeout.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bghttp.store import FileStore
from bghttp.worker.execution import build_http_client, perform_attempt
from bghttp.worker.retry_policy import Outcome
from tests.reliability.attempts import stored_spec
from tests.reliability.scripted_server import Connection, ScriptedServer

TIMEOUT = 2.0


def replies(*parts: bytes, then: Callable[[Connection], None] | None = None) -> Callable[[Connection], None]:
    def script(conn: Connection) -> None:
        conn.read_request()
        for part in parts:
            conn.send(part)
        if then is not None:
            then(conn)

    return script


def endless(data: bytes, interval: float = 0.0) -> Callable[[Connection], None]:
    def forever(conn: Connection) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            conn.send(data)
            if interval:
                time.sleep(interval)

    return forever


OK_HEAD = b"HTTP/1.1 200 OK\r\n"
CASES: dict[str, tuple[Callable[[Connection], None], Outcome, bytes | None]] = {
    # (script, outcome, the saved body when it must be saved)
    "content-length larger than the body, then close": (
        replies(OK_HEAD + b"Content-Length: 100\r\n\r\nonly this"),
        Outcome.NETWORK_ERROR,
        None,
    ),
    "content-length smaller than the body": (
        replies(OK_HEAD + b"Content-Length: 4\r\n\r\nfour and more"),
        Outcome.SUCCESS,
        b"four",
    ),
    "two different content-lengths": (
        replies(OK_HEAD + b"Content-Length: 4\r\nContent-Length: 9\r\n\r\nfour-nine"),
        Outcome.NETWORK_ERROR,
        None,
    ),
    "chunk size that is not hex": (
        replies(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"),
        Outcome.NETWORK_ERROR,
        None,
    ),
    "chunked body cut before the last chunk": (
        replies(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"),
        Outcome.NETWORK_ERROR,
        None,
    ),
    "HTTP/1.0 body delimited by close": (
        replies(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"),
        Outcome.SUCCESS,
        b"until the end",
    ),
    "1xx responses before the answer": (
        replies(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            + OK_HEAD
            + b"Content-Length: 2\r\n\r\nok"
        ),
        Outcome.SUCCESS,
        b"ok",
    ),
    "endless 102 Processing": (
        replies(then=endless(b"HTTP/1.1 102 Processing\r\n\r\n", 0.1)),
        Outcome.TIMEOUT,
        None,
    ),
    "endless header lines at full speed": (  # past the 100 KiB head limit: refused, not retried
        replies(OK_HEAD, then=endless(b"X-Padding: " + b"p" * 1000 + b"\r\n")),
        Outcome.BAD_RESPONSE,
        None,
    ),
    "a status line that is not HTTP": (replies(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), Outcome.NETWORK_ERROR, None),
    "closed without a byte": (replies(), Outcome.NETWORK_ERROR, None),
    "gzip cut short with a matching length": (
        replies(OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: 20\r\n\r\n" + gzip.compress(b"x" * 1000)[:20]),
        Outcome.BAD_RESPONSE,
        None,
    ),
    "gzip with trailing garbage": (
        replies(
            OK_HEAD + b"Content-Encoding: gzip\r\nContent-Length: 33\r\n\r\n" + gzip.compress(b"hello") + b"garbage"
        ),
        Outcome.BAD_RESPONSE,
        None,
    ),
    "204 with a gzip header and no body": (
        replies(b"HTTP/1.1 204 No Content\r\nContent-Encoding: gzip\r\n\r\n"),
        Outcome.SUCCESS,
        b"",
    ),
    "redirect with a huge body": (
        replies(
            b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 10000000000\r\n\r\n",
            then=endless(b"r" * 65536),
        ),
        Outcome.NETWORK_ERROR,  # port 1 refuses: the point is the redirect body was not read to its end
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_misbehaving_server_is_one_bounded_outcome(case: str, tmp_path: Path) -> None:
    script, outcome, saved = CASES[case]
    store = FileStore(tmp_path / "store", fsync=False)
    with ScriptedServer(script) as server, build_http_client() as http:
        spec = stored_spec(store, server.url("/"), timeout=TIMEOUT)
        started = time.monotonic()
        result = perform_attempt(http, store, spec)
        elapsed = time.monotonic() - started
    print(f"\n{case}: {result.outcome.value} after {elapsed:.2f} s: {result.error}")
    assert result.outcome is outcome, result
    assert elapsed <= TIMEOUT + 1
    body = store.response_body_path(spec.request_id)
    if saved is None:
        assert not body.exists() and store.read_response_metadata(spec.request_id) is None
    else:
        assert body.read_bytes() == saved
    assert not store.response_part_path(spec.request_id).exists()
