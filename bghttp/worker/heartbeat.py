"""The worker side of heartbeats: what a worker process says of itself, and when it says it.

:class:`HeartbeatMiddleware` starts a :class:`~bghttp.heartbeats.HeartbeatWriter`
when the Dramatiq worker boots (in each worker process of ``bghttp worker`` or
``dramatiq bghttp.actors``, and in local mode), stops it and removes the record
when the worker shuts down cleanly. It counts the request messages taken; the
runner's ``on_attempt`` and ``on_failed_without_attempt`` hooks (through
:class:`~bghttp.worker.actor.RunnerHolder`) count the requests ended ``completed``
or ``failed``. The writer's thread reads
the in-flight places and the gate's state itself, every interval, so the
message path pays for one counter increment only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from ..broker import ACTOR_NAME
from ..config import Settings
from ..heartbeats import HeartbeatWriter, WorkerState
from ..logs import get_logger
from ..models import RequestStatus, StatusRecord
from .connectivity import MonitorHolder
from .in_flight import InFlightLimits


class HeartbeatMiddleware(Middleware):
    """Keeps this worker process's heartbeat record in the store while the worker runs."""

    def __init__(self, settings: Settings, connectivity: MonitorHolder) -> None:
        self.settings = settings
        self.connectivity = connectivity
        #: Where the in-flight places are; set by the RunnerHolder (they may be built on first use).
        self.in_flight: Callable[[], InFlightLimits | None] = lambda: None
        self.writer: HeartbeatWriter | None = None
        self._lock = threading.Lock()
        self._taken = 0
        self._completed = 0
        self._failed = 0

    # ------------------------------------------------------------ worker
    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self.settings.heartbeat_interval <= 0 or self.writer is not None:
            return
        log = get_logger(component="heartbeat")
        self.writer = HeartbeatWriter(
            self.settings.store_dir,
            queue=self.settings.queue_name,
            broker=self.settings.broker_url,
            interval=self.settings.heartbeat_interval,
            state=self.state,
            on_error=lambda error: log.warning("heartbeat_not_written", error=str(error)),
        )
        self.writer.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.stop(remove=True)

    # ----------------------------------------------------------- message
    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        if message.actor_name == ACTOR_NAME:
            with self._lock:
                self._taken += 1

    def count_outcome(self, record: StatusRecord) -> None:
        """Count a request this process brought to a final status (the runner's ``on_attempt``)."""
        if record.status is RequestStatus.COMPLETED:
            with self._lock:
                self._completed += 1
        elif record.status is RequestStatus.FAILED:
            with self._lock:
                self._failed += 1

    # ------------------------------------------------------------- state
    def state(self) -> WorkerState:
        """What the next heartbeat says (read on the writer's thread)."""
        limits = self.in_flight()
        total, by_host = limits.snapshot() if limits is not None else (0, {})
        monitor = self.connectivity.current()
        offline_since = None if monitor is None else monitor.offline_since()
        with self._lock:
            taken, completed, failed = self._taken, self._completed, self._failed
        return WorkerState(
            in_flight=total,
            in_flight_by_host=by_host,
            online=offline_since is None,
            offline_since=None if offline_since is None else datetime.fromtimestamp(offline_since, UTC),
            taken=taken,
            completed=completed,
            failed=failed,
        )
