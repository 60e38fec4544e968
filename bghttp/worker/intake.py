"""Submit by message: the ``submit_request`` actor, fed by producers in any language.

A producer publishes a plain Dramatiq message ``submit_request(spec)`` on the
queue ``<BGHTTP_QUEUE>.submit``; ``spec`` is a JSON object (the contract is
docs/messages.md). The intake validates it exactly as the client does
(:func:`bghttp.validation.prepare_request`), stores it and publishes its first
run through the client's one submit path (:mod:`bghttp.submission`), with
``on_conflict="return"``: the same request twice under one ``request_id`` is one
request, and a different request under a taken ``request_id`` is rejected (the
client's comparison and words: it raises ``RequestExists`` there). Without a
``request_id`` the message's ``message_id`` is the ID, so a redelivered message
is still one request.

An invalid spec is not retried: it is acked, and a ``request.rejected`` event
with the reason goes to the events exchange. A store or broker outage raises
(Dramatiq retries the message; the submit is idempotent).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.common import dq_name
from dramatiq.middleware import CurrentMessage, Middleware

from ..broker import SUBMIT_QUEUE_SUFFIX, BghttpRabbitmqBroker, publish_request
from ..config import Settings
from ..core.urls import url_host
from ..errors import InvalidRequest, RequestExists
from ..events import REJECTED, EventPublisher, rejected_event
from ..logs import get_logger
from ..quoting import quoted
from ..store import is_valid_request_id
from ..submission import Submission
from ..validation import JSON_NULL, PreparedRequest, check_metadata, prepare_request
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
    return f"{settings.queue_name}{SUBMIT_QUEUE_SUFFIX}"


def parse_submit(
    spec: object, message_id: str, default_timeout: float, *, max_body: int | None = None
) -> PreparedRequest:
    """The request a submit message's ``spec`` describes, validated as the client validates; else InvalidRequest.

    A body over ``max_body`` bytes (``BGHTTP_MAX_SUBMIT_BODY``) is refused, a
    ``base64`` or ``text`` one before it is decoded or encoded.
    """
    if not isinstance(spec, Mapping):
        raise InvalidRequest(f"the message's one argument must be a JSON object, not {_json_type(spec)}")
    unknown = sorted(str(key) for key in spec if key not in SPEC_KEYS)
    if unknown:
        shown = ", ".join(quoted(name)[1:-1] for name in unknown[:3]) + (", ..." if len(unknown) > 3 else "")
        raise InvalidRequest(f"unknown field(s) {shown}; known: {', '.join(sorted(SPEC_KEYS))}")
    for required in ("method", "url"):
        if required not in spec:
            raise InvalidRequest(f"the field {required!r} is required")
    body = _body(spec, max_body)
    request_id = spec.get("request_id")
    if request_id is None and not is_valid_request_id(message_id):
        raise InvalidRequest(
            f"the message has no request_id, and its message_id {message_id[:140]!r} cannot be one"
            " (1-128 characters of A-Z a-z 0-9 . _ -): give a request_id"
        )
    prepared = prepare_request(
        spec["method"],
        spec["url"],
        **body,
        headers=spec.get("headers"),
        query_parameters=spec.get("query_parameters"),
        timeout=spec.get("timeout"),
        request_id=message_id if request_id is None else request_id,
        retries=spec.get("retries", 0),
        metadata=spec.get("metadata"),
        on_complete=spec.get("on_complete"),
        default_timeout=default_timeout,
    )
    if max_body is not None and prepared.body is not None and len(prepared.body) > max_body:
        raise _body_too_large(f"the body is {len(prepared.body)} bytes", max_body)
    return prepared


def _body_too_large(what: str, max_body: int) -> InvalidRequest:
    return InvalidRequest(
        f"{what}, over BGHTTP_MAX_SUBMIT_BODY={max_body} bytes (the largest body a submit message may carry):"
        " submit a bigger body with the client (Python API or CLI), which stores it without a message"
    )


def _body(spec: Mapping[str, Any], max_body: int | None = None) -> dict[str, Any]:
    """The body keyword of ``prepare_request`` for the one body field: ``json=`` (any JSON value) or ``data=``.

    A ``text`` or ``base64`` body over ``max_body`` is refused before it is encoded or decoded.
    """
    given = [key for key in BODY_KEYS if key in spec]
    if len(given) > 1:
        raise InvalidRequest(f"give at most one body field of json, text, base64; got {', '.join(given)}")
    if not given:
        return {}
    key, value = given[0], spec[given[0]]
    if key == "json":
        # Encoded and typed (application/json) by prepare_request, as the client's json=; null is a value here.
        return {"json": JSON_NULL if value is None else value}
    if not isinstance(value, str):
        raise InvalidRequest(f"the field {key!r} must be a string, not {_json_type(value)}")
    if max_body is not None and key == "text" and len(value) > max_body:  # UTF-8 has at least a byte a character
        raise _body_too_large(f"the text body is at least {len(value)} bytes", max_body)
    if key == "text":
        return {"data": value}
    if max_body is not None and len(value) > 4 * -(-max_body // 3):  # refused before decoding
        raise _body_too_large(f"the base64 body decodes to about {len(value) // 4 * 3} bytes", max_body)
    try:
        return {"data": base64.b64decode(value, validate=True)}
    except (binascii.Error, ValueError):
        raise InvalidRequest("the field 'base64' is not valid base64") from None


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

                    self._submission = Submission(
                        store, "return", publish_one, publish_many, queue=self.settings.queue_name
                    )
        return self._submission

    def take(self, args: tuple[Any, ...], kwargs: dict[str, Any], message_id: str) -> None:
        log = get_logger(message_id=message_id)
        oversized = kwargs.get(OVERSIZED) if not args and len(kwargs) == 1 else None
        if isinstance(oversized, dict):
            size, queue = oversized.get("bytes"), oversized.get("queue")
            if queue in (None, submit_queue_name(self.settings), dq_name(submit_queue_name(self.settings))):
                what = f"the message is {size} bytes, more than such a body takes in base64 (not decoded)"
                reason = str(_body_too_large(what, self.settings.max_submit_body))
            else:
                reason = (
                    f"the message is {size} bytes, more than the {ENVELOPE_ALLOWANCE} a message on queue "
                    f"{queue} may be (not decoded): submit messages go to {submit_queue_name(self.settings)}, "
                    f"where a body may be BGHTTP_MAX_SUBMIT_BODY={self.settings.max_submit_body} bytes"
                )
            given = oversized.get("request_id")
            self._reject(({"request_id": given},) if isinstance(given, str) else (), message_id, reason, log)
            return
        try:
            if kwargs or len(args) != 1:
                raise InvalidRequest(ARITY)
            prepared = parse_submit(
                args[0], message_id, self.settings.default_timeout, max_body=self.settings.max_submit_body
            )
        except InvalidRequest as error:
            self._reject(args, message_id, str(error), log)
            return
        try:
            info = self.submission().submit(prepared)
        except RequestExists as error:
            if not error.differences:
                raise  # the ID keeps changing hands: retried, as a store outage is
            # The ID was taken by another request: ours was not stored, and a silent
            # "one request" would leave its producer believing it ran.
            self._reject(args, message_id, str(error), log)
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


#: Room a submit message may take beyond its base64 body (method, URL, headers, metadata, envelope).
ENVELOPE_ALLOWANCE = 1024 * 1024
#: The keyword argument an oversized message reaches the actor with, instead of its contents.
OVERSIZED = "__bghttp_oversized_message__"
_MESSAGE_ID = re.compile(rb'"message_id"\s*:\s*"([A-Za-z0-9._:-]{1,128})"')
_REQUEST_ID = re.compile(rb'"request_id"\s*:\s*"([A-Za-z0-9._-]{1,128})"')


def max_message_bytes(settings: Settings) -> int:
    """The largest submit message decoded at all: a ``BGHTTP_MAX_SUBMIT_BODY`` body in base64, plus the rest."""
    return 4 * -(-settings.max_submit_body // 3) + ENVELOPE_ALLOWANCE


class OversizedMessage:
    """A submit message too big to decode, read as it streams in: only the IDs its refusal names are kept.

    ``feed`` takes its bytes in pieces (pika's body frames), ``stand_in`` gives
    the small Dramatiq message the actor refuses (one ``request.rejected``). JSON
    escapes every quote inside a string, so ``"message_id": "…"`` only matches a
    key: the last ``message_id`` (Dramatiq writes the envelope's after ``args``)
    and the first ``request_id`` are taken.
    """

    #: Bytes of one piece kept for the next, so an ID split between two pieces is still found.
    OVERLAP = 256

    def __init__(self) -> None:
        self.size = 0
        self.message_id: str | None = None
        self.request_id: str | None = None
        self._tail = b""

    def feed(self, piece: bytes) -> None:
        self.size += len(piece)
        window = self._tail + piece
        for found in _MESSAGE_ID.finditer(window):
            self.message_id = found.group(1).decode()
        if self.request_id is None and (found_request := _REQUEST_ID.search(window)) is not None:
            self.request_id = found_request.group(1).decode()
        self._tail = window[-self.OVERLAP :]

    def stand_in(self, queue_name: str) -> bytes:
        envelope: dict[str, Any] = {
            "queue_name": queue_name,
            "actor_name": SUBMIT_ACTOR_NAME,
            "args": [],
            "kwargs": {OVERSIZED: {"bytes": self.size, "request_id": self.request_id, "queue": queue_name}},
            "options": {},
            "message_id": self.message_id or uuid.uuid4().hex,
            "message_timestamp": int(time.time() * 1000),
        }
        return json.dumps(envelope).encode()


def oversized_message(queue_name: str, raw: bytes) -> bytes:
    """The stand-in for ``raw``, a whole submit message too big to decode (see :class:`OversizedMessage`)."""
    message = OversizedMessage()
    for start in range(0, len(raw), 1024 * 1024):
        message.feed(raw[start : start + 1024 * 1024])
    return message.stand_in(queue_name)


#: Submit messages a worker process holds at once (each as big as ``BGHTTP_MAX_SUBMIT_BODY``
#: in base64, or bigger until refused); the work queue's prefetch is hundreds.
SUBMIT_PREFETCH = 1
#: Delayed submit messages (Dramatiq's retries after a store or broker outage) held at
#: once: a few, so one far from due does not hold back the others. Each is within the limit.
SUBMIT_DELAY_PREFETCH = 4


class SubmitPrefetch(Middleware):
    """Bounds the submit queue's prefetch, so the intake's memory is bounded whatever arrives.

    Dramatiq gives every queue's consumer the work queue's prefetch (hundreds of
    messages), and RabbitMQ delivers that many at once: 8 submit messages of
    48 MiB took a worker from 45 to 867 MiB. A prefetch of one per process means
    one such message in memory (a body over the limit is refused before its base64
    is decoded); AMQP has no prefetch by bytes that RabbitMQ honours.
    """

    def __init__(self, settings: Settings) -> None:
        self.queue = submit_queue_name(settings)

    def after_consumer_thread_boot(self, broker: dramatiq.Broker, thread: Any) -> None:
        # In the consumer thread, before it consumes: the prefetch it asks RabbitMQ for.
        if thread.queue_name == self.queue:
            thread.prefetch = SUBMIT_PREFETCH
        elif thread.queue_name == dq_name(self.queue):
            thread.prefetch = min(thread.prefetch, SUBMIT_DELAY_PREFETCH)


def declare_intake_actor(broker: dramatiq.Broker, settings: Settings) -> dramatiq.Actor[..., None]:
    """Declare ``submit_request`` on ``<BGHTTP_QUEUE>.submit``: the worker then consumes that queue too."""
    intake = Intake(settings, broker)
    broker.add_middleware(SubmitEnvelopeCheck())
    broker.add_middleware(SubmitPrefetch(settings))
    if isinstance(broker, BghttpRabbitmqBroker):
        # A message too big to carry an allowed body is refused without being decoded.
        submit_queue = submit_queue_name(settings)
        for queue in (submit_queue, dq_name(submit_queue)):
            broker.limit_messages(queue, max_message_bytes(settings), OversizedMessage)
        # The work queue and its delays carry bghttp's own small messages (an ID and a token), and are
        # prefetched by the hundred: Dramatiq finds an actor by its name whatever the queue, so a submit
        # message published there by mistake ran from it, unbounded. A big one is refused as it streams in.
        for queue in (settings.queue_name, dq_name(settings.queue_name)):
            broker.limit_messages(queue, ENVELOPE_ALLOWANCE, OversizedMessage)

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
    "OversizedMessage",
    "SubmitEnvelopeCheck",
    "SubmitPrefetch",
    "declare_intake_actor",
    "parse_submit",
    "submit_queue_name",
]
