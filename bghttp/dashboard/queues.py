"""Queue depth and consumers per queue, by AMQP passive declares (no management plugin needed).

A passive declare of a queue that does not exist closes the channel (404): the
queue is reported absent and the next one gets a new channel. Any broker error
becomes a one-line message on the page, never a failed page.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

import pika
import pika.exceptions

from ..redaction import redact_url

#: Seconds to connect and to wait for each answer: the overview must not hang on a dead broker.
BROKER_TIMEOUT_SECONDS = 3.0


@dataclasses.dataclass(frozen=True)
class QueueDepth:
    name: str
    role: str
    messages: int | None  # None: the queue does not exist
    consumers: int | None


@dataclasses.dataclass(frozen=True)
class QueueReport:
    broker: str  # the broker URL without its password
    queues: list[QueueDepth]
    error: str | None = None


def queue_names(queue_name: str) -> list[tuple[str, str]]:
    """(name, role) of every queue of a bghttp queue: work, its delay and dead-letter queues, intake."""
    return [
        (queue_name, "work"),
        (f"{queue_name}.DQ", "delayed (retries, Retry-After)"),
        (f"{queue_name}.XQ", "dead letters"),
        (f"{queue_name}.submit", "intake (submit_request messages)"),
    ]


def read_queues(broker_url: str, queue_name: str) -> QueueReport:
    shown = redact_url(broker_url)
    if broker_url == "local":
        return QueueReport(shown, [], "local mode: no broker, no queues")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # a dead broker is one line on the page
    try:
        parameters = pika.URLParameters(broker_url)
        parameters.socket_timeout = BROKER_TIMEOUT_SECONDS
        parameters.blocked_connection_timeout = BROKER_TIMEOUT_SECONDS
        parameters.connection_attempts = 1
        parameters.retry_delay = 0
        connection = pika.BlockingConnection(parameters)
    except (pika.exceptions.AMQPError, OSError, ValueError) as error:
        return QueueReport(shown, [], f"cannot reach the broker: {type(error).__name__} {error}".strip())
    try:
        return QueueReport(shown, [_depth(connection, name, role) for name, role in queue_names(queue_name)])
    except (pika.exceptions.AMQPError, OSError) as error:
        return QueueReport(shown, [], f"the broker failed while asked: {type(error).__name__} {error}".strip())
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            connection.close()


def _depth(connection: pika.BlockingConnection, name: str, role: str) -> QueueDepth:
    channel = connection.channel()
    try:
        method = channel.queue_declare(name, passive=True).method
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == 404:
            return QueueDepth(name, role, None, None)
        raise
    if channel.is_open:
        channel.close()
    return QueueDepth(name, role, int(method.message_count), int(method.consumer_count))
