"""``json=`` as an explicit JSON body, and the "did you mean" hints the CLI gives, in the Python API too."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

from bghttp import AsyncBackgroundHttpClient, BackgroundHttpClient, BulkRequest, InvalidRequest, Settings
from bghttp.cli.input import UsageError, request_options

URL = "http://127.0.0.1:9/x"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store_dir=tmp_path / "store", queue_name="unit", fsync=False)


@pytest.fixture
def client(settings: Settings) -> Iterator[BackgroundHttpClient]:
    with BackgroundHttpClient(settings, broker=StubBroker()) as made:
        yield made


def sent(client: BackgroundHttpClient, request_id: str) -> tuple[bytes, str | None]:
    """The stored body and Content-Type of a request."""
    spec = client.store.load_request(request_id)
    assert spec is not None
    content_type = next((value for name, value in spec.headers if name.lower() == "content-type"), None)
    return client.store.read_request_body(request_id), content_type


@pytest.mark.parametrize(
    ("value", "body"),
    [({"n": 1, "é": [True, None]}, '{"n": 1, "é": [true, null]}'), ([1, 2], "[1, 2]"), ("text", '"text"'),
     (7, "7"), (2.5, "2.5"), (False, "false")],
)  # fmt: skip
def test_json_sends_any_json_value_as_json(client: BackgroundHttpClient, value: Any, body: str) -> None:
    info = client.post(URL, json=value)
    assert sent(client, info.request_id) == (body.encode(), "application/json")
    assert json.loads(body) == value


def test_a_content_type_given_wins_over_json_s(client: BackgroundHttpClient) -> None:
    info = client.put(URL, json={"a": 1}, headers={"Content-Type": "application/merge-patch+json"})
    assert sent(client, info.request_id) == (b'{"a": 1}', "application/merge-patch+json")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"json": {"a": 1}, "data": b"x"}, "give data= or json=, not both"),
        ({"json": float("nan")}, "json cannot be encoded as JSON"),
        ({"json": {"a": object()}}, "json cannot be encoded as JSON"),
        ({"json": {1, 2}}, "json cannot be encoded as JSON"),
    ],
)
def test_bad_json_is_one_line_and_stores_nothing(
    client: BackgroundHttpClient, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message) as raised:
        client.post(URL, **options)
    assert "\n" not in str(raised.value)
    with pytest.raises(InvalidRequest, match="not json="):
        client.post_multipart(URL, fields={"a": "1"}, json={"a": 1})
    assert client.list() == []


def test_json_in_bulk_and_async(settings: Settings, client: BackgroundHttpClient) -> None:
    infos = client.submit_many(
        [BulkRequest("POST", URL, json={"a": 1}, request_id="b1"),
         {"method": "POST", "url": URL, "json": [2], "request_id": "b2"}]
    )  # fmt: skip
    assert [sent(client, info.request_id) for info in infos] == [
        (b'{"a": 1}', "application/json"), (b"[2]", "application/json")
    ]
    with pytest.raises(InvalidRequest, match="not both"):
        client.submit_many([{"method": "POST", "url": URL, "json": [2], "data": b"x"}])

    async def scenario() -> str:
        async with AsyncBackgroundHttpClient(client=client) as aclient:
            with pytest.raises(InvalidRequest, match="not both"):
                await aclient.post(URL, json=1, data="1")
            return (await aclient.patch(URL, json={"b": 2})).request_id

    request_id = asyncio.run(scenario())
    assert sent(client, request_id) == (b'{"b": 2}', "application/json")


@pytest.mark.parametrize(
    ("keyword", "hint"),
    [("params", "query_parameters="), ("query", "query_parameters="), ("body", "data= or json="),
     ("header", "headers="), ("max_retries", "retries="), ("timout", "timeout=")],
)  # fmt: skip
def test_a_wrong_keyword_gets_a_did_you_mean_in_every_api(
    settings: Settings, client: BackgroundHttpClient, keyword: str, hint: str
) -> None:
    expected = rf"unknown keyword {keyword}=; did you mean {hint}"
    with pytest.raises(InvalidRequest, match=expected):
        client.get(URL, **{keyword: {"a": "1"}})  # type: ignore[misc]
    with pytest.raises(InvalidRequest, match=expected):
        client.request("GET", URL, **{keyword: {"a": "1"}})  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match=expected):
        client.submit_many([{"method": "GET", "url": URL, keyword: {"a": "1"}}])  # type: ignore[misc]
    with pytest.raises(InvalidRequest, match=expected):
        BulkRequest("GET", URL, **{keyword: {"a": "1"}})  # type: ignore[arg-type]

    async def scenario() -> None:
        async with AsyncBackgroundHttpClient(client=client) as aclient:
            with pytest.raises(InvalidRequest, match=expected):
                await aclient.get(URL, **{keyword: {"a": "1"}})  # type: ignore[misc]

    asyncio.run(scenario())
    assert client.list() == []


def test_an_unknown_keyword_without_a_near_name_lists_the_known_ones(client: BackgroundHttpClient) -> None:
    with pytest.raises(InvalidRequest, match=r"unknown keyword color=; known: .*query_parameters"):
        client.get(URL, color="red")  # type: ignore[call-arg]


@pytest.mark.parametrize("url", ["example.com/path?q=1", "api.example.com", "localhost:8080/x"])
def test_a_url_without_a_scheme_gets_the_clis_hint(client: BackgroundHttpClient, url: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        client.get(url)
    args = type("Args", (), {"url": url})()
    with pytest.raises(UsageError) as cli_raised:
        request_options(args)  # type: ignore[arg-type]
    assert str(raised.value) == str(cli_raised.value)
    assert f"did you mean https://{url} ?" in str(raised.value)
    assert client.list() == []


@pytest.mark.parametrize(
    ("url", "meant"),
    [
        ("//user:s3cret@example.com/x", "https://user:[REDACTED]@example.com/x"),
        ("http:/user:s3cret@example.com/x", "http://user:[REDACTED]@example.com/x"),
        ("https:user:s3cret@example.com/x", "https://user:[REDACTED]@example.com/x"),
        ("http:example.com/x", "http://example.com/x"),
        ("user:s3cret@example.com/x", "https://user:[REDACTED]@example.com/x"),
        # Seen: "did you mean https://http//example.com/x ?" for a scheme that lost its colon.
        ("http//example.com/x", "http://example.com/x"),
        ("HTTPS//user:s3cret@example.com/x", "https://user:[REDACTED]@example.com/x"),
        ("httpbin.org/get", "https://httpbin.org/get"),  # a host that starts with "http" is a host
    ],
)
def test_a_url_with_a_broken_scheme_gets_a_hint_without_its_password(
    client: BackgroundHttpClient, url: str, meant: str
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        client.get(url)
    args = type("Args", (), {"url": url})()
    with pytest.raises(UsageError) as cli_raised:
        request_options(args)  # type: ignore[arg-type]
    assert str(raised.value) == str(cli_raised.value)
    assert "s3cret" not in str(raised.value)
    assert str(raised.value).endswith(f"did you mean {meant} ?"), str(raised.value)
    assert client.list() == []


@pytest.mark.parametrize("url", ["http://u:s3cr/et@example.com/x", "http://u:s3c?ret@example.com/", "http://u:s3c#ret@h/"])
def test_a_password_with_an_unencoded_delimiter_is_not_printed(client: BackgroundHttpClient, url: str) -> None:
    """urllib ends the authority at the password's '/', '?' or '#' and quotes the rest as a port."""
    with pytest.raises(InvalidRequest) as raised:
        client.get(url)

    assert "s3c" not in str(raised.value), str(raised.value)
    assert "[REDACTED]" in str(raised.value), str(raised.value)
    assert client.list() == []
