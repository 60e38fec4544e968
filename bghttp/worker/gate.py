"""The connectivity gate: a worker starts no request while it is offline.

``ConnectivityGate`` is a Dramatiq middleware. Before a request message runs,
while the monitor says offline, it holds the worker thread on the monitor's
"online" event, for at most ``BGHTTP_OFFLINE_HOLD_SECONDS``, and marks the
request ``in_progress/waiting_network``. When the network returns the message
runs at once. When the hold runs out the message goes on to the runner, which
sees the outage and hands the request back to the broker as a delayed message
(a new run, no retry spent) before the original is acked.

Why not ``Worker.pause()``: on RabbitMQ it closes the consumer, so unacked
messages are redelivered and run twice. Why bounded: a message held unacked
longer than RabbitMQ's ``consumer_timeout`` gets its channel closed. Holding
for a bounded time and then re-publishing keeps every message's unacked time
short however long the outage lasts.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from ..broker import ACTOR_NAME
from ..config import Settings
from ..errors import BghttpError, UnknownRequest
from ..lifecycle import RequestLifecycle, is_stale, parse_message_args
from ..logs import get_logger
from ..store_api import Store
from .connectivity import MonitorHolder
from .process_store import process_store

#: The hold wakes this often to notice a worker shutdown.
SHUTDOWN_POLL_SECONDS = 0.5


class ConnectivityGate(Middleware):
    def __init__(self, settings: Settings, connectivity: MonitorHolder, store: Store | None = None) -> None:
        self.settings = settings
        self.connectivity = connectivity
        self.hold_seconds = settings.offline_hold_seconds
        self._store: Store | None = store
        self._store_lock = threading.Lock()
        self._shutting_down = threading.Event()

    # ------------------------------------------------------------ worker
    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        # Start the monitor now, in the worker process, so the first message
        # already meets a checked state.
        self.connectivity.get()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._shutting_down.set()  # let held messages go; the runner re-publishes them

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.connectivity.stop()

    # ----------------------------------------------------------- message
    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        arguments = parse_message_args(message.args) if message.actor_name == ACTOR_NAME else None
        if arguments is None:
            return
        monitor = self.connectivity.get()
        if monitor.is_online() or self.hold_seconds <= 0:
            return
        request_id, token = arguments
        log = get_logger(request_id=request_id, token=token, message_id=message.message_id)
        if not self._mark_waiting(request_id, token, log):
            return  # stale, finished or unknown: the runner drops it, no need to hold a thread
        monitor.note_held(request_id)
        log.info("request_held_offline", hold_s=self.hold_seconds)
        started = time.monotonic()
        deadline = started + self.hold_seconds
        online = False
        while not self._shutting_down.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if monitor.wait_online(min(remaining, SHUTDOWN_POLL_SECONDS)):
                online = True
                break
        log.info("request_released", online=online, held_s=round(time.monotonic() - started, 3))

    # ------------------------------------------------------------ status
    def _store_for_status(self) -> Store:
        with self._store_lock:
            if self._store is None:
                self._store = process_store(self.settings)
            return self._store

    def _mark_waiting(self, request_id: str, token: int, log: Any) -> bool:
        """Mark the request ``waiting_network``; False when this message will not run it.

        Only the current run of a request that is not running is marked: a stale
        or duplicate message says nothing about the request's state.
        """
        try:
            record = RequestLifecycle(self._store_for_status()).hold_for_network(request_id, token)
        except UnknownRequest:
            return False
        except BghttpError as error:  # a bad ID or an unreadable store: the runner decides
            log.warning("waiting_network_not_recorded", error=str(error))
            return True
        return not record.is_terminal and not is_stale(record, token)
