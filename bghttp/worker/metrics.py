"""Prometheus metrics of a worker: Dramatiq's own plus bghttp's, served on one port.

One approach for every worker layout: ``bghttp worker --metrics-port P`` (or
``BGHTTP_METRICS_PORT``) turns on prometheus_client's multiprocess mode with a
fresh ``PROMETHEUS_MULTIPROC_DIR`` shared by the worker processes of the group,
adds Dramatiq's ``Prometheus`` middleware (its exposition server runs once per
group, forked by the Dramatiq master, and serves every ``*.db`` file in that
directory) and :class:`BghttpMetricsMiddleware`, whose counters live in the same
directory. So ``GET http://host:P/metrics`` shows ``dramatiq_*`` and ``bghttp_*``
summed over all processes of the group.

bghttp's metrics (counters get the ``_total`` suffix on the wire):

* ``bghttp_requests_total{status}``     requests a worker brought to a final status
* ``bghttp_attempts_total{outcome}``    HTTP attempts by outcome (success, http_error, timeout …)
* ``bghttp_retries_total``              retries scheduled after a failed attempt
* ``bghttp_response_bytes_total``       response body bytes saved
* ``bghttp_attempt_duration_seconds``   histogram of attempt durations
* ``bghttp_submit_to_completion_seconds{status}``  histogram, submit to final status
* ``bghttp_offline_seconds_total``      seconds the worker saw the network down
* ``bghttp_network_online``             1 while online, 0 while offline (minimum over processes)
* ``bghttp_network_offline_since_timestamp_seconds``  Unix time it went offline, 0 while online
* ``bghttp_queue_wait_seconds``         histogram, from when an attempt was due to its start
* ``bghttp_retries_exhausted_total``    requests failed on a retryable outcome with no retry left
* ``bghttp_attempts_in_flight``         attempts running now (sampled every second)
* ``bghttp_worker_processes{queue}``    live worker processes of the group, by the queue they serve
* ``bghttp_queue_messages_ready{queue}``, ``bghttp_queue_consumers{queue}``  the queue as RabbitMQ
  reports it to a passive declare, every few seconds (the request queue and its ``.submit`` queue)

Gauges of a group are summed (``livesum``), or the minimum, maximum or most
recent value taken, over its live processes: a process that stopped cleanly
leaves no value behind.

prometheus_client is imported only inside a worker process, after the
multiprocess directory is known: it picks its storage when first imported.
"""

from __future__ import annotations

import functools
import glob
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from dramatiq.middleware import Middleware

from ..core.outcomes import Outcome
from ..logs import get_logger
from .in_flight import InFlightLimits, WorkerSlots
from .intake import submit_queue_name
from .retry_policy import is_retryable

if TYPE_CHECKING:
    import dramatiq

    from ..config import Settings
    from ..models import RequestSpec, StatusRecord
    from .execution import AttemptResult

#: Seconds from submit to a final status: requests retried with backoff take hours.
COMPLETION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, float("inf"))
ATTEMPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, float("inf"))
#: Seconds an attempt waited after it was due: a backlog, a busy host or an outage makes it long.
QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, float("inf"))
#: Seconds between two readings of the attempts in flight.
IN_FLIGHT_SAMPLE_SECONDS = 1.0
#: Seconds between two passive declares of the queues: each is a round trip to RabbitMQ per process.
QUEUE_SAMPLE_SECONDS = 5.0

#: The variables Dramatiq's Prometheus middleware and prometheus_client read.
_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
_DRAMATIQ_DB = "dramatiq_prom_db"
_DRAMATIQ_PORT = "dramatiq_prom_port"
_DRAMATIQ_HOST = "dramatiq_prom_host"

_metrics: WorkerMetrics | None = None
_metrics_lock = threading.Lock()


