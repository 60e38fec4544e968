"""Property: whatever ``prepare_request`` accepts, the worker can build and write.

Arbitrary URLs, headers, query parameters, bodies and multipart fields go
through submit validation; each accepted one is stored, built by the worker's
own code (``execution._build_request``) and written out by h11 as the worker's
connection would. Anything else ``prepare_request`` raises must be
``InvalidRequest``.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bghttp.errors import InvalidRequest
from bghttp.models import MultipartFile
from bghttp.store import FileStore
from bghttp.validation import prepare_request
from bghttp.worker.attempt_io import AttemptLimits
from bghttp.worker.execution import _build_request, _parse_url
from bghttp.worker.redirects import Hop

# Text that reaches every corner: ASCII, controls, Latin-1, other planes, surrogates.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
TOKENISH = st.text(st.sampled_from("aZ-_.!~0:/@?#[]%+ é\x0b\x0c\t"), min_size=0, max_size=8)

HOSTS = st.one_of(
    st.sampled_from(["127.0.0.1", "localhost", "0177.0.0.1", "1.2.3.256", "[::1]", "xn--n3h.net", "☃.net", "ß.de"]),
    st.sampled_from(["", "a", "127.1", "0x7f.0.0.1", "example.com.", "[::1", "h@", "u:p@h"]),
    ANY_TEXT,
)
PORTS = st.one_of(st.just(""), st.sampled_from([":0", ":80", ":65535", ":65536", ":", ":x"]))
PATHS = st.one_of(st.just("/"), st.builds(lambda t: "/" + t, ANY_TEXT), st.builds(lambda t: "/" + t, TOKENISH))
URLS = st.builds(lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
                 st.sampled_from(["http", "https", "HTTP", "ftp"]), HOSTS, PORTS, PATHS)
HEADERS = st.lists(st.tuples(st.one_of(TOKENISH, ANY_TEXT), st.one_of(TOKENISH, ANY_TEXT)), max_size=3)
QUERY = st.one_of(st.none(), st.dictionaries(ANY_TEXT, st.one_of(ANY_TEXT, st.integers(), st.floats()), max_size=2))
DATA = st.one_of(
    st.none(),
    ANY_TEXT,
    st.binary(max_size=20),
    st.dictionaries(ANY_TEXT, st.one_of(ANY_TEXT, st.floats(), st.integers()), max_size=2),
)
FIELDS = st.dictionaries(st.one_of(TOKENISH, ANY_TEXT), st.one_of(ANY_TEXT, st.integers()), max_size=2)


@pytest.fixture(scope="module")
def store() -> Iterator[FileStore]:
    with tempfile.TemporaryDirectory() as root:
        yield FileStore(Path(root) / "store", fsync=False)


def _write_with_h11(request: httpx.Request) -> bytes:
    """Serialize ``request`` as httpcore's HTTP/1.1 connection does."""
    connection = h11.Connection(our_role=h11.CLIENT)
    port = request.url.port
    assert port is None or 0 < port < 65536
    out = connection.send(
        h11.Request(method=request.method, target=request.url.raw_path, headers=request.headers.raw)
    ) or b""
    for chunk in request.stream:  # type: ignore[union-attr]
        out += connection.send(h11.Data(data=chunk)) or b""
    return out + (connection.send(h11.EndOfMessage()) or b"")


def _accepted_request_is_sendable(store: FileStore, method: str, url: str, **options: Any) -> None:
    try:
        prepared = prepare_request(method, url, **options)
    except InvalidRequest:
        return
    spec = prepared.spec
    assert store.create_request(spec, body=prepared.body, files=prepared.files) is not None
    with httpx.Client() as http, contextlib.ExitStack() as open_files:
        hop = Hop(spec.method, _parse_url(spec.url), list(spec.headers), keeps_body=True)
        limits = AttemptLimits(time.monotonic() + spec.timeout, spec.timeout, lambda: False)
        request = _build_request(http, store, spec, hop, open_files, limits)
        assert _write_with_h11(request).startswith(method.upper().encode())
    store.delete(spec.request_id)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "put"]), url=URLS, headers=HEADERS, query=QUERY, data=DATA)
def test_whatever_submit_accepts_the_worker_can_send(
    store: FileStore, method: str, url: str, headers: list[tuple[str, str]], query: Any, data: Any
) -> None:
    _accepted_request_is_sendable(store, method, url, headers=headers, query_parameters=query, data=data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=HEADERS, fields=FIELDS, filename=st.one_of(TOKENISH, ANY_TEXT))
def test_whatever_multipart_submit_accepts_the_worker_can_send(
    store: FileStore, tmp_path_factory: pytest.TempPathFactory, headers: list[tuple[str, str]],
    fields: dict[str, Any], filename: str,
) -> None:
    upload = tmp_path_factory.getbasetemp() / "upload.bin"
    upload.write_bytes(b"file body")
    for files in (None, {"f": MultipartFile(path=upload, filename=filename or None)}):
        _accepted_request_is_sendable(
            store, "POST", "http://127.0.0.1:9/", headers=headers, fields=fields, files=files, multipart=True
        )
