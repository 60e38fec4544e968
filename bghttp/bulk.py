"""Bulk submit: many requests in one call, stored together and published in one transaction.

``client.submit_many(requests)`` is all-or-nothing. It validates every request
before it writes anything, stores them all, makes the store durable with one
filesystem sync (instead of several fsyncs per request), then publishes every
message inside one RabbitMQ transaction (``tx.select`` … ``tx.commit``).
RabbitMQ enqueues the messages of a transaction all together at ``commit-ok``
or not at all, so when the call returns every request is stored and on its
queue; when it raises, none was accepted and the files it wrote are removed
(unless someone else confirmed one of them meanwhile: see the client's docstring).
Storing and conflicts go through the one submit path (``bghttp.submission``),
like a single submit's; an ID whose first message is not confirmed yet is
published in the batch too. This module holds what is bulk's own: the items
and the transaction.

Why a transaction and not publisher confirms: measured on the benchmark machine
(``python -m benchmarks.publish_strategies``, see benchmarks/RESULTS.md), one
confirm per message gives 1,200-1,350 messages/s, a transaction 7,600-9,500/s,
and pipelined confirms 13,600-15,800/s. Pipelined confirms
need pika's private ``_impl`` channel and leave a half-confirmed batch to sort
out on failure; the transaction uses public pika API, is fast enough for the
store to be the bottleneck, and fails atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from .broker import BROKER_ERRORS, broker_unavailable, request_message
from .errors import InvalidRequest
from .validation import FieldsArg, FilesArg, HeadersArg, PreparedRequest, QueryArg, RequestDict, prepare_request


@dataclasses.dataclass(frozen=True)
class BulkRequest:
    """One request of a bulk submit; the fields are the keywords of ``client.request``."""

    method: str
    url: str
    data: Any = None
    json: Any = None
    headers: HeadersArg = None
    query_parameters: QueryArg = None
    timeout: float | None = None
    request_id: str | None = None
    retries: int = 0
    fields: FieldsArg = None
    files: FilesArg = None
    multipart: bool = False
    metadata: Mapping[str, Any] | None = None
    on_complete: Mapping[str, str] | None = None


#: A bulk item: a BulkRequest, or a mapping with the same keys (``method`` and ``url`` required).
RequestLike = BulkRequest | RequestDict

#: Transactions tried, each on a fresh connection after a failure (like Dramatiq's enqueue).
PUBLISH_ATTEMPTS = 2


def prepare_all(requests: Iterable[RequestLike], default_timeout: float) -> list[PreparedRequest]:
    """Validate every item of a bulk submit; ``InvalidRequest`` naming the first bad one."""
    return [_prepare(item, index, default_timeout) for index, item in enumerate(requests)]


def _prepare(item: RequestLike, index: int, default_timeout: float) -> PreparedRequest:
    if isinstance(item, BulkRequest):
        # Shallow: dataclasses.asdict would turn a MultipartFile in ``files`` into a dict.
        options = {field.name: getattr(item, field.name) for field in dataclasses.fields(item)}
    else:
        options = dict(item)
    try:
        method = options.pop("method")
        url = options.pop("url")
    except KeyError as missing:
        raise InvalidRequest(f"request {index} has no {missing.args[0]!r}") from None
    try:
        return prepare_request(method, url, default_timeout=default_timeout, **options)
    except TypeError as error:  # an unknown keyword
        raise InvalidRequest(f"request {index}: {error}") from None


def publish_batch(
    broker: dramatiq.Broker,
    queue_name: str,
    messages: list[tuple[str, int]],
    publish_one: Callable[[str, int], None],
) -> None:
    """Publish ``execute_request(id, token)`` for every pair: in one transaction on RabbitMQ, else one by one."""
    if not messages:
        return
    if not isinstance(broker, RabbitmqBroker):
        # The embedded/stub broker has no transactions; publish one by one.
        for request_id, token in messages:
            publish_one(request_id, token)
        return
    for attempt in range(1, PUBLISH_ATTEMPTS + 1):
        try:
            broker.declare_queue(queue_name, ensure=True)
            publish_in_transaction(broker.connection, queue_name, messages)
            return
        except BROKER_ERRORS as error:
            # The thread's connection may be stale (broker restarted, idle too long):
            # drop it so the next attempt opens a new one. Publishing again is safe:
            # an uncommitted transaction enqueued nothing, and if only the commit-ok
            # was lost the duplicates carry the same token and the runner drops them.
            with contextlib.suppress(Exception):
                del broker.connection
            if attempt == PUBLISH_ATTEMPTS:
                count = len(messages)
                raise broker_unavailable(
                    error,
                    f"the broker did not commit the bulk submit of {count} requests",
                    f"none of the {count} requests was submitted",
                ) from error


def publish_in_transaction(
    connection: pika.BlockingConnection, queue_name: str, messages: list[tuple[str, int]]
) -> None:
    """Publish ``execute_request(id, token)`` for each pair in one transaction; raise unless committed.

    Uses its own channel so the broker's confirm-mode channel is left as it is.
    ``mandatory`` makes RabbitMQ return a message it cannot route (a deleted
    queue); a returned message fails the batch instead of vanishing.
    """
    channel = connection.channel()
    returned: list[str] = []
    channel.add_on_return_callback(lambda _ch, _method, _props, body: returned.append(body[:80].decode()))
    properties = pika.BasicProperties(delivery_mode=2)
    try:
        channel.tx_select()
        for request_id, token in messages:
            body = request_message(queue_name, request_id, token).encode()
            channel.basic_publish(exchange="", routing_key=queue_name, body=body, properties=properties, mandatory=True)
        channel.tx_commit()
        # Basic.Return frames arrive before Tx.CommitOk; this hands them to the callback.
        connection.process_data_events(0)
        if returned:
            raise pika.exceptions.UnroutableError(returned)
    finally:
        with contextlib.suppress(Exception):
            channel.close()


__all__ = ["BulkRequest", "prepare_all", "publish_batch", "publish_in_transaction"]
