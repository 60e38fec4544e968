"""Building the Dramatiq broker and publishing request messages.

A message is ``execute_request(request_id, token)``: the ID says which request,
the token says which scheduled run this is (see ``StatusRecord.token``). The
request itself lives in the store, never in the message.
"""

from __future__ import annotations

import contextlib
import logging

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

from .config import Settings
from .errors import BrokerUnavailable

ACTOR_NAME = "execute_request"


def create_broker(settings: Settings, middleware: list[Middleware] | None = None) -> dramatiq.Broker:
    """A broker for ``settings.broker_url``: RabbitMQ with publisher confirms, or in-memory."""
    if settings.is_local:
        return StubBroker(middleware=middleware or [])
    # Publisher confirms: a publish that RabbitMQ did not take raises instead of
    # vanishing, so a request is never reported accepted and then lost.
    return RabbitmqBroker(url=settings.broker_url, confirm_delivery=True, middleware=middleware or [])


def request_message(queue_name: str, request_id: str, token: int) -> dramatiq.Message[None]:
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=ACTOR_NAME,
        args=(request_id, token),
        kwargs={},
        options={},
    )


def publish_request(
    broker: dramatiq.Broker,
    queue_name: str,
    request_id: str,
    token: int,
    delay_seconds: float | None = None,
) -> None:
    """Publish one run of a request, confirmed by the broker, or raise BrokerUnavailable."""
    delay_ms = None if not delay_seconds or delay_seconds <= 0 else max(1, int(delay_seconds * 1000))
    try:
        broker.declare_queue(queue_name)  # a no-op once declared; StubBroker needs it
        broker.enqueue(request_message(queue_name, request_id, token), delay=delay_ms)
    except (dramatiq.errors.BrokerError, pika.exceptions.AMQPError, OSError) as error:
        raise BrokerUnavailable(f"the broker did not confirm request {request_id}: {error}") from error


def rabbitmq_reachable(url: str) -> bool:
    """True if a RabbitMQ at ``url`` accepts a connection now (one try, 2 s at most)."""
    pika_logger = logging.getLogger("pika")
    level = pika_logger.level
    pika_logger.setLevel(logging.CRITICAL)  # a refused connection is an answer here, not an error
    try:
        separator = "&" if "?" in url else "?"
        connection = pika.BlockingConnection(
            pika.URLParameters(f"{url}{separator}connection_attempts=1&socket_timeout=2")
        )
    except Exception:
        return False
    finally:
        pika_logger.setLevel(level)
    connection.close()
    return True


def delete_queues(url: str, queue_name: str) -> None:
    """Delete a queue with its delay and dead-letter queues; quietly does nothing if unreachable."""
    with contextlib.suppress(Exception):
        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            channel = connection.channel()
            for name in (queue_name, f"{queue_name}.DQ", f"{queue_name}.XQ"):
                channel.queue_delete(name)
        finally:
            connection.close()