class WorkerMetrics:
    """bghttp's metrics of one process. Thread-safe; cheap to update.

    ``queue``: the request queue this process serves (the ``queue`` label of
    ``bghttp_worker_processes``); None for a process that serves none.
    """

    def __init__(self, registry: Any = None, queue: str | None = None) -> None:
        import prometheus_client as prom

        from ..models import RequestStatus

        self.registry = registry if registry is not None else prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter(
            "bghttp_requests", "Requests a worker brought to a final status, by status.", ["status"], registry=r
        )
        # Every final status is a series from the start, at 0: a rate() over a series that
        # appears with its first request would miss that request, and a ratio would be NaN.
        for status in (RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED):
            self.requests.labels(status.value)
        self.attempts = prom.Counter("bghttp_attempts", "HTTP attempts, by outcome.", ["outcome"], registry=r)
        self.retries = prom.Counter("bghttp_retries", "Retries scheduled after a failed attempt.", registry=r)
        self.response_bytes = prom.Counter("bghttp_response_bytes", "Response body bytes saved.", registry=r)
        self.attempt_duration = prom.Histogram(
            "bghttp_attempt_duration_seconds", "Duration of HTTP attempts.", buckets=ATTEMPT_BUCKETS, registry=r
        )
        self.submit_to_completion = prom.Histogram(
            "bghttp_submit_to_completion_seconds",
            "Seconds from submit to the final status, by status.",
            ["status"],
            buckets=COMPLETION_BUCKETS,
            registry=r,
        )
        self.offline_seconds = prom.Counter(
            "bghttp_offline_seconds", "Seconds this worker saw the network down.", registry=r
        )
        self.online = prom.Gauge(
            "bghttp_network_online",
            "1 while the worker sees the network up, 0 while it is offline.",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.online.set(1)
        self.offline_since = prom.Gauge(
            "bghttp_network_offline_since_timestamp_seconds",
            "Unix time the worker went offline; 0 while it is online (the latest over processes).",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.offline_since.set(0)
        self.queue_wait = prom.Histogram(
            "bghttp_queue_wait_seconds",
            "Seconds from when an attempt was due (the submit, or its retry's due time) to its start.",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.retries_exhausted = prom.Counter(
            "bghttp_retries_exhausted", "Requests failed on a retryable outcome with no retry left.", registry=r
        )
        self.in_flight = prom.Gauge(
            "bghttp_attempts_in_flight", "HTTP attempts running now.", multiprocess_mode="livesum", registry=r
        )
        self.worker_processes = prom.Gauge(
            "bghttp_worker_processes",
            "Live worker processes, by the request queue they serve.",
            ["queue"],
            multiprocess_mode="livesum",
            registry=r,
        )
        if queue is not None:
            self.worker_processes.labels(queue).set(1)
        self.queue_messages_ready = prom.Gauge(
            "bghttp_queue_messages_ready",
            "Messages ready in the queue, as RabbitMQ answers a passive declare.",
            ["queue"],
            multiprocess_mode="livemostrecent",
            registry=r,
        )
        self.queue_consumers = prom.Gauge(
            "bghttp_queue_consumers",
            "Consumers of the queue (every worker process of every group), as RabbitMQ answers a passive declare.",
            ["queue"],
            multiprocess_mode="livemostrecent",
            registry=r,
        )
        self._offline_since: float | None = None
        self._lock = threading.Lock()

    def observe_attempt(self, spec: RequestSpec, record: StatusRecord, result: AttemptResult) -> None:
        """Count one finished attempt; ``record`` is the status the runner left after it."""
        from ..models import Phase, RequestStatus

        self.attempts.labels(result.outcome.value).inc()
        if result.outcome is not Outcome.INTERRUPTED:  # closed after its worker died: its duration is unknown
            self.attempt_duration.observe(result.duration_ms / 1000)
        if result.response_bytes:
            self.response_bytes.inc(result.response_bytes)
        if record.phase is Phase.WAITING_RETRY:
            self.retries.inc()
        if record.is_terminal:
            self.observe_final(record)
            if (
                record.status is RequestStatus.FAILED
                and is_retryable(result.outcome)
                and record.retries_used >= spec.max_retries
            ):
                self.retries_exhausted.inc()
        waited = queue_wait(record)
        if waited is not None:
            self.queue_wait.observe(waited)

    def observe_final(self, record: StatusRecord) -> None:
        """Count a request this process brought to its final status (after an attempt, or with none)."""
        self.requests.labels(record.status.value).inc()
        finished = record.completed_at or record.updated_at
        self.submit_to_completion.labels(record.status.value).observe(max(0.0, finished - record.created_at))

    def connectivity_changed(self, online: bool, now: float | None = None, wall: float | None = None) -> None:
        """Record a change of the network state; offline time is counted when it ends.

        ``now`` is monotonic (for the offline time), ``wall`` Unix time (for the since-gauge).
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            self.online.set(1 if online else 0)
            if not online and self._offline_since is None:
                self._offline_since = now
                self.offline_since.set(time.time() if wall is None else wall)
            elif online and self._offline_since is not None:
                self.offline_seconds.inc(max(0.0, now - self._offline_since))
                self._offline_since = None
                self.offline_since.set(0)


def queue_wait(record: StatusRecord) -> float | None:
    """Seconds the latest attempt of ``record`` waited after it was due; None when its due time is unknown.

    Due is the retry's due time for a retry, the submit for a request's first
    attempt. An attempt after a network wait, an interrupted attempt or a replay
    has no recorded due time and is not counted.
    """
    if not record.attempts:
        return None
    attempt = record.attempts[-1]
    if attempt.due_at is not None:
        due = attempt.due_at
    elif attempt.number == 1 and not record.replays:
        due = record.created_at
    else:
        return None
    return max(0.0, attempt.started_at - due)


# --------------------------------------------------------------- process-wide


def enable_metrics(queue: str | None = None) -> WorkerMetrics:
    """Create this process's metrics (once). Call after PROMETHEUS_MULTIPROC_DIR is set."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = WorkerMetrics(queue=queue)
        return _metrics


def observe_attempt(spec: RequestSpec, record: StatusRecord, result: AttemptResult) -> None:
    """The ``RequestRunner.on_attempt`` hook: a no-op while metrics are off."""
    if _metrics is not None:
        _metrics.observe_attempt(spec, record, result)


def observe_final(record: StatusRecord) -> None:
    """The runner's ``on_failed_without_attempt`` hook (with the heartbeat's): a no-op while metrics are off."""
    if _metrics is not None:
        _metrics.observe_final(record)


def connectivity_changed(online: bool) -> None:
    """For the connectivity monitor: call on every online/offline transition. No-op when off."""
    if _metrics is not None:
        _metrics.connectivity_changed(online)


class GaugeSampler:
    """Reads what no hook reports: the attempts in flight, and the queues as RabbitMQ sees them.

    One daemon thread per worker process. The passive declares run on one of the
    broker's publishing threads, on a connection the process has anyway.
    """

    def __init__(
        self, metrics: WorkerMetrics, broker: dramatiq.Broker, queues: list[str], limits: InFlightLimits | None
    ) -> None:
        self.metrics, self.broker, self.queues, self.limits = metrics, broker, queues, limits
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bghttp-metrics-sampler", daemon=True)
        self._log = get_logger()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        next_queue_sample = 0.0
        while not self._stop.is_set():
            if self.limits is not None:
                self.metrics.in_flight.set(self.limits.in_flight())
            if time.monotonic() >= next_queue_sample:
                next_queue_sample = time.monotonic() + QUEUE_SAMPLE_SECONDS
                self.sample_queues()
            self._stop.wait(IN_FLIGHT_SAMPLE_SECONDS)

    def sample_queues(self) -> None:
        """Set the queue gauges from one passive declare per queue; a failed one leaves its gauges as they were."""
        from ..broker import BghttpRabbitmqBroker

        broker = self.broker
        if not isinstance(broker, BghttpRabbitmqBroker):
            return
        for queue in self.queues:
            try:
                frame = broker.on_publish_thread(functools.partial(_passive_declare, broker, queue))
            except Exception as error:  # a metric must never stop a worker: RabbitMQ down, queue deleted ...
                self._log.info("metrics_queue_sample_failed", queue=queue, error=str(error) or type(error).__name__)
                continue
            self.metrics.queue_messages_ready.labels(queue).set(frame.method.message_count)
            self.metrics.queue_consumers.labels(queue).set(frame.method.consumer_count)


def _passive_declare(broker: Any, queue: str) -> Any:
    """RabbitMQ's answer to a passive declare of ``queue``, on this (publishing) thread's connection."""
    import pika.exceptions

    try:
        return broker.channel.queue_declare(queue=queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        del broker.channel  # RabbitMQ closed the channel whose declare it refused (no such queue)
        raise
    except Exception:
        del broker.connection  # lost or never made: this thread's next user opens a new one
        raise


class BghttpMetricsMiddleware(Middleware):
    """Creates bghttp's metrics in each worker process once Dramatiq's Prometheus set up the directory."""

    def __init__(self, settings: Settings) -> None:
        self.queue = settings.queue_name
        self.sampled_queues = [settings.queue_name, submit_queue_name(settings)]
        self._sampler: GaugeSampler | None = None

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        enable_metrics(self.queue)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        metrics = enable_metrics(self.queue)
        limits = next((m.limits for m in broker.middleware if isinstance(m, WorkerSlots)), None)
        self._sampler = GaugeSampler(metrics, broker, self.sampled_queues, limits)
        self._sampler.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self._sampler is not None:
            self._sampler.stop()


def metrics_middleware(settings: Settings) -> list[Middleware]:
    """Dramatiq's Prometheus middleware plus bghttp's, when ``settings.metrics_port`` is set."""
    if settings.metrics_port is None or settings.is_local:
        return []  # local mode has no Dramatiq master to serve the endpoint
    # Dramatiq's module reads its port, host and directory from the environment
    # when imported; ``bghttp worker`` sets them in the master, these are fallbacks.
    os.environ.setdefault(_DRAMATIQ_PORT, str(settings.metrics_port))
    if _MULTIPROC_DIR in os.environ:
        os.environ.setdefault(_DRAMATIQ_DB, os.environ[_MULTIPROC_DIR])
    from dramatiq.middleware.prometheus import Prometheus

    class _Prometheus(Prometheus):
        @property
        def forks(self) -> list[Any]:
            return [run_exposition_server]

    # Order matters: Prometheus.after_process_boot sets PROMETHEUS_MULTIPROC_DIR
    # before BghttpMetricsMiddleware imports prometheus_client.
    return [_Prometheus(), BghttpMetricsMiddleware(settings)]


def run_exposition_server() -> int:
    """Dramatiq's metrics exposition process, which ends with its master (a killed master left it holding the port)."""
    from dramatiq.middleware.prometheus import _run_exposition_server

    from .orphans import end_with_parent

    end_with_parent()
    return int(_run_exposition_server() or 0)  # type: ignore[no-untyped-call]


def prepare_exposition(port: int, host: str, directory: str | None = None) -> str:
    """Point Dramatiq and prometheus_client at one emptied directory; return it.

    ``directory`` defaults to a new temporary one. Must run in the ``bghttp
    worker`` master before any worker process starts: Dramatiq's exposition
    server is forked from there, and counters of a previous run left in the
    directory would be added to this run's.
    """
    import tempfile

    path = directory or tempfile.mkdtemp(prefix="bghttp-metrics-")
    os.makedirs(path, mode=0o700, exist_ok=True)
    for stale in glob.glob(os.path.join(path, "*.db")):
        os.remove(stale)
    os.environ[_MULTIPROC_DIR] = path
    os.environ[_DRAMATIQ_DB] = path
    os.environ[_DRAMATIQ_PORT] = str(port)
    os.environ[_DRAMATIQ_HOST] = host
    return path
