"""Through an HTTPS proxy the CONNECT is not the request: an attempt that fails in the tunnel was not sent.

httpcore passes the request's trace extension to the CONNECT it sends to the
proxy, so the attempt saw "send_request_headers" and "receive_response_headers"
for the CONNECT: it recorded the request as sent (``on_sending``) and named a
TLS failure after the tunnel "... while waiting for the response (the request
was sent)", although no byte of the request had reached the target.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bghttp.store import FileStore
from bghttp.worker.execution import perform_attempt
from bghttp.worker.http_env import load_http_environment
from bghttp.worker.retry_policy import Outcome
from tests.reliability.attempts import stored_spec


@pytest.fixture
def tunnel_that_drops() -> Iterator[str]:
    """An HTTP proxy that accepts every CONNECT and then closes the tunnel at once."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                received = b""
                while b"\r\n\r\n" not in received:
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    received += chunk
                connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_a_tls_failure_in_a_proxy_tunnel_is_not_a_sent_request(tunnel_that_drops: str, tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    environment = load_http_environment(use_proxies=True, environ={"HTTPS_PROXY": tunnel_that_drops})
    spec = stored_spec(store, "https://target.invalid/orders", method="POST", body=b"{}")
    marked_sent: list[bool] = []
    with environment.client(1) as http:
        result = perform_attempt(http, store, spec, on_sending=lambda: marked_sent.append(True))

    assert result.outcome is Outcome.NETWORK_ERROR, result
    assert marked_sent == [], result.error
    assert "the request was sent" not in (result.error or ""), result.error


def test_a_request_through_a_forward_proxy_is_still_recorded_as_sent(tunnel_that_drops: str, tmp_path: Path) -> None:
    # http:// through the same proxy is no tunnel: the request itself goes to the proxy (absolute form).
    store = FileStore(tmp_path / "store", fsync=False)
    environment = load_http_environment(use_proxies=True, environ={"HTTP_PROXY": tunnel_that_drops})
    spec = stored_spec(store, "http://target.invalid/orders", method="POST", body=b"{}")
    marked_sent: list[bool] = []
    with environment.client(1) as http:
        perform_attempt(http, store, spec, on_sending=lambda: marked_sent.append(True))

    assert marked_sent == [True]
