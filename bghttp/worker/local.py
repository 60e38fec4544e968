"""Local mode: bghttp without RabbitMQ, for one machine.

``BGHTTP_BROKER_URL=local`` replaces RabbitMQ with Dramatiq's in-memory
``StubBroker`` and runs an in-process ``dramatiq.Worker`` with the same
middleware and actor as a real worker. Messages live only in this process's
memory, so the store stays the record of truth:

* at start, a :class:`LocalWorker` re-publishes every non-terminal request
  nobody is running (:func:`bghttp.recovery.recover_pending`), a waiting retry
  at its due time;
* every ``local_rescan_interval`` seconds it also takes over requests that look
  orphaned (another local process on the store died): nobody runs them, this
  process holds no message for them, and their record has not changed (or their
  retry was due) ``local_orphan_after`` seconds ago.

Taking a request over never sends it twice: recovery publishes a newer token
under the request's claim, the older message (wherever it is) becomes stale and
is dropped, and the claim stops two processes from running one attempt.

:func:`run_local_worker` is ``bghttp worker --local``: a LocalWorker that runs
until SIGINT or SIGTERM.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from ..broker import ACTOR_NAME, create_broker, publish_request
from ..config import LOCAL_BROKER, Settings
from ..errors import LocalWorkerDied, StoreError
from ..lifecycle import parse_message_args
from ..logs import configure_logging, get_logger
from ..models import Phase, StatusRecord
from ..recovery import recover_pending
from ..store import FileStore
from ..store_api import Store
from .actor import RunnerHolder, declare_actor, worker_middleware
from .connectivity import MonitorHolder

AnyMessage = dramatiq.Message[Any]

#: How long an idle consumer waits for a message (ms); also the resolution of
#: delayed messages, which the worker moves to the work queue when they are due.
POLL_MS = 100
#: Every this many rescans, terminal records are read again too (see ``_pending_records``).
FULL_SCAN_EVERY = 60
#: How long ``stop`` lets running attempts finish (ms). Attempts still running
#: after it are abandoned with the process; the next start recovers them.
STOP_TIMEOUT_MS = 5000


class HeldMessages(Middleware):
    """Counts the request messages this process's broker holds, per (request ID, token).

    Every enqueue (a submit, a retry, a delayed message becoming due) adds one;
    every ack or nack takes one away. A rescan leaves alone what is held here:
    this process will run it.
    """

    def __init__(self) -> None:
        self._tokens: dict[str, collections.Counter[int]] = {}
        self._lock = threading.Lock()

    def after_enqueue(self, broker: dramatiq.Broker, message: AnyMessage, delay: int | None) -> None:
        self._change(message, +1)

    def after_ack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._change(message, -1)

    def after_nack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        self._change(message, -1)

    def _change(self, message: AnyMessage | MessageProxy, step: int) -> None:
        key = _request_key(message)
        if key is None:
            return
        request_id, token = key
        with self._lock:
            tokens = self._tokens.setdefault(request_id, collections.Counter())
            tokens[token] += step
            if tokens[token] <= 0:
                del tokens[token]
            if not tokens:
                del self._tokens[request_id]

    def holds(self, request_id: str, min_token: int) -> bool:
        """True if a message for ``request_id`` with a token >= ``min_token`` is held."""
        with self._lock:
            return any(token >= min_token for token in self._tokens.get(request_id, ()))


class ThreadWatch(Middleware):
    """Remembers why a thread of the in-process worker ended by an exception.

    A worker thread whose message handling raises past Dramatiq's own handlers
    ends, and with all of them gone nothing runs: ``LocalWorker.raise_if_dead``
    reports that, naming the cause recorded here, instead of letting a caller
    wait forever.
    """

    def __init__(self) -> None:
        self._causes: list[str] = []
        self._lock = threading.Lock()

    def after_worker_thread_boot(self, broker: dramatiq.Broker, thread: Any) -> None:
        process_message = thread.process_message

        def watched(message: MessageProxy) -> None:
            try:
                process_message(message)
            except BaseException as error:
                self.record(thread.name, error)
                raise

        thread.process_message = watched  # the thread's loop looks it up on every message

    def record(self, thread_name: str, error: BaseException) -> None:
        with self._lock:
            self._causes.append(f"{thread_name}: {type(error).__name__}: {error}")

    @property
    def causes(self) -> list[str]:
        with self._lock:
            return list(self._causes)


def _request_key(message: AnyMessage | MessageProxy) -> tuple[str, int] | None:
    return parse_message_args(message.args) if message.actor_name == ACTOR_NAME else None


def is_orphaned(record: StatusRecord, now: float, orphan_after: float) -> bool:
    """Whether a non-terminal record looks abandoned (the caller checks the claim)."""
    if record.phase is Phase.RUNNING:
        # The runner holds the claim for the whole attempt; recovery takes the
        # claim first, so an unclaimed "running" request has lost its runner.
        return True
    # A retry waits in some process's memory until it is due; anything else
    # that is alive somewhere changes its record now and then.
    quiet_since = max(record.updated_at, record.next_attempt_at or 0.0)
    return now >= quiet_since + orphan_after


class LocalWorker:
    """An in-process worker on an in-memory broker, fed from the store.

    ``broker`` is ready at once (submits publish to it); :meth:`start` is
    idempotent and cheap after its first call; :meth:`stop` is final.
    """

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store: Store = store or FileStore(settings.store_dir, fsync=settings.fsync)
        self.held = HeldMessages()
        self.watch = ThreadWatch()
        # As in a worker process: one connectivity monitor, shared by the gate and the runner.
        connectivity = MonitorHolder(settings)
        self.broker = create_broker(settings, [*worker_middleware(settings, connectivity), self.held, self.watch])
        declare_actor(self.broker, settings, RunnerHolder(settings, self.broker, self.store, connectivity=connectivity))
        self._publish = functools.partial(publish_request, self.broker, settings.queue_name)
        self._born = time.time()
        self._lock = threading.Lock()
        self._worker: dramatiq.Worker | None = None
        self._stopped = threading.Event()
        self._scanner: threading.Thread | None = None
        self._log = get_logger(store=self.store.location, mode="local")
        self._terminal: set[str] = set()  # IDs known terminal; guarded by _scan_lock
        self._scan_lock = threading.Lock()
        self._died_logged = False

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._stopped.is_set()

    def start(self) -> None:
        """Start the worker threads and recover the store's pending requests (first call only)."""
        if self._worker is not None and not self._stopped.is_set():
            return
        with self._lock:
            if self._stopped.is_set():
                raise RuntimeError("this local worker was stopped; create a new client")
            if self._worker is not None:
                return
            self.broker.emit_after("process_boot")
            worker = dramatiq.Worker(self.broker, worker_threads=self.settings.local_threads, worker_timeout=POLL_MS)
            worker.start()
            self._worker = worker
            self._log.info("local_worker_started", threads=self.settings.local_threads)
            # Everything not touched since this worker was made belongs to nobody
            # alive that we know of; newer records belong to live submitters.
            born = self._born
            self.recover(
                lambda record: record.updated_at < born or self._orphaned(record),
                why="pending in the store at start; nobody was running them",
            )
            if self.settings.local_rescan_interval > 0:
                self._scanner = threading.Thread(target=self._rescan_loop, name="bghttp-local-rescan", daemon=True)
                self._scanner.start()

    def raise_if_dead(self) -> None:
        """Raise LocalWorkerDied if a thread of the started worker ended without ``stop``."""
        worker = self._worker
        if worker is None or self._stopped.is_set():
            return
        threads: list[threading.Thread] = [*worker.workers, *worker.consumers.values()]
        if self._scanner is not None:
            threads.append(self._scanner)
        dead = [thread for thread in threads if not thread.is_alive()]
        if not dead:
            return
        causes = "; ".join(self.watch.causes) or "its traceback is on stderr"
        if self._died_logged is False:
            self._died_logged = True
            self._log.error("local_worker_died", threads=[thread.name for thread in dead], cause=causes)
        raise LocalWorkerDied(
            f"the in-process worker stopped working: {len(dead)} of its {len(threads)} threads ended ({causes}); "
            "the requests stay in the store, and a new client (or `bghttp worker --local`) recovers them"
        )

    def recover(self, should_recover: Callable[[StatusRecord], bool] | None = None, *, why: str | None = None) -> int:
        """Publish a new run for pending requests nobody runs and this process does not hold.

        With ``why``, these are requests this process did not submit: taking
        them over is logged as a warning (a one-shot ``bghttp --local`` command
        would otherwise run other requests silently), with how many and why.
        """

        def wanted(record: StatusRecord) -> bool:
            if self.held.holds(record.request_id, record.token):
                return False
            return should_recover is None or should_recover(record)

        with self._scan_lock:
            count = recover_pending(self.store, self._publish, wanted, self._pending_records())
        if count and why is not None:
            self._log.warning("local_requests_taken_over", count=count, why=why)
        elif count:
            self._log.info("local_requests_recovered", count=count)
        return count

    def _pending_records(self) -> Iterator[StatusRecord]:
        """Non-terminal records; terminal ones are final, so each is read once, not every scan."""
        present = set()
        for request_id in self.store.request_ids():
            present.add(request_id)
            if request_id in self._terminal:
                continue
            with contextlib.suppress(StoreError):  # unreadable now; the next scan tries again
                record = self.store.read_status(request_id)
                if record is None:
                    continue
                if record.is_terminal:
                    self._terminal.add(request_id)
                else:
                    yield record
        self._terminal &= present  # forget removed requests

    def _orphaned(self, record: StatusRecord) -> bool:
        return is_orphaned(record, time.time(), self.settings.local_orphan_after)

    def _rescan_loop(self) -> None:
        try:
            self._rescan_until_stopped()
        except BaseException as error:
            self.watch.record(threading.current_thread().name, error)
            raise

    def _rescan_until_stopped(self) -> None:
        scans = 0
        while not self._stopped.wait(self.settings.local_rescan_interval):
            scans += 1
            if scans % FULL_SCAN_EVERY == 0:
                # An ID can be removed and submitted again between two scans
                # (on_conflict="replace"); now and then read everything again.
                with self._scan_lock:
                    self._terminal.clear()
            try:
                self.recover(self._orphaned, why="orphaned: unchanged for local_orphan_after seconds, nobody runs them")
            except Exception as error:  # a bad scan must not end the scans
                self._log.warning("local_rescan_failed", error=f"{type(error).__name__}: {error}")

    def stop(self) -> None:
        """Stop scanning and the worker threads; messages in memory stay recoverable in the store."""
        with self._lock:
            if self._stopped.is_set():
                return
            self._stopped.set()
            worker = self._worker
        if self._scanner is not None:
            self._scanner.join()
        if worker is not None:
            worker.stop(timeout=STOP_TIMEOUT_MS)
            self._log.info("local_worker_stopped")


def run_local_worker(settings: Settings | None = None, *, stop_event: threading.Event | None = None) -> None:
    """Run a local-mode worker on ``settings.store_dir`` until SIGINT/SIGTERM (or ``stop_event``)."""
    settings = settings or Settings.from_env()
    if not settings.is_local:
        settings = dataclasses.replace(settings, broker_url=LOCAL_BROKER)
    configure_logging(settings.log_format, settings.log_level)
    stop = stop_event or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    local = LocalWorker(settings)
    try:
        local.start()
        while not stop.wait(0.5):  # a bounded wait lets signal handlers run promptly
            pass
    finally:
        local.stop()
        local.broker.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


__all__ = ["HeldMessages", "LocalWorker", "ThreadWatch", "is_orphaned", "run_local_worker"]
