"""Attack: response heads the worker must store as they came (held).

Header bytes that are not UTF-8 (and not ASCII) must not break the metadata's
JSON; thousands of headers must be saved whole; a status code outside 100-599
is an HTTP error by its first digit or a protocol error, never a crash.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bghttp.client import BackgroundHttpClient
from bghttp.store import FileStore
from bghttp.worker.execution import build_http_client, perform_attempt
from bghttp.worker.retry_policy import Outcome
from tests.reliability.attempts import stored_spec
from tests.reliability.scripted_server import Connection, ScriptedServer


def replies(data: bytes) -> ScriptedServer:
    def script(conn: Connection) -> None:
        conn.read_request()
        conn.send(data)

    return ScriptedServer(script)


CASES = {
    "latin-1 header bytes": (
        b"HTTP/1.1 200 OK\r\nX-Bin: \xff\xfe\x80abc\r\nContent-Length: 2\r\n\r\nhi",
        Outcome.SUCCESS,
        200,
    ),
    "9000 headers": (
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(9000)) + b"Content-Length: 2\r\n\r\nhi",
        Outcome.SUCCESS,
        200,
    ),
    "status 999": (b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nhi", Outcome.HTTP_ERROR, 999),
    "status 600": (b"HTTP/1.1 600 Odd\r\nContent-Length: 2\r\n\r\nhi", Outcome.HTTP_ERROR, 600),
    "status 099": (b"HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nhi", Outcome.NETWORK_ERROR, None),
    "101 without an upgrade": (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", Outcome.NETWORK_ERROR, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_odd_response_heads_end_as_one_outcome_with_readable_metadata(tmp_path: Path, case: str) -> None:
    data, outcome, status_code = CASES[case]
    store = FileStore(tmp_path / "store", fsync=False)
    with replies(data) as server:
        spec = stored_spec(store, server.url("/x"), timeout=2.0)
        result = perform_attempt(build_http_client(), store, spec)
    assert (result.outcome, result.status_code) == (outcome, status_code), result.error
    if outcome is Outcome.SUCCESS:
        client = BackgroundHttpClient(broker="local", store_dir=store.root)
        response = client.get_response("r1")
        client.close()
        assert response is not None and response.read_bytes() == b"hi"
        if case == "latin-1 header bytes":
            assert ("X-Bin", "\xff\xfe\x80abc") in response.headers
        else:
            assert len(response.headers) == 9001
