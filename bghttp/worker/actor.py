"""Worker set-up: the broker with bghttp's middleware and the ``execute_request`` actor.

``bghttp/actors.py`` calls :func:`setup_worker_broker` so that ``dramatiq bghttp.actors``
starts a worker; the embedded local mode and the tests call the same functions.
"""

from __future__ import annotations

import functools
import reprlib
import threading
from typing import Any

import dramatiq
import httpx
from dramatiq.broker import MessageProxy
from dramatiq.middleware import CurrentMessage, Middleware, Retries, ShutdownNotifications

from ..broker import (
    ACTOR_NAME,
    WORKER_PUBLISH_THREADS,
    check_queue,
    create_broker,
    log_reconnects,
    publish_request,
)
from ..config import Settings
from ..durability import NotDurable
from ..errors import BrokerUnavailable, StoreError
from ..events import EventPublisher
from ..lifecycle import parse_message_args
from ..logs import configure_logging, get_logger
from ..models import RequestSpec, StatusRecord
from ..shared_fs import check as check_shared_store
from ..store import check_store_root, is_valid_request_id
from ..store_api import Store
from .connectivity import ConnectivityMonitor, MonitorHolder
from .delays import PromptDelayedMessages
from .egress import egress_transport
from .execution import AttemptResult, build_http_client
from .gate import ConnectivityGate
from .heartbeat import HeartbeatMiddleware
from .http_env import HttpEnvironment, load_http_environment
from .in_flight import InFlightLimits, WorkerSlots
from .intake import declare_intake_actor, submit_queue_name
from .metrics import metrics_middleware, observe_attempt, observe_final
from .process_store import process_store
from .runner import RequestNotInStore, RequestRunner
from .unrecorded import ATTEMPT_OPTION, OutcomeNotRecorded, UnrecordedAttempt

#: Internal failures (a bug) are retried a few times by Dramatiq's own Retries
#: middleware; request errors never reach it: the runner schedules those itself
#: with the exact 2, 4 … 512 s schedule.
INTERNAL_RETRIES = 5
INTERNAL_MIN_BACKOFF_MS = 1000
#: A store or broker that cannot be reached may come back (a remount, an NFS or
#: RabbitMQ outage): such messages are retried without limit, at most this far apart,
#: so no accepted request is stranded however long the outage.
OUTAGE_MAX_BACKOFF_MS = 60_000


#: The message option that marks a retry of a run whose commit failed (``NotDurable``).
NOT_DURABLE_OPTION = "bghttp_not_durable"


def retry_internal_failure(retries: int, error: BaseException) -> bool:
    """Dramatiq's ``retry_when``: outages of the store or broker always, anything else 5 times."""
    return isinstance(error, StoreError | BrokerUnavailable) or retries < INTERNAL_RETRIES


def worker_middleware(settings: Settings, connectivity: MonitorHolder | None = None) -> list[Middleware]:
    """The worker's middleware; pass the ``connectivity`` the runner shares with the gate."""
    connectivity = connectivity or MonitorHolder(settings)
    return [
        ShutdownNotifications(),
        CurrentMessage(),
        ConnectivityGate(settings, connectivity),
        PromptDelayedMessages(),  # retries start when due, not at the delay queue's next 1 s wake-up
        Retries(
            retry_when=retry_internal_failure,
            min_backoff=INTERNAL_MIN_BACKOFF_MS,
            max_backoff=OUTAGE_MAX_BACKOFF_MS,
        ),
        HeartbeatMiddleware(settings, connectivity),
        *metrics_middleware(settings),
    ]


#: Connections a worker thread keeps alive (to as many hosts): each thread has its
#: own small pool. One pool shared by hundreds of threads costs every request a
#: walk over all its connections under one lock: measured 12 ms of CPU per
#: request at 500 in flight, against 0.8 ms with a pool per thread.
THREAD_POOL_SIZE = 4


class RunnerHolder:
    """Builds a worker thread's RequestRunner on first use (after a worker fork).

    Every thread gets its own runner with its own httpx client (connection
    pool); the store, the broker, the connectivity monitor, the in-flight
    limits and the TLS settings are shared by the process.
    """

    def __init__(
        self,
        settings: Settings,
        broker: dramatiq.Broker,
        store: Store | None = None,
        connectivity: MonitorHolder | None = None,
        in_flight: InFlightLimits | None = None,
        http_environment: HttpEnvironment | None = None,
    ) -> None:
        self.settings = settings
        # Read now, at the worker's start: an environment httpx cannot use (a bad proxy or
        # CA variable) is a ConfigError here, not a crash of every message (see http_env).
        self.http_environment = http_environment or load_http_environment(
            use_proxies=not settings.block_private_addresses
        )
        self.broker = broker
        self.store = store
        self.connectivity = connectivity
        self.in_flight = in_flight
        self._thread = threading.local()
        self._shared: tuple[Store, ConnectivityMonitor | None] | None = None
        self._lock = threading.Lock()
        self.events = EventPublisher.for_broker(broker, settings)
        self.heartbeat = next((m for m in broker.middleware if isinstance(m, HeartbeatMiddleware)), None)
        if self.heartbeat is not None:
            self.heartbeat.in_flight = lambda: self.in_flight

    def get(self) -> RequestRunner:
        runner: RequestRunner | None = getattr(self._thread, "runner", None)
        if runner is not None:
            return runner
        store, connectivity = self._shared_parts()
        runner = self._thread.runner = RequestRunner(
            store,
            self.settings,
            self._http_client(),
            functools.partial(publish_request, self.broker, self.settings.queue_name),
            connectivity=connectivity,
            on_attempt=self._on_attempt,
            on_failed_without_attempt=self._on_failed_without_attempt,
            in_flight=self.in_flight,
            after_run=None if self.events is None else self.events.announce_final,
        )
        return runner

    def _on_attempt(self, spec: RequestSpec, record: StatusRecord, result: AttemptResult) -> None:
        observe_attempt(spec, record, result)
        if self.heartbeat is not None and record.is_terminal:
            self.heartbeat.count_outcome(record)

    def _on_failed_without_attempt(self, record: StatusRecord) -> None:
        observe_final(record)
        if self.heartbeat is not None:
            self.heartbeat.count_outcome(record)

    def _shared_parts(self) -> tuple[Store, ConnectivityMonitor | None]:
        shared = self._shared  # every message passes here: no lock once they are built
        if shared is not None:
            return shared
        with self._lock:
            if self._shared is None:
                if self.in_flight is None:
                    self.in_flight = InFlightLimits(self.settings.max_in_flight, self.settings.max_in_flight_per_host)
                store = self.store or process_store(self.settings)
                self._shared = (store, self._connectivity())
            return self._shared

    def _connectivity(self) -> ConnectivityMonitor | None:
        # The runner must share the gate's monitor: use the one given, else the
        # gate's among the broker's middleware (the local mode builds it that way).
        holder = self.connectivity or next(
            (m.connectivity for m in self.broker.middleware if isinstance(m, ConnectivityGate)), None
        )
        return None if holder is None else holder.get()

    def _http_client(self) -> httpx.Client:
        # One TLS context (CA certificates loaded once, at start) for every thread's client.
        environment = self.http_environment
        if not self.settings.block_private_addresses:
            return environment.client(THREAD_POOL_SIZE)
        # Every connection (and every redirect hop) goes through the policy; env
        # proxies are ignored, since behind one the final address is unknown.
        transport = egress_transport(
            self.settings.egress_allow_networks, pool_size=THREAD_POOL_SIZE, verify=environment.tls
        )
        return build_http_client(transport=transport, trust_env=False)


