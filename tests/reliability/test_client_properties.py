"""Property tests of the client's inputs: nothing hostile escapes the store or corrupts it.

Every call either returns a RequestInfo whose request is readable from the store,
or raises an error from the documented ``bghttp.errors`` tree. No input writes
outside the store root or leaves a file the store does not know.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dramatiq.brokers.stub import StubBroker
from hypothesis import event, given, settings
from hypothesis import strategies as st

from bghttp import BackgroundHttpClient, BghttpError, MultipartFile, RequestInfo, Settings

STORE_DIRS = {"requests", "bodies", "status", "responses", "locks"}
KNOWN_FILE = re.compile(r"[A-Za-z0-9._-]{1,128}\.(json|body|log)|ids\.\d\d\.lock")

hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["..", ".", "../../etc/passwd", "/abs/path", "a/b", "a\\b", "%2e%2e%2f", "\x00", "~root", "..."]),
    st.text(alphabet="./\\%~-_aZ09\x00\n", max_size=20),
)
valid_ids = st.from_regex(r"[A-Za-z0-9._-]{1,128}", fullmatch=True)
request_ids = st.one_of(st.none(), valid_ids, valid_ids, hostile_text, st.integers(), st.binary(max_size=8))
url_safe_text = st.text(st.characters(blacklist_categories=["Cc", "Cs", "Zs", "Zl", "Zp"]), max_size=30)
urls = st.one_of(
    st.builds(lambda path: f"http://127.0.0.1:9/{path}", url_safe_text),
    st.builds(lambda path: f"https://example.com:8443/{path}", url_safe_text),
    hostile_text,
    st.builds(
        lambda scheme, host, path: f"{scheme}://{host}/{path}",
        st.sampled_from(["http", "https", "file", "ftp", "", "HTTP"]),
        st.sampled_from(["127.0.0.1:8080", "example.com", "[::1]", "xn--nxasmq6b.com", "a b", "ex%61mple", "", "h:0"]),
        hostile_text,
    ),
)
header_names = st.one_of(st.from_regex(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,20}", fullmatch=True), hostile_text)
header_values = st.one_of(
    st.text(st.characters(max_codepoint=255, blacklist_characters="\r\n\x00"), max_size=20),
    hostile_text, st.integers(), st.none(), st.binary(max_size=8),
)
valid_headers = st.dictionaries(
    st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True),
    st.text(st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f"), max_size=20),
    max_size=4,
)
headers = st.one_of(
    st.none(),
    valid_headers,
    valid_headers,
    st.dictionaries(header_names, header_values, max_size=4),
    st.lists(st.tuples(header_names, header_values), max_size=4),
    st.lists(st.one_of(st.text(max_size=3), st.tuples(hostile_text)), max_size=3),
    hostile_text,
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_text),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)
bodies = st.one_of(st.none(), st.binary(max_size=64), st.text(max_size=40), json_values, st.builds(object))
query_values = st.one_of(
    st.text(max_size=10), st.integers(), st.floats(), st.booleans(), st.none(),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3),
)
queries = st.one_of(
    st.none(),
    st.dictionaries(st.text(min_size=1, max_size=10), st.one_of(st.text(max_size=10), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=10), query_values, max_size=3),
    hostile_text,
)
methods = st.sampled_from(["GET", "post", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "", "G ET", "GET"])


WITNESS_ID = "witness-request"


class StoreSandbox:
    """A client on a StubBroker whose store lives alone in a fresh directory.

    One is built per example (:func:`store_sandbox`), so an example never sees
    another's requests and a failure shrinks to the input that caused it. Each
    starts with one accepted request, the witness, that no example may corrupt.
    """

    def __init__(self, sandbox: Path) -> None:
        self.sandbox = sandbox
        self.root = sandbox / "store"
        self.client = BackgroundHttpClient(Settings(store_dir=self.root, fsync=False), broker=StubBroker())
        self.accepted: dict[str, RequestInfo] = {}
        self.accepted[WITNESS_ID] = self.client.post("http://127.0.0.1:9/witness", request_id=WITNESS_ID, data=b"w")

    def submit(self, method: Any, url: Any, **options: Any) -> None:
        try:
            info = self.client.request(method, url, **options)
        except BghttpError:
            pass
        else:
            self.accepted[info.request_id] = info
            event("accepted")
        self.check()

    def check(self) -> None:
        # Nothing outside the store root (made by the first submit that got that far).
        assert [p.name for p in self.sandbox.iterdir()] in (["store"], [])
        if not self.root.exists():
            assert self.accepted == {}
            return
        assert {p.name for p in self.root.iterdir()} == STORE_DIRS
        for directory in STORE_DIRS:
            for path in (self.root / directory).iterdir():
                if path.is_dir():  # multipart copies only
                    assert directory == "bodies" and path.name.endswith(".files"), path
                else:
                    assert KNOWN_FILE.fullmatch(path.name), path
        # Every accepted request is whole and readable.
        for request_id, info in self.accepted.items():
            assert info.request_file_path.parent == self.root / "requests"
            spec = self.client.store.load_request(request_id)
            record = self.client.get_request_status(request_id)
            assert spec is not None and spec.request_id == request_id
            assert record is not None and record.request_id == request_id
            json.loads(info.request_file_path.read_bytes())
        assert len(self.client.list()) == len(self.accepted)


@contextlib.contextmanager
def store_sandbox() -> Iterator[StoreSandbox]:
    with tempfile.TemporaryDirectory() as directory:
        box = StoreSandbox(Path(directory))
        try:
            yield box
        finally:
            box.client.close()


PROPERTY_SETTINGS = settings(max_examples=500, deadline=None)


@PROPERTY_SETTINGS
@given(method=methods, url=urls, request_id=request_ids, data=bodies)
def test_urls_ids_and_bodies(method: Any, url: Any, request_id: Any, data: Any) -> None:
    with store_sandbox() as sandbox:
        sandbox.submit(method, url, request_id=request_id, data=data)


@PROPERTY_SETTINGS
@given(headers=headers, query=queries, request_id=st.one_of(st.none(), valid_ids, hostile_text))
def test_headers_and_query_parameters(headers: Any, query: Any, request_id: Any) -> None:
    # The body rides along so that every accepted request also has a bodies/ file.
    with store_sandbox() as sandbox:
        sandbox.submit(
            "POST",
            "http://127.0.0.1:9/p?x=1",
            headers=headers,
            query_parameters=query,
            request_id=request_id,
            data=b"b",
        )


@PROPERTY_SETTINGS
@given(
    fields=st.one_of(st.none(), st.dictionaries(hostile_text, query_values, max_size=3), hostile_text),
    file_name=st.one_of(st.text(max_size=20), hostile_text),
    request_id=request_ids,
)
def test_multipart_inputs(fields: Any, file_name: Any, request_id: Any) -> None:
    with store_sandbox() as sandbox:
        upload = sandbox.sandbox.parent / f"{sandbox.sandbox.name}-upload.bin"
        upload.write_bytes(b"payload")
        try:
            files = {"f": MultipartFile(upload, filename=file_name)} if file_name else {"f": str(upload)}
            sandbox.submit(
                "POST", "http://127.0.0.1:9/m", fields=fields, files=files, request_id=request_id, multipart=True
            )
        finally:
            upload.unlink()


@PROPERTY_SETTINGS
@given(request_id=st.one_of(hostile_text, st.integers(), st.none()))
def test_reads_and_changes_by_id(request_id: Any) -> None:
    """Status reads, cancel and remove by a hostile ID raise only documented errors."""
    with store_sandbox() as sandbox:
        client = sandbox.client
        for call in (client.get_request_status, client.get_response, client.cancel, client.remove):
            with contextlib.suppress(BghttpError):
                call(request_id)
        if request_id == WITNESS_ID:  # removed on purpose, not corrupted
            sandbox.accepted.pop(WITNESS_ID)
        sandbox.check()
