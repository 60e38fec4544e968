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

prometheus_client is imported only inside a worker process, after the
multiprocess directory is known: it picks its storage when first imported.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from dramatiq.middleware import Middleware

if TYPE_CHECKING:
    import dramatiq

    from ..config import Settings
    from ..models import RequestSpec, StatusRecord
    from .execution import AttemptResult

#: Seconds from submit to a final status: requests retried with backoff take hours.
COMPLETION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, float("inf"))
ATTEMPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, float("inf"))

#: The variables Dramatiq's Prometheus middleware and prometheus_client read.
_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
_DRAMATIQ_DB = "dramatiq_prom_db"
_DRAMATIQ_PORT = "dramatiq_prom_port"
_DRAMATIQ_HOST = "dramatiq_prom_host"

_metrics: WorkerMetrics | None = None
_metrics_lock = threading.Lock()


class WorkerMetrics:
    """bghttp's metrics of one process. Thread-safe; cheap to update."""

    def __init__(self, registry: Any = None) -> None:
        import prometheus_client as prom

        self.registry = registry if registry is not None else prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter(
            "bghttp_requests", "Requests a worker brought to a final status, by status.", ["status"], registry=r
        )
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
        self._offline_since: float | None = None
        self._lock = threading.Lock()

    def observe_attempt(self, spec: RequestSpec, record: StatusRecord, result: AttemptResult) -> None:
        """Count one finished attempt; ``record`` is the status the runner left after it."""
        from ..models import Phase

        self.attempts.labels(result.outcome.value).inc()
        self.attempt_duration.observe(result.duration_ms / 1000)
        if result.response_bytes:
            self.response_bytes.inc(result.response_bytes)
        if record.phase is Phase.WAITING_RETRY:
            self.retries.inc()
        if record.is_terminal:
            self.requests.labels(record.status.value).inc()
            finished = record.completed_at or record.updated_at
            self.submit_to_completion.labels(record.status.value).observe(max(0.0, finished - record.created_at))

    def connectivity_changed(self, online: bool, now: float | None = None) -> None:
        """Record a change of the network state; offline time is counted when it ends."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self.online.set(1 if online else 0)
            if not online and self._offline_since is None:
                self._offline_since = now
            elif online and self._offline_since is not None:
                self.offline_seconds.inc(max(0.0, now - self._offline_since))
                self._offline_since = None


# --------------------------------------------------------------- process-wide


def enable_metrics() -> WorkerMetrics:
    """Create this process's metrics (once). Call after PROMETHEUS_MULTIPROC_DIR is set."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = WorkerMetrics()
        return _metrics


def observe_attempt(spec: RequestSpec, record: StatusRecord, result: AttemptResult) -> None:
    """The ``RequestRunner.on_attempt`` hook: a no-op while metrics are off."""
    if _metrics is not None:
        _metrics.observe_attempt(spec, record, result)


def connectivity_changed(online: bool) -> None:
    """For the connectivity monitor: call on every online/offline transition. No-op when off."""
    if _metrics is not None:
        _metrics.connectivity_changed(online)


class BghttpMetricsMiddleware(Middleware):
    """Creates bghttp's metrics in each worker process once Dramatiq's Prometheus set up the directory."""

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        enable_metrics()


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
    return [_Prometheus(), BghttpMetricsMiddleware()]


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
