"""The submit message's request object (``bghttp.worker.intake.parse_submit``): validated as the client validates."""

from __future__ import annotations

import base64
import json
from typing import Any

import dramatiq
import pytest

from bghttp.errors import InvalidRequest
from bghttp.worker.intake import OVERSIZED, OversizedMessage, oversized_message, parse_submit
from tests.messaging import submit_message

URL = "http://service.test/orders"


def parse(spec: object, message_id: str = "msg-1") -> Any:
    return parse_submit(spec, message_id, default_timeout=60.0)


def test_a_full_request_object() -> None:
    prepared = parse({
        "method": "post", "url": URL, "headers": [["X-Trace", "1"], ["X-Trace", "2"]],
        "query_parameters": {"tag": ["a", "b"]}, "json": {"order": 7}, "timeout": 5, "retries": 3,
        "request_id": "order-7", "metadata": {"order_id": "7"}, "on_complete": {"queue": "svc", "actor": "done"},
    })

    spec = prepared.spec
    assert (spec.request_id, spec.method, spec.url) == ("order-7", "POST", URL + "?tag=a&tag=b")
    assert spec.headers == [("X-Trace", "1"), ("X-Trace", "2"), ("Content-Type", "application/json")]
    assert (spec.timeout, spec.max_retries) == (5.0, 3)
    assert spec.metadata == {"order_id": "7"} and spec.on_complete == {"queue": "svc", "actor": "done"}
    assert prepared.body == b'{"order": 7}'


def test_without_a_request_id_the_message_id_is_the_id() -> None:
    assert parse({"method": "GET", "url": URL}, "3b1f-message").spec.request_id == "3b1f-message"


def test_a_message_id_that_cannot_be_a_request_id_is_refused_saying_so() -> None:
    # Producers in other languages often write "urn:uuid:...": the reason must not blame a request_id never given.
    with pytest.raises(InvalidRequest) as refused:
        parse({"method": "GET", "url": URL}, "urn:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427")
    assert "no request_id" in str(refused.value) and "give a request_id" in str(refused.value)


@pytest.mark.parametrize(
    ("body", "data", "content_type"),
    [
        ({"json": "just a string"}, b'"just a string"', "application/json"),
        ({"json": 7}, b"7", "application/json"),
        ({"json": None}, b"null", "application/json"),  # null is a JSON value, not "no body"
        ({"json": [1, 2]}, b"[1, 2]", "application/json"),
        ({"text": "héllo"}, "héllo".encode(), "text/plain; charset=utf-8"),
        ({"base64": base64.b64encode(b"\x00\xffbytes").decode()}, b"\x00\xffbytes", "application/octet-stream"),
    ],
)
def test_bodies(body: dict[str, Any], data: bytes, content_type: str) -> None:
    prepared = parse({"method": "POST", "url": URL, **body})

    assert prepared.body == data
    assert ("Content-Type", content_type) in prepared.spec.headers


