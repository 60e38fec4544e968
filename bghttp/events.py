"""Final-status events: what a request's outcome looks like as a message, and publishing it.

When a request becomes final, an event goes to the topic exchange
``Settings.events_exchange`` (``bghttp.events``) with the routing key
``request.completed``, ``request.failed`` or ``request.cancelled``; the intake
publishes ``request.rejected`` for a submit message it cannot accept. The body
is JSON (see :func:`final_event`; the contract is docs/messages.md).

At least once: an event is published with publisher confirms *after* the final
status is durable, and the worker acks the message that ran the request only
after the confirm. A crash in between gives the message back, and the next
worker that meets the finished request with that message publishes the event
again. ``event_id`` is the same every time one final outcome is published
(:func:`event_id`), so consumers deduplicate by it; a later outcome of the same
request (a replay) has another.

A request with ``on_complete={"queue": q, "actor": a}`` also gets the event as a
Dramatiq message ``a(event)`` on queue ``q`` (its ``message_id`` is the event's).
Only RabbitMQ brokers publish events: the local mode has no exchange
(:meth:`EventPublisher.for_broker` gives None).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from .broker import BROKER_ERRORS, BghttpRabbitmqBroker, broker_unavailable
from .config import Settings
from .logs import get_logger
from .models import RequestStatus, StatusRecord
from .store_api import Store

#: The routing key of each final status's event.
ROUTING_KEYS: dict[RequestStatus, str] = {
    RequestStatus.COMPLETED: "request.completed",
    RequestStatus.FAILED: "request.failed",
    RequestStatus.CANCELLED: "request.cancelled",
}
REJECTED = "request.rejected"
#: Namespace of the name-based UUIDs that ``event_id`` is.
EVENT_NAMESPACE = uuid.UUID("5d3c8f0e-6a53-4c1c-9a55-2d1b8f7e4a10")
#: Publishes tried, each on a fresh connection after a failure (a stale connection is common).
PUBLISH_ATTEMPTS = 2


def event_id(record: StatusRecord) -> str:
    """The ID of ``record``'s final event: the same whenever this outcome is published again.

    Derived from what one final outcome never changes (an attempt that ends after a
    cancel amends the record, but not these): the request and its generation, the
    final status, the attempts made and when the request became final. A replay of
    the request ends with more attempts and another ``completed_at``: another ID.
    """
    name = "|".join(
        (
            record.request_id,
            record.generation,
            record.status.value,
            str(record.attempt_count),
            repr(record.completed_at),
        )
    )
    return str(uuid.uuid5(EVENT_NAMESPACE, name))


def final_event(record: StatusRecord, response_file_path: Path | None) -> dict[str, Any]:
    """The event body of a final ``record``; ``response_file_path`` if a response was saved."""
    return {
        "event_id": event_id(record),
        "event_type": ROUTING_KEYS[record.status],
        "request_id": record.request_id,
        "status": record.status.value,
        "status_code": record.last_status_code,
        "attempts": record.attempt_count,
        "retries_used": record.retries_used,
        "last_error": record.last_error,
        "response_file_path": None if response_file_path is None else str(response_file_path),
        "metadata": record.metadata,
        "submitted_at": record.created_at,
        "completed_at": record.completed_at,
    }


def rejected_event(
    message_id: str, request_id: str | None, reason: str, metadata: dict[str, Any] | None, now: float
) -> dict[str, Any]:
    """The event of a submit message the intake refused; its ID follows from the message's (redelivery: same ID)."""
    return {
        "event_id": str(uuid.uuid5(EVENT_NAMESPACE, f"rejected|{message_id}")),
        "event_type": REJECTED,
        "request_id": request_id,
        "message_id": message_id,
        "status": "rejected",
        "status_code": None,
        "attempts": 0,
        "retries_used": 0,
        "last_error": reason,
        "response_file_path": None,
        "metadata": metadata,
        "submitted_at": None,
        "completed_at": now,
    }


