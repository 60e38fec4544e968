"""Helpers for the message tests: settings with an events exchange of the test's own, and a queue bound to it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from typing import Any

import jsonschema
import pika

from bghttp import Settings
from tests.support import PROJECT_ROOT, RABBITMQ_URL

SCHEMAS = PROJECT_ROOT / "docs" / "schemas"


def schema_validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for ``docs/schemas/<name>.schema.json``, the published contract."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


EVENT_SCHEMA = schema_validator("event")


def with_own_exchange(settings: Settings) -> Settings:
    return dataclasses.replace(settings, events_exchange=f"{settings.queue_name}.events")


def remove_message_queues(settings: Settings) -> None:
    """Delete the events exchange (the queues are the ``rabbitmq_settings`` fixture's)."""
    with contextlib.suppress(Exception):
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        connection.channel().exchange_delete(settings.events_exchange)
        connection.close()


def submit_message(queue: str, spec: object, message_id: str | None = None) -> bytes:
    """A Dramatiq ``submit_request(spec)`` message body, as a producer in any language writes it."""
    envelope = {
        "queue_name": queue,
        "actor_name": "submit_request",
        "args": [spec],
        "kwargs": {},
        "options": {},
        "message_id": message_id or str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
    return json.dumps(envelope).encode()


class EventQueue:
    """An exclusive queue bound to the events exchange (``request.*``), read with basic_get."""

    def __init__(self, exchange: str, url: str = RABBITMQ_URL) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        self.queue = str(self.channel.queue_declare("", exclusive=True).method.queue)
        self.channel.queue_bind(self.queue, exchange, "request.*")
        self.received: list[tuple[str, dict[str, Any]]] = []

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        while True:
            method, _properties, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return self.received
            event = json.loads(body)
            EVENT_SCHEMA.validate(event)  # every event a test receives is as documented
            assert event["event_type"] == method.routing_key, event
            self.received.append((str(method.routing_key), event))

    def wait_for(self, count: int, timeout: float = 30.0) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while len(self.drain()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} events after {timeout}s: {self.received}")
            time.sleep(0.05)
        return self.received

    def publish(self, queue: str, body: bytes) -> None:
        self.channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()
