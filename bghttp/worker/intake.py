"""Submit by message: the ``submit_request`` actor, fed by producers in any language.

A producer publishes a plain Dramatiq message ``submit_request(spec)`` on the
queue ``<BGHTTP_QUEUE>.submit``; ``spec`` is a JSON object (the contract is
docs/messages.md). The intake validates it exactly as the client does
(:func:`bghttp.validation.prepare_request`), stores it and publishes its first
run through the client's one submit path (:mod:`bghttp.submission`), with
``on_conflict="return"``: the same ``request_id`` twice is one request. Without
a ``request_id`` the message's ``message_id`` is the ID, so a redelivered
message is still one request.

An invalid spec is not retried: it is acked, and a ``request.rejected`` event
with the reason goes to the events exchange. A store or broker outage raises
(Dramatiq retries the message; the submit is idempotent).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import CurrentMessage, Middleware

from ..broker import publish_request
from ..config import Settings
from ..core.urls import url_host
from ..errors import InvalidRequest, StoreError
from ..events import REJECTED, EventPublisher, rejected_event
from ..logs import get_logger
from ..quoting import quoted
from ..store import is_valid_request_id
from ..store_api import Store
from ..submission import Submission
from ..validation import PreparedRequest, check_metadata, prepare_request
from .process_store import process_store

SUBMIT_ACTOR_NAME = "submit_request"
ARITY = "submit_request takes exactly one argument, the request object (kwargs empty)"
BODY_KEYS = ("json", "text", "base64")
SPEC_KEYS = frozenset(
    {"method", "url", "headers", "query_parameters", "timeout", "retries", "request_id", "metadata", "on_complete"}
    | set(BODY_KEYS)
)


def submit_queue_name(settings: Settings) -> str:
    """The queue the ``submit_request`` messages travel on: ``<BGHTTP_QUEUE>.submit``."""
    return f"{settings.queue_name}.submit"


def parse_submit(spec: object, message_id: str, default_timeout: float) -> PreparedRequest:
    """The request a submit message's ``spec`` describes, validated as the client validates; else InvalidRequest."""
    if not isinstance(spec, Mapping):
        raise InvalidRequest(f"the message's one argument must be a JSON object, not {_json_type(spec)}")
    unknown = sorted(str(key) for key in spec if key not in SPEC_KEYS)
    if unknown:
        shown = ", ".join(quoted(name)[1:-1] for name in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise InvalidRequest(f"unknown field(s) {shown}; known: {', '.join(sorted(SPEC_KEYS))}")
    for required in ("method", "url"):
        if required not in spec:
            raise InvalidRequest(f"the field {required!r} is required")
    data, content_type = _body(spec)
    headers = spec.get("headers")
    if content_type is not None:
        headers = _with_content_type(headers, content_type)
    request_id = spec.get("request_id")
    if request_id is None and not is_valid_request_id(message_id):
        raise InvalidRequest(
            f"the message has no request_id, and its message_id {message_id[:140]!r} cannot be one"
            " (1-128 characters of A-Z a-z 0-9 . _ -): give a request_id"
        )
    return prepare_request(
        spec["method"],
        spec["url"],
        data=data,
        headers=headers,
        query_parameters=spec.get("query_parameters"),
        timeout=spec.get("timeout"),
        request_id=message_id if request_id is None else request_id,
        retries=spec.get("retries", 0),
        metadata=spec.get("metadata"),
        on_complete=spec.get("on_complete"),
        default_timeout=default_timeout,
    )


def _body(spec: Mapping[str, Any]) -> tuple[Any, str | None]:
    """``(data for prepare_request, a Content-Type it would not set itself)`` of the one body field."""
    given = [key for key in BODY_KEYS if key in spec]
    if len(given) > 1:
        raise InvalidRequest(f"give at most one body field of json, text, base64; got {', '.join(given)}")
    if not given:
        return None, None
    key, value = given[0], spec[given[0]]
    if key == "json":
        if isinstance(value, dict | list):
            return value, None  # encoded and typed by prepare_request, as the client's data=
        return _json_scalar(value), "application/json"
    if not isinstance(value, str):
        raise InvalidRequest(f"the field {key!r} must be a string, not {_json_type(value)}")
    if key == "text":
        return value, None
    try:
        return base64.b64decode(value, validate=True), None
    except (binascii.Error, ValueError):
        raise InvalidRequest("the field 'base64' is not valid base64") from None


def _json_scalar(value: object) -> bytes:
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise InvalidRequest(f"the field 'json' cannot be encoded as JSON: {error}") from None


def _with_content_type(headers: object, content_type: str) -> object:
    """``headers`` with Content-Type added unless they name one; malformed headers are left to validation."""
    if headers is None:
        return [("Content-Type", content_type)]
    if isinstance(headers, Mapping):
        if any(isinstance(name, str) and name.lower() == "content-type" for name in headers):
            return headers
        return [*headers.items(), ("Content-Type", content_type)]
    if isinstance(headers, list):
        named = any(
            isinstance(pair, list | tuple) and pair and isinstance(pair[0], str) and pair[0].lower() == "content-type"
            for pair in headers
        )
        return headers if named else [*headers, ("Content-Type", content_type)]
    return headers


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


class Intake:
    """Takes ``submit_request`` messages: submits valid ones, rejects the rest with an event."""

    def __init__(self, settings: Settings, broker: dramatiq.Broker) -> None:
        self.settings = settings
        self.broker = broker
        self.events = EventPublisher.for_broker(broker, settings)
        self._submission: Submission | None = None
        self._lock = threading.Lock()

    def submission(self) -> Submission:
        """The process's submit path, built on first use (after a worker fork)."""
        if self._submission is None:
            with self._lock:
                if self._submission is None:
                    store = process_store(self.settings)
                    publish_one = functools.partial(publish_request, self.broker, self.settings.queue_name)

                    def publish_many(messages: list[tuple[str, int]]) -> None:
                        for request_id, token in messages:
                            publish_one(request_id, token)

                    self._submission = Submission(store, "return", publish_one, publish_many)
        return self._submission

    def take(self, args: tuple[Any, ...], kwargs: dict[str, Any], message_id: str) -> None:
        log = get_logger(message_id=message_id)
        try:
            if kwargs or len(args) != 1:
                raise InvalidRequest(ARITY)
            prepared = parse_submit(args[0], message_id, self.settings.default_timeout)
        except InvalidRequest as error:
            self._reject(args, message_id, str(error), log)
            return
        submission = self.submission()
        info = submission.submit(prepared)
        if not _is_this_request(submission.store, prepared):
            # The ID was taken by another request: ours was not stored, and a silent
            # "one request" would leave its producer believing it ran.
            reason = (
                f"request_id {prepared.spec.request_id!r} exists with a different request"
                " (method, URL, headers, body or options differ); it was not submitted: use a new request_id"
            )
            self._reject(args, message_id, reason, log)
            return
        host = url_host(prepared.spec.url)
        log.info(
            "request_submitted_by_message",
            request_id=info.request_id,
            method=prepared.spec.method,
            host=host,
            status=info.status.value,
        )

    def _reject(self, args: tuple[Any, ...], message_id: str, reason: str, log: Any) -> None:
        spec = args[0] if len(args) == 1 and isinstance(args[0], Mapping) else {}
        given_id = spec.get("request_id")
        request_id = given_id if isinstance(given_id, str) else message_id
        try:
            metadata = check_metadata(spec.get("metadata"))
        except InvalidRequest:
            metadata = None
        # Not ``request_id=``: no request exists, and a log event naming one says its method and host.
        log.warning("submit_rejected", rejected_request_id=request_id, reason=reason)
        if self.events is not None:
            event = rejected_event(message_id, request_id, reason, metadata, time.time())
            self.events.publish(REJECTED, event)  # BrokerUnavailable: retried, same event_id


def _is_this_request(store: Store, prepared: PreparedRequest) -> bool:
    """False if the request stored under ``prepared``'s ID is a different one (a redelivery is the same).

    What the producer chose is compared, not what the submit adds (creation time,
    generation, trace context). When the stored request cannot be read, it is
    taken as the same: the submit's own "one request per ID" stands.
    """
    mine = prepared.spec
    try:
        stored = store.load_request(mine.request_id)
        if stored is None:
            return True  # removed meanwhile: nothing to tell apart
        same = (
            (stored.method, stored.url, [tuple(pair) for pair in stored.headers], stored.timeout)
            == (mine.method, mine.url, [tuple(pair) for pair in mine.headers], mine.timeout)
            and (stored.max_retries, stored.metadata, stored.on_complete, stored.has_body)
            == (mine.max_retries, mine.metadata, mine.on_complete, mine.has_body)
        )
        return same and (not mine.has_body or store.read_request_body(mine.request_id) == prepared.body)
    except (StoreError, ValueError):
        return True


class SubmitEnvelopeCheck(Middleware):
    """Makes a submit message whose ``kwargs`` is not an object one the actor can be called with (and refuses).

    Dramatiq decodes ``"kwargs": null`` (or a list, a string) but then cannot
    call the actor with it: a TypeError before any bghttp code runs, retried with
    a traceback each time, then dead-lettered with no event (and logging the
    message itself fails on it). Wrapped as ``kwargs={"kwargs": <it>}``, it reaches
    the intake, which refuses it as it refuses any message with keyword arguments:
    one ``request.rejected`` event, acked.
    """

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if message.actor_name == SUBMIT_ACTOR_NAME and not isinstance(message.kwargs, dict):
            # The proxy's message is frozen; its replacement is what Dramatiq calls and acks.
            message._message = message._message.copy(kwargs={"kwargs": message.kwargs})


def declare_intake_actor(broker: dramatiq.Broker, settings: Settings) -> dramatiq.Actor[..., None]:
    """Declare ``submit_request`` on ``<BGHTTP_QUEUE>.submit``: the worker then consumes that queue too."""
    intake = Intake(settings, broker)
    broker.add_middleware(SubmitEnvelopeCheck())

    def submit_request(*args: Any, **kwargs: Any) -> None:
        message = CurrentMessage.get_current_message()
        message_id = message.message_id if message is not None else uuid.uuid4().hex
        intake.take(args, kwargs, message_id)

    return dramatiq.Actor(
        submit_request,
        broker=broker,
        actor_name=SUBMIT_ACTOR_NAME,
        queue_name=submit_queue_name(settings),
        priority=0,
        options={},
    )


__all__ = [
    "SUBMIT_ACTOR_NAME",
    "Intake",
    "SubmitEnvelopeCheck",
    "declare_intake_actor",
    "parse_submit",
    "submit_queue_name",
]