def test_a_content_type_given_wins() -> None:
    prepared = parse({"method": "POST", "url": URL, "headers": {"content-type": "application/x-ndjson"}, "json": 1})

    assert prepared.spec.headers == [("content-type", "application/x-ndjson")]


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("GET http://x/", "must be a JSON object, not a string"),
        ([{"method": "GET"}], "must be a JSON object, not an array"),
        ({"url": URL}, "'method' is required"),
        ({"method": "GET"}, "'url' is required"),
        ({"method": "GET", "url": URL, "data": "x"}, "unknown field(s) data"),
        ({"method": "POST", "url": URL, "json": 1, "text": "x"}, "at most one body field"),
        ({"method": "POST", "url": URL, "text": 5}, "'text' must be a string"),
        ({"method": "POST", "url": URL, "base64": "not base64!"}, "not valid base64"),
        ({"method": "POST", "url": URL, "json": float("nan")}, "cannot be encoded as JSON"),
        ({"method": "FETCH", "url": URL}, "unknown method"),
        ({"method": "GET", "url": "ftp://x/"}, "scheme must be http or https"),
        ({"method": "GET", "url": URL, "retries": 11}, "retries must be"),
        ({"method": "GET", "url": URL, "timeout": "5"}, "timeout must be"),
        # JSON integers have no size limit; 1e400 written out must not crash the actor (a retry loop).
        ({"method": "GET", "url": URL, "timeout": 10**400}, "timeout must be at most"),
        ({"method": "GET", "url": URL, "request_id": "../etc"}, "request"),
        ({"method": "GET", "url": URL, "headers": {"X-A": 1}}, "string value"),
        ({"method": "GET", "url": URL, "metadata": ["x"]}, "metadata must be a JSON object"),
        ({"method": "GET", "url": URL, "metadata": {"k": "v" * 5000}}, "at most 4096"),
        ({"method": "GET", "url": URL, "metadata": {"k": json.loads("[" * 32 + "]" * 32)}}, "32 deep"),
        ({"method": "GET", "url": URL, "on_complete": {"queue": "q"}}, "on_complete"),
        ({"method": "GET", "url": URL, "on_complete": {"queue": "q", "actor": "no spaces"}}, "actor name"),
    ],
)
def test_invalid_request_objects_are_refused_with_the_reason(spec: object, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=None) as refused:
        parse(spec)
    assert reason in str(refused.value)


@pytest.mark.parametrize(
    "spec",
    [
        {"method": "GET", "url": URL, "request_id": "x" * 100_000},
        {"method": "GET", "url": URL, "request_id": ["x" * 100_000]},
        {"method": "GET", "url": URL, **{f"field{n}-" + "z" * 10_000: 1 for n in range(20)}},
        {"method": "GET", "url": "ftp" + "x" * 100_000 + "://service.test/"},
    ],
)
def test_a_huge_value_gives_a_short_reason(spec: dict[str, Any]) -> None:
    # The reason goes into the worker's log and the request.rejected event: it must stay a line.
    with pytest.raises(InvalidRequest) as refused:
        parse(spec)
    assert len(str(refused.value)) < 500


# ----------------------------------------------------------- BGHTTP_MAX_SUBMIT_BODY
def _spec(**body: object) -> dict[str, object]:
    return {"method": "POST", "url": "http://service.test/x", **body}


@pytest.mark.parametrize(
    "body",
    [
        {"base64": base64.b64encode(b"x" * 1001).decode()},
        {"text": "é" * 501},  # 1,002 bytes of UTF-8
        {"text": "x" * 1001},
        {"json": {"a": "x" * 1000}},
    ],
)
def test_a_body_over_the_limit_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest, match="BGHTTP_MAX_SUBMIT_BODY=1000"):
        parse_submit(_spec(**body), "m1", 60.0, max_body=1000)


def test_a_body_at_the_limit_is_taken() -> None:
    prepared = parse_submit(_spec(base64=base64.b64encode(b"x" * 1000).decode()), "m1", 60.0, max_body=1000)
    assert prepared.body == b"x" * 1000


def test_an_oversized_message_becomes_a_small_one_the_intake_refuses_with_its_ids() -> None:
    raw = submit_message("q.submit", _spec(request_id="big-1", base64="QUJD" * 1000), message_id="mid-7")
    stand_in = dramatiq.Message.decode(oversized_message("q.submit", raw))

    assert (stand_in.actor_name, stand_in.args, stand_in.message_id) == ("submit_request", (), "mid-7")
    assert stand_in.kwargs == {OVERSIZED: {"bytes": len(raw), "request_id": "big-1", "queue": "q.submit"}}
    assert len(oversized_message("q.submit", raw)) < 1000
    # Read in pieces (pika's frames) whatever where they split, the IDs are found.
    for piece in (7, 100, 1001):
        streamed = OversizedMessage()
        for start in range(0, len(raw), piece):
            streamed.feed(raw[start : start + piece])
        assert (streamed.size, streamed.message_id, streamed.request_id) == (len(raw), "mid-7", "big-1")
