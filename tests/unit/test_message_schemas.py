"""The published JSON Schemas (docs/schemas/) agree with the documented examples and with the intake's validation."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from bghttp.errors import InvalidRequest
from bghttp.events import final_event, rejected_event
from bghttp.worker.intake import parse_submit
from tests.messaging import EVENT_SCHEMA, schema_validator
from tests.support import PROJECT_ROOT
from tests.unit.test_events import finished

SUBMIT_SCHEMA = schema_validator("submit_request")
PAGE = (PROJECT_ROOT / "docs" / "messages.md").read_text()

ACCEPTED: list[dict[str, Any]] = [
    {"method": "GET", "url": "http://service.test/"},
    {"method": "post", "url": "https://service.test/orders", "json": None, "retries": 10, "timeout": 0.5},
    {"method": "PUT", "url": "http://service.test/", "headers": [["X-A", "1"], ["X-A", "2"]], "text": "x"},
    {"method": "PATCH", "url": "http://service.test/", "headers": {"X-A": "1"}, "base64": "AAE=",
     "query_parameters": {"tag": ["a", 1, True], "page": 2}, "request_id": "order-7",
     "metadata": {"order_id": "7"}, "on_complete": {"queue": "orders", "actor": "http_done"}},
]  # fmt: skip
REFUSED: list[dict[str, Any]] = [
    {"url": "http://service.test/"},
    {"method": "GET"},
    {"method": "FETCH", "url": "http://service.test/"},
    {"method": "GET", "url": "ftp://service.test/"},
    {"method": "GET", "url": "http://service.test/", "data": "x"},
    {"method": "POST", "url": "http://service.test/", "json": 1, "text": "x"},
    {"method": "GET", "url": "http://service.test/", "retries": 11},
    {"method": "GET", "url": "http://service.test/", "timeout": 0},
    {"method": "GET", "url": "http://service.test/", "request_id": "a/b"},
    {"method": "GET", "url": "http://service.test/", "headers": {"X-A": 1}},
    {"method": "GET", "url": "http://service.test/", "metadata": []},
    {"method": "GET", "url": "http://service.test/", "on_complete": {"queue": "q"}},
]


def json_blocks() -> list[Any]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", PAGE, re.S)]


def test_the_documented_examples_follow_the_schemas() -> None:
    envelope, event = json_blocks()
    assert envelope["actor_name"] == "submit_request" and len(envelope["args"]) == 1
    SUBMIT_SCHEMA.validate(envelope["args"][0])
    parse_submit(envelope["args"][0], envelope["message_id"], default_timeout=60.0)
    EVENT_SCHEMA.validate(event)


@pytest.mark.parametrize("spec", ACCEPTED)
def test_what_the_schema_accepts_the_intake_accepts(spec: dict[str, Any]) -> None:
    SUBMIT_SCHEMA.validate(spec)
    parse_submit(spec, "message-1", default_timeout=60.0)


@pytest.mark.parametrize("spec", REFUSED)
def test_what_the_schema_refuses_the_intake_refuses(spec: dict[str, Any]) -> None:
    assert not SUBMIT_SCHEMA.is_valid(spec)
    with pytest.raises(InvalidRequest):
        parse_submit(spec, "message-1", default_timeout=60.0)


def test_every_kind_of_event_follows_the_schema() -> None:
    EVENT_SCHEMA.validate(final_event(finished(), None))
    EVENT_SCHEMA.validate(rejected_event("m-1", "m-1", "the field 'url' is required", None, 1.0))
    missing = final_event(finished(), None)
    del missing["event_id"]
    assert not EVENT_SCHEMA.is_valid(missing)
