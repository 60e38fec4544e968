"""Building the Dramatiq broker and publishing request messages.

A message is ``execute_request(request_id, token)``: the ID says which request,
the token says which scheduled run this is (see ``StatusRecord.token``). The
request itself lives in the store, never in the message.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import logging
import math
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlsplit

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name, xq_name
from dramatiq.middleware import Middleware
from pika.adapters.utils.connection_workflow import AMQPConnectorException, AMQPConnectorStackTimeout
from pika.channel import ContentFrameAssembler

from .config import Settings
from .errors import BrokerUnavailable, ConfigError
from .lifecycle import message_args
from .logs import get_logger
from .redaction import redact_broker_url

ACTOR_NAME = "execute_request"
#: Name prefix of a worker broker's publishing threads.
PUBLISH_THREAD_PREFIX = "bghttp-publish"
#: Publishing threads (so RabbitMQ connections for publishing) of one worker process.
WORKER_PUBLISH_THREADS = 4
T = TypeVar("T")

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


#: ``x-delivery-limit`` of bghttp's quorum queues: so high that it is never reached.
#: A quorum queue counts every return of a message (a worker restart, a closed
#: consumer channel, a node failover) and dead-letters it past the limit; RabbitMQ 4
#: sets 20 when a queue gives none. Dramatiq holds a delayed message (a retry due
#: in up to 512 s, an offline hand-back) unacked in the worker until it is due, and
#: every restart of that worker returns it, so a small limit would silently park
#: waiting requests in the dead-letter queue. Not -1 ("no limit" on RabbitMQ 4):
#: RabbitMQ 3 reads a negative limit as 0 and dead-letters at the first return.
#: bghttp needs no broker-side poison-message guard: its own claim and token drop
#: duplicates, and an internal failure is retried 5 times, then ends the request.
QUORUM_DELIVERY_LIMIT = 1_000_000

_INEQUIVALENT_QUEUE_TYPE = re.compile(
    r"inequivalent arg 'x-queue-type' for queue '([^']*)'.*current is (?:the value '(\w+)'|none)"
)


#: Set on an exception raised while opening a connection: the broker URL(s) it
#: tried, passwords redacted. :func:`broker_unavailable` reads it to say that
#: nothing was sent, instead of "did not confirm".
CONNECT_FAILED_AT = "bghttp_connect_failed_at"


class BghttpRabbitmqBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker, declaring its queues as ``classic`` or ``quorum`` queues.

    With ``quorum`` the work queue, its delay queue (``.DQ``) and its dead-letter
    queue (``.XQ``) are quorum queues: replicated by Raft, and a publisher confirm
    means a majority of the queue's members has the message. ``classic`` declares
    exactly what Dramatiq declares, so an existing classic deployment is unchanged.
    A queue that exists with the other type raises ConfigError (how to migrate).
    """

    def __init__(
        self, *, queue_type: str = "classic", publish_threads: int = 0, shown_url: str = "", **options: Any
    ) -> None:
        super().__init__(**options)
        self.queue_type = queue_type
        #: The broker URL(s) as messages show them: passwords redacted.
        self.shown_url = shown_url
        self._message_limits: dict[str, tuple[int, Callable[[], OversizedBody]]] = {}
        # Dramatiq opens a RabbitMQ connection for every thread that publishes, and a
        # worker process has hundreds of threads (one per attempt in flight): that
        # many connections exhausted RabbitMQ's file descriptors. A worker's broker
        # publishes on a few threads of its own instead (``publish_threads``).
        self._publisher = (
            concurrent.futures.ThreadPoolExecutor(publish_threads, thread_name_prefix=PUBLISH_THREAD_PREFIX)
            if publish_threads > 0
            else None
        )

    @property
    def connection(self) -> Any:
        """Dramatiq's per-thread connection; an error opening one is marked with ``CONNECT_FAILED_AT``."""
        try:
            return super().connection
        except _CONNECT_ERRORS as error:
            # Marked, not wrapped: Dramatiq's retries and its consumer treat each error class its own way.
            setattr(error, CONNECT_FAILED_AT, self.shown_url)
            raise

    @connection.deleter
    def connection(self) -> None:
        RabbitmqBroker.connection.fdel(self)  # type: ignore[attr-defined]

    def limit_messages(self, queue_name: str, max_bytes: int, oversized: Callable[[], OversizedBody]) -> None:
        """A message on ``queue_name`` over ``max_bytes`` reaches Dramatiq as ``oversized()``'s stand-in.

        Its body is never held: each body frame is fed to ``oversized()`` and let
        go as it arrives (pika would keep every frame and then join them, twice the
        message; Dramatiq's JSON decoding two copies more). See bghttp.worker.intake.
        """
        self._message_limits[queue_name] = (max_bytes, oversized)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        consumer = super().consume(queue_name, prefetch=prefetch, timeout=timeout)
        limit = self._message_limits.get(queue_name)
        if limit is None:
            return consumer
        channel: Any = getattr(getattr(consumer, "channel", None), "_impl", None)
        if isinstance(getattr(channel, "_content_assembler", None), ContentFrameAssembler):
            # Before the consumer's first delivery: Dramatiq starts consuming on its first next().
            channel._content_assembler = _BoundedAssembler(queue_name, *limit)
        elif hasattr(consumer, "iterator"):  # another pika: replace the body once it is whole, at least
            consumer.iterator = _replacing(consumer.iterator, queue_name, *limit)
        return consumer

    def on_publish_thread(self, call: Callable[[], T]) -> T:
        """``call()`` on one of the broker's publishing threads (here, if it has none or this is one)."""
        if self._publisher is None or threading.current_thread().name.startswith(PUBLISH_THREAD_PREFIX):
            return call()
        return self._publisher.submit(call).result()

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        # Every publish of the worker passes here: its own runs, Dramatiq's Retries, the intake's.
        return self.on_publish_thread(lambda: RabbitmqBroker.enqueue(self, message, delay=delay))

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments: dict[str, Any] = super()._build_queue_arguments(queue_name)  # type: ignore[no-untyped-call]
        if self.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
            arguments["x-delivery-limit"] = QUORUM_DELIVERY_LIMIT
        return arguments

    def _declare_queue(self, queue_name: str) -> Any:
        return self._declare(queue_name, self._build_queue_arguments(queue_name))

    def _declare_dq_queue(self, queue_name: str) -> Any:
        return self._declare(dq_name(queue_name), self._build_queue_arguments(queue_name))

    def _declare_xq_queue(self, queue_name: str) -> Any:
        # The same static TTL as Dramatiq's (messages expire head-first); quorum
        # queues support message TTLs from RabbitMQ 3.10.
        arguments: dict[str, Any] = {"x-message-ttl": DEAD_MESSAGE_TTL}
        if self.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
        return self._declare(xq_name(queue_name), arguments)

    def _declare(self, name: str, arguments: dict[str, Any]) -> Any:
        try:
            return self.channel.queue_declare(queue=name, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code != 406:
                raise
            del self.channel  # RabbitMQ closed it; the next caller opens a new one
            raise queue_mismatch_error(self.queue_type, str(error.reply_text)) from None


def _replacing(
    deliveries: Iterator[Any], queue_name: str, max_bytes: int, oversized: Callable[[], OversizedBody]
) -> Iterator[Any]:
    for method, properties, body in deliveries:
        if method is not None and len(body) > max_bytes:
            reading = oversized()
            reading.feed(body)
            body = reading.stand_in(queue_name)
        yield method, properties, body


class OversizedBody(Protocol):
    """Reads a body too big to keep, piece by piece, and gives the small message that stands in for it."""

    def feed(self, piece: bytes) -> None: ...
    def stand_in(self, queue_name: str) -> bytes: ...


class _BoundedAssembler(ContentFrameAssembler):  # type: ignore[misc]
    """pika's assembler of a delivery's frames, keeping none of a body over ``max_bytes`` (see ``limit_messages``)."""

    def __init__(self, queue_name: str, max_bytes: int, oversized: Callable[[], OversizedBody]) -> None:
        super().__init__()
        self._queue_name = queue_name
        self._max_bytes = max_bytes
        self._oversized = oversized
        self._reading: OversizedBody | None = None

    def _handle_body_frame(self, body_frame: Any) -> Any:
        size = self._header_frame.body_size
        if size <= self._max_bytes:
            return super()._handle_body_frame(body_frame)
        if self._reading is None:
            self._reading = self._oversized()
        self._seen_so_far += len(body_frame.fragment)
        self._reading.feed(body_frame.fragment)
        if self._seen_so_far < size:
            return None
        content = (self._method_frame, self._header_frame, self._reading.stand_in(self._queue_name))
        self._reading = None
        self._reset()
        _return_free_memory()
        return content


def _return_free_memory() -> None:
    """Give the memory of a huge message just read back to the system (glibc keeps freed heap memory).

    pika reads it as 128 KiB frames on the heap; without this, a worker process kept
    memory after refusing it.
    """
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(None).malloc_trim(0)


def queue_mismatch_error(queue_type: str, reply_text: str) -> ConfigError:
    """The one-line ConfigError for RabbitMQ's "inequivalent arg" answer to a queue declare."""
    found = _INEQUIVALENT_QUEUE_TYPE.search(reply_text)
    if found is None:
        return ConfigError(f"RabbitMQ refused the queue declaration (BGHTTP_QUEUE_TYPE={queue_type}): {reply_text}")
    name, existing = found.group(1), found.group(2) or "classic"
    return ConfigError(
        f"BGHTTP_QUEUE_TYPE={queue_type}, but RabbitMQ has queue {name!r} as a {existing} queue: "
        f"to migrate, drain it (stop the clients, let the workers empty it, delete {name!r} with its .DQ and "
        f".XQ queues) or set BGHTTP_QUEUE to a new queue name; or keep BGHTTP_QUEUE_TYPE={existing}"
    )


def create_broker(
    settings: Settings, middleware: list[Middleware] | None = None, *, publish_threads: int = 0
) -> dramatiq.Broker:
    """A broker for ``settings.broker_url``: RabbitMQ with publisher confirms, or in-memory.

    Several ``;``-separated URLs (a cluster) fail over: each new connection, of
    a client or a worker's consumer, tries them in order and takes the first
    live node, and Dramatiq reconnects after a lost connection. A worker passes
    ``publish_threads``: its publishes then share that many connections.
    """
    if settings.is_local:
        return StubBroker(middleware=middleware or [])
    urls = [bounded_url(url, settings.broker_connect_timeout) for url in settings.broker_url.split(";")]
    # Publisher confirms: a publish that RabbitMQ did not take raises instead of
    # vanishing, so a request is never reported accepted and then lost.
    return BghttpRabbitmqBroker(
        url=urls,
        confirm_delivery=True,
        middleware=middleware or [],
        queue_type=settings.queue_type,
        publish_threads=publish_threads,
        shown_url=redact_broker_url(settings.broker_url),
    )


def check_queue(broker: dramatiq.Broker, queue_name: str) -> None:
    """Declare ``queue_name`` now: ConfigError if it exists with another type; an unreachable broker is no error.

    A worker calls it at start, so a queue-type mismatch stops it with one line
    instead of a consumer that fails and restarts forever. A broker that is down
    now is left to the consumer, which reconnects.
    """
    if not isinstance(broker, RabbitmqBroker):
        return
    try:
        broker.declare_queue(queue_name, ensure=True)
    except BROKER_ERRORS:
        broker.queues_pending.add(queue_name)
    finally:
        with contextlib.suppress(Exception):
            del broker.connection  # this thread's connection; the worker's consumers open their own


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


#: The longest a delayed message is held: a worker's delay-queue consumer keeps it unacked
#: until due, and RabbitMQ closes a channel that holds a delivery past ``consumer_timeout``
#: (30 minutes by default). Longer waits (a server's ``Retry-After``) take several hops.
MAX_MESSAGE_DELAY_SECONDS = 600.0


def request_message(
    queue_name: str, request_id: str, token: int, options: Mapping[str, Any] | None = None
) -> dramatiq.Message[None]:
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=ACTOR_NAME,
        args=message_args(request_id, token),
        kwargs={},
        options=dict(options or {}),
    )


