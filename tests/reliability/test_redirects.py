"""Redirects: secrets never follow a request to another origin; the caller's headers stay on the same origin.

Two real servers on different loopback ports are two origins (the port differs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bghttp.redaction import is_secret_header
from bghttp.store import FileStore
from bghttp.worker.execution import build_http_client, perform_attempt
from bghttp.worker.redirects import next_hop, origin
from bghttp.worker.retry_policy import Outcome
from tests.reliability.attempts import stored_spec
from tests.reliability.scripted_server import Connection, ScriptedServer, response_head

CALLER_HEADERS = [
    ("Authorization", "Bearer sk-live-1"),
    ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
    ("X-Api-Key", "key-2"),
    ("X-Auth-Token", "tok-3"),
    ("Cookie", "session=abc"),
    ("X-Trace", "trace-4"),
    ("Accept", "application/json"),
]


def request_headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)}


def redirect_to(location: Callable[[], str], status: str = "302 Found") -> Callable[[Connection], None]:
    def script(conn: Connection) -> None:
        head = conn.read_request()
        if head.split(b" ")[1].startswith(b"/start"):
            conn.send(response_head(status, {"Location": location(), "Content-Length": "0"}))
            conn.read_request()  # keep-alive: a same-origin hop may come back on this connection
            conn.send(response_head(headers={"Content-Length": "4"}) + b"done")
        else:
            conn.send(response_head(headers={"Content-Length": "4"}) + b"done")

    return script


def target() -> ScriptedServer:
    def script(conn: Connection) -> None:
        conn.read_request()
        conn.send(response_head(headers={"Content-Length": "4"}) + b"done")

    return ScriptedServer(script)


@pytest.mark.parametrize("status", ["301 Moved Permanently", "302 Found", "303 See Other", "307 Temporary Redirect"])
def test_cross_origin_redirect_drops_every_secret_header(status: str, tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    with target() as other, ScriptedServer(redirect_to(lambda: other.url("/landing"), status)) as origin:
        with build_http_client() as http:
            spec = stored_spec(store, origin.url("/start"), headers=CALLER_HEADERS)
            result = perform_attempt(http, store, spec)
        assert result.outcome is Outcome.SUCCESS, result
        assert origin.hits == 1 and other.hits == 1
        first, landed = request_headers(origin.requests[0]), request_headers(other.requests[0])
    assert all(first[name.lower()] == value for name, value in CALLER_HEADERS)
    leaked = sorted(name for name in landed if is_secret_header(name))
    assert leaked == [], f"secret headers sent to another origin: {leaked}"
    assert landed["x-trace"] == "trace-4" and landed["accept"] == "application/json"
    assert landed["host"] == f"127.0.0.1:{other.port}"


def test_same_origin_redirect_keeps_every_caller_header(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    origin: ScriptedServer
    with ScriptedServer(redirect_to(lambda: origin.url("/landing"))) as origin, build_http_client() as http:
        spec = stored_spec(store, origin.url("/start"), headers=CALLER_HEADERS)
        result = perform_attempt(http, store, spec)
        assert result.outcome is Outcome.SUCCESS, result
        assert origin.hits == 2
        landed = request_headers(origin.requests[1])
    assert origin.requests[1].startswith(b"GET /landing ")
    for name, value in CALLER_HEADERS:
        assert landed[name.lower()] == value, name


@pytest.mark.parametrize(
    ("start", "target", "same"),
    [
        ("http://a.test/x", "/y", True),
        ("http://a.test/x", "http://a.test:80/y", True),
        ("https://a.test/x", "https://a.test:443/y", True),
        ("http://a.test/x", "https://a.test/y", False),  # scheme
        ("http://a.test/x", "http://b.test/y", False),  # host
        ("http://a.test/x", "http://a.test:8080/y", False),  # port
        ("http://a.test/x", "//b.test/y", False),
    ],
)
def test_origin_is_scheme_host_and_port(start: str, target: str, same: bool) -> None:
    response = httpx.Response(302, headers={"Location": target})
    hop = next_hop("GET", httpx.URL(start), CALLER_HEADERS, response, keeps_body=False)
    assert (origin(hop.url) == origin(httpx.URL(start))) is same
    kept = {name for name, _ in hop.headers}
    assert kept == ({name for name, _ in CALLER_HEADERS} if same else {"X-Trace", "Accept"})


@pytest.mark.parametrize(
    ("status", "method", "body"),
    [
        ("303 See Other", "GET", b""),
        ("302 Found", "GET", b""),
        ("301 Moved Permanently", "GET", b""),
        ("307 Temporary Redirect", "POST", b"payload"),
        ("308 Permanent Redirect", "POST", b"payload"),
    ],
)
def test_redirect_method_and_body_follow_http_rules(status: str, method: str, body: bytes, tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    with target() as other, ScriptedServer(redirect_to(lambda: other.url("/landing"), status)) as origin:
        with build_http_client() as http:
            spec = stored_spec(
                store, origin.url("/start"), method="POST", body=b"payload", headers=[("Content-Type", "text/plain")]
            )
            result = perform_attempt(http, store, spec)
        assert result.outcome is Outcome.SUCCESS, result
        landed = other.requests[0]
    assert landed.startswith(method.encode() + b" /landing ")
    assert landed.partition(b"\r\n\r\n")[2] == body
    if not body:
        assert "content-length" not in request_headers(landed.partition(b"\r\n\r\n")[0])


def test_a_redirect_loop_is_invalid_after_the_limit(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)

    def loop(conn: Connection) -> None:
        while True:
            conn.read_request()
            conn.send(response_head("302 Found", {"Location": "/again", "Content-Length": "0"}))

    with ScriptedServer(loop) as server, build_http_client() as http:
        result = perform_attempt(http, store, stored_spec(store, server.url("/start")))
        assert result.outcome is Outcome.INVALID and "redirect" in (result.error or ""), result
        assert server.hits == 21  # the first request and 20 redirects


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/x", "file:///etc/passwd"])
def test_a_redirect_to_a_scheme_bghttp_does_not_send_is_invalid(location: str, tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    with ScriptedServer(redirect_to(lambda: location)) as server, build_http_client() as http:
        result = perform_attempt(http, store, stored_spec(store, server.url("/start")))
    assert result.outcome is Outcome.INVALID, result
    assert "redirect" in (result.error or ""), result


def test_a_redirect_with_a_broken_location_is_a_bad_answer(tmp_path: Path) -> None:
    """httpx rejects an unparsable Location as a protocol error: retryable like any malformed answer."""
    store = FileStore(tmp_path / "store", fsync=False)
    with ScriptedServer(redirect_to(lambda: "http://[::1")) as server, build_http_client() as http:
        result = perform_attempt(http, store, stored_spec(store, server.url("/start")))
    assert result.outcome is Outcome.NETWORK_ERROR, result
    assert "location" in (result.error or "").lower(), result