def declare_actor(broker: dramatiq.Broker, settings: Settings, holder: RunnerHolder) -> dramatiq.Actor[..., None]:
    def execute_request(*args: Any, **kwargs: Any) -> None:
        run = None if kwargs else parse_message_args(args)
        if run is None or not is_valid_request_id(run[0]):
            # Not a run of a request (an event a misdirected on_complete sent here, junk):
            # retrying cannot make it one.
            message = CurrentMessage.get_current_message()
            get_logger(message_id=None if message is None else message.message_id).error(
                "not_a_request_message", args=reprlib.repr(args), kwargs=reprlib.repr(kwargs)
            )
            return
        current = CurrentMessage.get_current_message()
        # A retry of a run whose commit failed (see RequestRunner.run): the option stays in the
        # message Dramatiq's Retries enqueues again (it changes and sends the same options).
        # A message RabbitMQ redelivers may be one too, without the option: its worker died (or
        # lost its connection) after the commit failed, before the retry was enqueued.
        after_failure = current is not None and (
            bool(current.options.get(NOT_DURABLE_OPTION)) or bool(getattr(current, "redelivered", False))
        )
        # The finished attempt this message follows: a retry's, or this message's own from a run whose
        # outcome could not be written (the option is set below and kept by Retries, like the one above).
        unrecorded = None if current is None else UnrecordedAttempt.from_option(current.options.get(ATTEMPT_OPTION))
        try:
            retried = current is not None and bool(current.options.get("retries"))
            holder.get().run(*run, after_failure=after_failure, retried=retried, unrecorded=unrecorded)
        except NotDurable:
            if current is not None:
                current.options[NOT_DURABLE_OPTION] = True
            raise
        except OutcomeNotRecorded as error:
            if current is not None:
                current.options[ATTEMPT_OPTION] = error.unrecorded.to_option()
            raise
        except RequestNotInStore:
            # Not acked away, not retried: nacked, RabbitMQ moves it to the .XQ (the runner logged why).
            current = CurrentMessage.get_current_message()  # the worker's MessageProxy
            if isinstance(current, MessageProxy):
                current.fail()

    return dramatiq.Actor(
        execute_request,
        broker=broker,
        actor_name=ACTOR_NAME,
        queue_name=settings.queue_name,
        priority=0,
        # No TimeLimit middleware: an attempt is bounded by its own timeout, and
        # Dramatiq's 10-minute default would kill long downloads.
        options={},
    )


def setup_worker_broker(settings: Settings | None = None) -> tuple[dramatiq.Broker, RunnerHolder]:
    """Create the worker's broker, make it Dramatiq's global one, declare the actor."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    if not settings.is_local:
        log_reconnects(settings.broker_url)  # one line per reconnect attempt, the URL redacted
    check_shared_store(settings.store_dir)  # a shared store with unsafe caches stops the worker here, in one line
    check_store_root(settings.store_dir)  # so does a store another user owns or may write
    # One monitor per worker process, shared by the gate and the runner.
    connectivity = MonitorHolder(settings)
    # BGHTTP_MAX_IN_FLIGHT sizes each process (a local worker keeps its BGHTTP_LOCAL_THREADS).
    slots = WorkerSlots(settings)
    broker = create_broker(
        settings, [*worker_middleware(settings, connectivity), slots], publish_threads=WORKER_PUBLISH_THREADS
    )
    dramatiq.set_broker(broker)
    holder = RunnerHolder(settings, broker, connectivity=connectivity, in_flight=slots.limits)
    declare_actor(broker, settings, holder)
    # Submits by message from any service (``<BGHTTP_QUEUE>.submit``): see bghttp/worker/intake.py.
    declare_intake_actor(broker, settings)
    # A queue of the other type (classic vs quorum) stops the worker here, in one line.
    check_queue(broker, settings.queue_name)
    check_queue(broker, submit_queue_name(settings))
    return broker, holder