def publish_request(
    broker: dramatiq.Broker,
    queue_name: str,
    request_id: str,
    token: int,
    delay_seconds: float | None = None,
    *,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Publish one run of a request, confirmed by the broker, or raise BrokerUnavailable.

    ``options``: message options the run reads (see ``runner.UnrecordedAttempt``).

    A delay over ``MAX_MESSAGE_DELAY_SECONDS`` is shortened to it: the message
    comes early, and the runner (which never runs a request before it is due)
    publishes it again for the rest.
    """
    if delay_seconds is not None:
        delay_seconds = min(delay_seconds, MAX_MESSAGE_DELAY_SECONDS)
    # Rounded up: a message must never become due before the time it was published for.
    delay_ms = None if not delay_seconds or delay_seconds <= 0 else max(1, math.ceil(delay_seconds * 1000))
    try:
        broker.declare_queue(queue_name)  # a no-op once declared; StubBroker needs it
        broker.enqueue(request_message(queue_name, request_id, token, options), delay=delay_ms)
    except BROKER_ERRORS as error:
        raise broker_unavailable(
            error, f"the broker did not confirm request {request_id}", f"request {request_id} was not submitted"
        ) from error


def broker_unavailable(error: BaseException, unconfirmed: str, not_sent: str) -> BrokerUnavailable:
    """The BrokerUnavailable for a failed publish: no connection at all (``not_sent``), or ``unconfirmed``.

    A request whose message never left has not been "unconfirmed": the message
    then says where the broker was looked for and why it could not be reached.
    """
    causes = _causes(error)
    failed = next((cause for cause in causes if hasattr(cause, CONNECT_FAILED_AT)), None)
    if failed is not None:
        where, reason = getattr(failed, CONNECT_FAILED_AT), describe_broker_error(failed)
        return BrokerUnavailable(f"cannot connect to the broker at {where}: {reason}; {not_sent}")
    refusal = _refusal(causes)
    if refusal is not None:
        # The broker answered the publish (or the commit) with a no: certainly not accepted.
        return BrokerUnavailable(f"the broker refused the publish ({refusal}); {not_sent}")
    return BrokerUnavailable(f"{unconfirmed}: {describe_broker_error(error)}")


def _refusal(causes: list[BaseException]) -> str | None:
    """What the broker said when it refused a publish (a nack, or a channel closed on it); None if it did not."""
    for cause in causes:
        if isinstance(cause, pika.exceptions.NackError | pika.exceptions.UnroutableError):
            return "it nacked the message: a queue at its length limit with overflow reject-publish, or a policy"
        if isinstance(cause, pika.exceptions.ChannelClosedByBroker):
            return f"{cause.reply_code} {cause.reply_text}"
    return None


def _causes(error: BaseException) -> list[BaseException]:
    """``error`` and every exception inside it: wrapped in args (Dramatiq, pika), causes and contexts."""
    found: list[BaseException] = []
    pending: list[object] = [error]
    while pending:
        item = pending.pop(0)
        if not isinstance(item, BaseException) or any(item is seen for seen in found):
            continue
        found.append(item)
        pending.extend([*item.args, getattr(item, "exception", None), item.__cause__, item.__context__])
    return found


class ReconnectLog(logging.Filter):
    """Turns Dramatiq's consumer reconnect lines into one ``broker_unreachable`` line per attempt.

    Each of a worker's consumers (work, delay, intake queues) logs "Consumer
    encountered a connection error" and "Restarting consumer in 3.00 seconds"
    on every try, naming neither the broker nor a readable reason. This handler
    filter drops both and logs, once per attempt (the consumers fail together),
    the URL with passwords redacted, the reason and the seconds to the next try.
    """

    _ERROR = "Consumer encountered a connection error: %s"
    _RESTART = "Restarting consumer in %0.2f seconds."

    def __init__(self, broker_url: str) -> None:
        super().__init__()
        self.where = redact_broker_url(broker_url)
        self._last: dict[str, float] = {}  # reason -> when it was last logged
        self._after_error: set[str] = set()  # consumers whose next "Restarting" line is ours to drop
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("dramatiq.worker.ConsumerThread"):
            return True
        if record.msg == self._RESTART:
            with self._lock:
                if record.name not in self._after_error:
                    return True  # after another kind of error: Dramatiq's line stays
                self._after_error.discard(record.name)
            return False
        if record.msg != self._ERROR or not record.args:
            return True
        error = record.args[0] if isinstance(record.args, tuple) else record.args
        reason = describe_broker_error(error) if isinstance(error, BaseException) else str(error)
        delay = float(getattr(dramatiq.worker, "CONSUMER_RESTART_DELAY_SECS", 3.0))
        with self._lock:
            self._after_error.add(record.name)
            last = self._last.get(reason)
            if last is not None and record.created - last < delay / 2:
                return False  # another consumer of the same attempt
            self._last[reason] = record.created
        get_logger().warning("broker_unreachable", url=self.where, reason=reason, retry_in_s=delay)
        return False


def log_reconnects(broker_url: str) -> None:
    """Install :class:`ReconnectLog` on the root logger's handlers (once per handler)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, ReconnectLog) for existing in handler.filters):
            handler.addFilter(ReconnectLog(broker_url))


#: What opening a connection raises: pika's errors and the socket's.
_CONNECT_ERRORS: tuple[type[BaseException], ...] = (pika.exceptions.AMQPError, AMQPConnectorException, OSError)


def describe_broker_error(error: BaseException) -> str:
    """One line on what went wrong with the broker, without pika's socket-tuple noise."""
    causes = _causes(error)
    text = " ".join(str(cause) for cause in causes)
    if any(isinstance(cause, AMQPConnectorException) and "handshake" in str(cause).lower() for cause in causes):
        return "it accepted the connection but did not answer the AMQP handshake (is RabbitMQ behind it down?)"
    # Connection-level refusals only: a channel's 403 (a missing permission) is not a wrong password.
    closed = [cause for cause in causes if isinstance(cause, pika.exceptions.ConnectionClosedByBroker)]
    if any(isinstance(cause, pika.exceptions.ProbableAuthenticationError) for cause in causes) or any(
        cause.reply_code == 403 for cause in closed
    ):
        return "login refused: wrong user name or password (403 ACCESS_REFUSED)"
    if any(isinstance(cause, pika.exceptions.ProbableAccessDeniedError) for cause in causes) or any(
        cause.reply_code == 530 for cause in closed
    ):
        found = re.search(r"NOT_ALLOWED[^'\"]*", text)
        return f"access refused ({found.group(0) if found else 'NOT_ALLOWED'}): check the virtual host in the URL"
    if any(isinstance(cause, pika.exceptions.IncompatibleProtocolError) for cause in causes):
        # It closed or answered something else (HTTP: the management UI's 15672) to the AMQP protocol header.
        return "the server at that port does not speak AMQP 0-9-1 (is it RabbitMQ's AMQP port, 5672 by default?)"
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is RabbitMQ running and listening on that port?)"
        if isinstance(cause, socket.gaierror):
            return f"host name not found ({cause.strerror})"
        if isinstance(cause, (socket.timeout, AMQPConnectorStackTimeout)):
            return "it did not answer in time"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
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


#: The suffix of the workers' intake queue of a queue name (``bghttp.worker.intake``).
SUBMIT_QUEUE_SUFFIX = ".submit"


def queue_family(queue_name: str) -> list[str]:
    """Every queue bghttp declares for ``BGHTTP_QUEUE=queue_name``: the work queue and the
    intake queue (``.submit``), each with its delay (``.DQ``) and dead-letter (``.XQ``) queue."""
    bases = (queue_name, f"{queue_name}{SUBMIT_QUEUE_SUFFIX}")
    return [name for base in bases for name in (base, dq_name(base), xq_name(base))]


def delete_queues(url: str, queue_name: str) -> None:
    """Delete all six queues of ``queue_name`` (:func:`queue_family`); quietly does nothing if unreachable.

    ``url`` may be a ``;`` list (a cluster): the first node that answers does it.
    """
    for node in url.split(";"):
        with contextlib.suppress(Exception):
            connection = pika.BlockingConnection(pika.URLParameters(node.strip()))
            try:
                channel = connection.channel()
                for name in queue_family(queue_name):
                    channel.queue_delete(name)
            finally:
                connection.close()
            return
