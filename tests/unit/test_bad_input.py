"""Every bad input gets a clear InvalidRequest and leaves nothing in the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

from bghttp import BackgroundHttpClient, BghttpError, InvalidRequest, InvalidRequestId, MultipartFile, Settings
from bghttp.config import ConfigError


@pytest.fixture
def stub_client(tmp_path: Path) -> Iterator[BackgroundHttpClient]:
    settings = Settings(store_dir=tmp_path / "store", queue_name="unit", fsync=False)
    with BackgroundHttpClient(settings, broker=StubBroker()) as client:
        yield client


def stored_files(client: BackgroundHttpClient) -> list[Path]:
    """Files of requests (the store's ID lock files are no part of any request)."""
    return [p for p in client.store.root.rglob("*") if p.is_file() and p.parent.name != "locks"]


URL = "http://127.0.0.1:9/x"

def nested_list(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


DEEP_LIST = nested_list(5000)

BAD_CALLS: list[tuple[str, dict[str, Any], str]] = [
    ("ftp://127.0.0.1/file", {}, "scheme must be http or https"),
    ("file:///etc/passwd", {}, "scheme must be http or https"),
    ("127.0.0.1/no-scheme", {}, "scheme"),
    ("http://", {}, "no host"),
    ("http://exa mple.com/", {}, "malformed URL"),
    ("http://host:99999/", {}, "malformed URL"),
    ("http://host:port/", {}, "malformed URL"),
    ("", {}, "malformed URL"),
    (URL, {"retries": -1}, "retries must be"),
    (URL, {"retries": 11}, "retries must be"),
    (URL, {"retries": 2.5}, "retries must be"),
    (URL, {"retries": True}, "retries must be"),
    (URL, {"timeout": 0}, "timeout must be > 0"),
    (URL, {"timeout": -3}, "timeout must be > 0"),
    (URL, {"timeout": float("nan")}, "timeout must be > 0"),
    (URL, {"timeout": "10"}, "timeout must be a number"),
    # An integer too big for a float (a JSON producer may write 1 followed by 400 zeros).
    (URL, {"timeout": 10**400}, "timeout must be at most"),
    (URL, {"timeout": float("inf")}, "timeout must be at most"),
    (URL, {"timeout": -(10**400)}, "timeout must be > 0"),
    (URL, {"retries": 10**5000}, "retries must be"),
    # Small, but nested near the recursion limit: every record and event that carries it
    # would fail to encode or decode (a RecursionError traceback); refused up front.
    (URL, {"metadata": {"a": nested_list(985)}}, "nested more than 32 deep"),
    (URL, {"metadata": {"a": nested_list(32)}}, "nested more than 32 deep"),  # too long for str(): not a ValueError
    # Nested deeper than Python's recursion limit: refused, not a RecursionError.
    (URL, {"query_parameters": {"a": DEEP_LIST}}, "query parameter 'a'"),
    (URL, {"data": {"x": float("inf")}}, "cannot be encoded"),
    (URL, {"data": {"when": object()}}, "cannot be encoded"),
    (URL, {"data": 42}, "data must be a dict, list, str or bytes"),
    (URL, {"data": "\ud800"}, "not valid text"),
    (URL, {"headers": {"X-Evil": "a\r\nInjected: yes"}}, "CR, LF or NUL"),
    (URL, {"headers": {"X-Evil": "a\nb"}}, "CR, LF or NUL"),
    (URL, {"headers": {"Bad Name": "v"}}, "invalid header name"),
    (URL, {"headers": {"X-Evil\r\n": "v"}}, "invalid header name"),
    (URL, {"headers": {"X-Num": 5}}, "string value"),
    (URL, {"query_parameters": {"a": None}}, "query parameter 'a'"),
    (URL, {"query_parameters": ["a", "b"]}, "query_parameters must be a mapping"),
    (URL, {"query_parameters": {"\ud800": "x"}}, "query parameter names must be non-empty text"),
]


# Input that Python's own URL and text checks pass but that the worker could not
# send: httpx encodes header values as ASCII and parses URLs its own way, and h11
# validates every header as it writes it. Each was accepted at submit and then
# crashed every attempt in the worker.
UNSENDABLE_CALLS: list[tuple[str, dict[str, Any], str]] = [
    (URL, {"headers": {"X-Name": "café"}}, "header 'X-Name'.*ASCII"),
    (URL, {"headers": {"X-Name": "a\x80b"}}, "header 'X-Name'.*ASCII"),
    (URL, {"headers": {"X-Form": "a\x0cb"}}, "header 'X-Form'"),
    (URL, {"headers": {"X-Tab": "a\x0bb"}}, "header 'X-Tab'"),
    (URL, {"headers": {"X-Lead": " a"}}, "header 'X-Lead'"),
    (URL, {"headers": {"X-Trail": "a "}}, "header 'X-Trail'"),
    (URL, {"headers": {"Näme": "v"}}, "invalid header name"),
    (URL, {"headers": [("Host", "a"), ("host", "b")]}, "multiple Host"),
    (URL, {"data": "12345", "headers": {"Content-Length": "3"}}, "Content-Length"),
    (URL, {"headers": {"Transfer-Encoding": "gzip"}}, "Transfer-Encoding"),
    ("http://0177.0.0.1/", {}, "malformed URL"),
    ("http://1.2.3.256/", {}, "malformed URL"),
    ("http://xn--n3h.net/", {}, "malformed URL"),
    ("http://☃.net/", {}, "malformed URL"),
    ("http://[::1/", {}, "malformed URL"),
    ("http://h:80:80/", {}, "malformed URL"),
    ("http://user@/", {}, "no host"),
    ("http://127.0.0.1:9/" + "a" * 70_000, {}, "malformed URL"),
    (URL, {"query_parameters": {"q": "a" * 70_000}}, "malformed URL"),
    (URL, {"query_parameters": {"n": 10**5000}}, "query parameter 'n'"),
    (URL, {"timeout": 1e10}, "timeout must be"),
]


@pytest.mark.parametrize(("url", "options", "message"), UNSENDABLE_CALLS)
def test_input_the_worker_cannot_send_is_rejected_at_submit(
    stub_client: BackgroundHttpClient, url: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message) as raised:
        stub_client.post(url, **options)
    assert "\n" not in str(raised.value)  # one line
    assert stored_files(stub_client) == []


def test_unsendable_multipart_parts_are_rejected(stub_client: BackgroundHttpClient, tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"x")
    with pytest.raises(InvalidRequest, match="field 'n'"):
        stub_client.post_multipart(URL, fields={"n": 10**5000})
    with pytest.raises(InvalidRequest, match="invalid multipart field name"):
        stub_client.post_multipart(URL, fields={"\ud800": "v"})
    for bad in ("\ud800", 5):
        with pytest.raises(InvalidRequest, match="invalid file name"):
            stub_client.post_multipart(URL, files={"f": MultipartFile(path=upload, filename=bad)})  # type: ignore[arg-type]
        with pytest.raises(InvalidRequest, match="invalid content type"):
            stub_client.post_multipart(URL, files={"f": MultipartFile(path=upload, content_type=bad)})  # type: ignore[arg-type]
    assert stored_files(stub_client) == []


@pytest.mark.parametrize("value", ["Bearer sk-live-\x0cSECRET", "Bearer sk-live-SECRET-é", "Bearer sk-live-SECRET "])
def test_a_rejected_secret_header_value_is_not_in_the_message(stub_client: BackgroundHttpClient, value: str) -> None:
    with pytest.raises(InvalidRequest, match="header 'Authorization'") as raised:
        stub_client.get(URL, headers={"Authorization": value})
    assert "SECRET" not in str(raised.value)
    assert stored_files(stub_client) == []


@pytest.mark.parametrize(("url", "options", "message"), BAD_CALLS)
def test_bad_input_is_rejected_and_nothing_is_stored(
    stub_client: BackgroundHttpClient, url: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message) as raised:
        stub_client.post(url, **options)
    assert isinstance(raised.value, BghttpError)
    assert stored_files(stub_client) == []


def test_unknown_method(stub_client: BackgroundHttpClient) -> None:
    with pytest.raises(InvalidRequest, match="unknown method 'FETCH'"):
        stub_client.request("FETCH", URL)
    assert stored_files(stub_client) == []


UNSAFE_IDS = ["../x", "..", ".", "", "a/b", "x" * 129, "spa ce", "é", "a\x00b", "../../etc/passwd"]


@pytest.mark.parametrize("request_id", UNSAFE_IDS)
def test_unsafe_request_ids_are_rejected(stub_client: BackgroundHttpClient, request_id: str) -> None:
    with pytest.raises(InvalidRequestId):
        stub_client.get(URL, request_id=request_id)
    assert stored_files(stub_client) == []
    with pytest.raises(InvalidRequestId):
        stub_client.get_request_status(request_id)


def test_missing_multipart_file(stub_client: BackgroundHttpClient, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        stub_client.post_multipart(URL, files={"f": tmp_path / "absent.bin"})
    with pytest.raises(InvalidRequest, match="does not exist or is not a file"):
        stub_client.post_multipart(URL, files={"f": tmp_path})  # a directory
    assert stored_files(stub_client) == []


def test_multipart_and_data_do_not_mix(stub_client: BackgroundHttpClient, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="fields= and files="):
        stub_client.post(URL, data={"a": 1}, fields={"b": "c"})
    with pytest.raises(InvalidRequest, match="not data="):
        stub_client.request("POST", URL, data="x", multipart=True)
    assert stored_files(stub_client) == []


def test_a_good_request_is_stored_with_private_permissions(stub_client: BackgroundHttpClient) -> None:
    info = stub_client.post(URL, data={"a": 1}, headers={"Authorization": "Bearer s3cret"}, request_id="ok-1")
    assert info.request_file_path == stub_client.store.root / "requests" / "ok-1.json"
    for path in stub_client.store.root.rglob("*"):
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), path
    record = stub_client.get_request_status("ok-1")
    assert record is not None and record.phase.value == "queued" and record.max_retries == 0


def test_bad_settings_give_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="BGHTTP_BACKOFF_SCALE"):
        Settings.from_env({"BGHTTP_BACKOFF_SCALE": "fast"})
    with pytest.raises(ConfigError, match="BGHTTP_FSYNC"):
        Settings.from_env({"BGHTTP_FSYNC": "maybe"})
    settings = Settings.from_env({"BGHTTP_BACKOFF_SCALE": "0.5", "BGHTTP_CONNECTIVITY_PROBES": "tcp://a:1, http://b/"})
    assert settings.backoff_scale == 0.5
    assert settings.connectivity_probes == ("tcp://a:1", "http://b/")


def test_settings_survive_the_trip_through_the_environment(tmp_path: Path) -> None:
    settings = Settings(
        broker_url="local",
        store_dir=tmp_path,
        backoff_scale=0.25,
        max_response_bytes=10,
        fsync=False,
        egress_allow_networks=("10.0.0.0/8",),
        connectivity_probes=("tcp://a:1", "http://b/"),
        metrics_port=9191,
        log_level="DEBUG",
    )
    env = settings.to_env()
    assert env["BGHTTP_FSYNC"] == "0" and env["BGHTTP_CONNECTIVITY_PROBES"] == "tcp://a:1,http://b/"
    assert Settings.from_env(env) == settings
    assert Settings.from_env(Settings().to_env()) == Settings()
