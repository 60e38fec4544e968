"""Building the Dramatiq broker and publishing request messages.

A message is ``execute_request(request_id, token)``: the ID says which request,
the token says which scheduled run this is (see ``StatusRecord.token``). The
request itself lives in the store, never in the message.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from urllib.parse import parse_qsl, urlsplit

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from .config import Settings
from .errors import BrokerUnavailable
from .lifecycle import message_args

ACTOR_NAME = "execute_request"

#: Everything talking to a broker can raise about the broker: Dramatiq's errors,
#: pika's (``AMQPError``, and the connection workflow's, which are not
#: ``AMQPError``s, such as ``AMQPConnectorStackTimeout`` from a listener that never
#: speaks AMQP) and socket errors and timeouts (``OSError``). Each is translated
#: into ``BrokerUnavailable`` where bghttp talks to a broker.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    dramatiq.errors.BrokerError,
    pika.exceptions.AMQPError,
    AMQPConnectorException,
    OSError,
)


def create_broker(settings: Settings, middleware: list[Middleware] | None = None) -> dramatiq.Broker:
    """A broker for ``settings.broker_url``: RabbitMQ with publisher confirms, or in-memory."""
    if settings.is_local:
        return StubBroker(middleware=middleware or [])
    urls = [bounded_url(url, settings.broker_connect_timeout) for url in settings.broker_url.split(";")]
    # Publisher confirms: a publish that RabbitMQ did not take raises instead of
    # vanishing, so a request is never reported accepted and then lost.
    return RabbitmqBroker(url=urls, confirm_delivery=True, middleware=middleware or [])


def bounded_url(url: str, timeout: float) -> str:
    """``url`` with pika's connect timeouts set to ``timeout`` unless the URL sets them itself.

    ``stack_timeout`` bounds the whole connection set-up (TCP, TLS, AMQP
    handshake): without it a listener that accepts and never speaks (a load
    balancer in front of a dead RabbitMQ) holds a submit for pika's 15 s
    default, per URL. ``socket_timeout`` bounds the TCP connect alone.
    """
    url = url.strip()
    given = {key for key, _ in parse_qsl(urlsplit(url).query)}
    extra = [f"{key}={timeout:g}" for key in ("stack_timeout", "socket_timeout") if key not in given]
    if not extra:
        return url
    separator = "&" if urlsplit(url).query else "?"
    return f"{url}{separator}{'&'.join(extra)}"


def request_message(queue_name: str, request_id: str, token: int) -> dramatiq.Message[None]:
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=ACTOR_NAME,
        args=message_args(request_id, token),
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
    except BROKER_ERRORS as error:
        reason = describe_broker_error(error)
        raise BrokerUnavailable(f"the broker did not confirm request {request_id}: {reason}") from error


def describe_broker_error(error: BaseException) -> str:
    """One line on what went wrong with the broker, without pika's socket-tuple noise."""
    if isinstance(error, AMQPConnectorException) and "handshake" in str(error).lower():
        return "it accepted the connection but did not answer the AMQP handshake (is RabbitMQ behind it down?)"
    if isinstance(error, socket.timeout):
        return "it did not answer in time"
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


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