class EventPublisher:
    """Publishes events on a RabbitMQ broker's confirm channel (the calling thread's)."""

    def __init__(self, broker: RabbitmqBroker, exchange: str) -> None:
        self.broker = broker
        self.exchange = exchange
        self._declared: set[int] = set()  # ids of the channels the exchange was declared on

    @classmethod
    def for_broker(cls, broker: dramatiq.Broker, settings: Settings) -> EventPublisher | None:
        """A publisher for ``broker``; None for a broker without exchanges (local mode)."""
        return cls(broker, settings.events_exchange) if isinstance(broker, RabbitmqBroker) else None

    # ------------------------------------------------------------ requests
    def announce_final(self, record: StatusRecord, response_file_path: Path | None) -> dict[str, Any]:
        """After a run that wrote or met the final ``record``: publish its event.

        The runner calls it after the run's writes are durable, with the record
        and response file as the run held them, not read again: the request may
        be removed the moment a caller sees it final, and its event is still owed.
        A message given back after a crash between the final status and its event
        meets the final record and announces it again (same ``event_id``); a stale
        message announces nothing (the runner's rule). Raises BrokerUnavailable.
        """
        event = final_event(record, response_file_path)
        self.publish(ROUTING_KEYS[record.status], event)
        if record.on_complete is not None:
            self.send_to_actor(record.on_complete["queue"], record.on_complete["actor"], event)
        get_logger(request_id=record.request_id).debug(
            "event_published", routing_key=event["event_type"], event_id=event["event_id"]
        )
        return event

    def publish_final(self, store: Store, record: StatusRecord) -> dict[str, Any]:
        """Publish the event of the final ``record`` (and send it to its ``on_complete`` actor)."""
        response = store.response_file_path(record.request_id)
        return self.announce_final(record, response if response.exists() else None)

    # ------------------------------------------------------------ publishing
    def publish(self, routing_key: str, event: dict[str, Any]) -> None:
        """Publish ``event`` to the exchange, confirmed by the broker, or raise BrokerUnavailable."""
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        properties = pika.BasicProperties(
            delivery_mode=2, content_type="application/json", message_id=str(event["event_id"]), type=routing_key
        )

        def send(channel: Any) -> None:
            if id(channel) not in self._declared:
                channel.exchange_declare(exchange=self.exchange, exchange_type="topic", durable=True)
                self._declared.add(id(channel))
            channel.basic_publish(exchange=self.exchange, routing_key=routing_key, body=body, properties=properties)

        self._on_channel(send, f"event {event['event_id']} ({routing_key})")

    def send_to_actor(self, queue_name: str, actor_name: str, event: dict[str, Any]) -> None:
        """Send ``event`` as the Dramatiq message ``actor_name(event)`` on ``queue_name``, confirmed.

        The queue is declared as Dramatiq declares its queues (with this broker's
        queue type), not through ``broker.declare_queue``: that would make this
        worker consume the caller's queue. A queue that exists with other
        arguments cannot take the message however often it is tried: logged, skipped.
        """
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue_name,
            actor_name=actor_name,
            args=(event,),
            kwargs={},
            options={},
            message_id=str(event["event_id"]),
        )
        arguments = self.broker._build_queue_arguments(queue_name)  # type: ignore[no-untyped-call]
        properties = pika.BasicProperties(delivery_mode=2, priority=0)

        def send(channel: Any) -> None:
            channel.queue_declare(queue=queue_name, durable=True, arguments=arguments)
            channel.basic_publish(exchange="", routing_key=queue_name, body=message.encode(), properties=properties)

        try:
            self._on_channel(send, f"event {event['event_id']} to {queue_name}:{actor_name}", refused_ok=True)
        except _Refused as refused:
            get_logger(request_id=event.get("request_id")).error(
                "on_complete_not_sent", queue=queue_name, actor=actor_name, reason=str(refused)
            )

    def _on_channel(self, send: Any, what: str, *, refused_ok: bool = False) -> None:
        # On a worker broker's publishing threads: the connection of this thread would be one more per thread.
        if isinstance(self.broker, BghttpRabbitmqBroker):
            self.broker.on_publish_thread(lambda: self._send_here(send, what, refused_ok=refused_ok))
        else:
            self._send_here(send, what, refused_ok=refused_ok)

    def _send_here(self, send: Any, what: str, *, refused_ok: bool) -> None:
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                send(self.broker.channel)
                return
            except BROKER_ERRORS as error:
                # The thread's connection may be stale (broker restarted), or RabbitMQ closed
                # the channel: the next try opens a new one.
                self._drop_connection()
                refused = isinstance(error, pika.exceptions.ChannelClosedByBroker) and error.reply_code in (403, 406)
                if refused_ok and refused:
                    raise _Refused(str(error)) from None
                if attempt == PUBLISH_ATTEMPTS:
                    unconfirmed, not_sent = f"the broker did not confirm {what}", f"{what} was not sent"
                    raise broker_unavailable(error, unconfirmed, not_sent) from error

    def _drop_connection(self) -> None:
        self._declared.clear()
        with contextlib.suppress(Exception):
            del self.broker.connection


class _Refused(Exception):
    """RabbitMQ refused a declaration (the queue exists with other arguments): retrying cannot help."""


__all__ = ["REJECTED", "ROUTING_KEYS", "EventPublisher", "event_id", "final_event", "rejected_event"]
