"""How many attempts a worker process runs at once: in all, and against one host.

An attempt mostly waits on a socket, so the number in flight is its own
setting (``BGHTTP_MAX_IN_FLIGHT``), not a CPU one. One slow host must not take
every place: at most ``BGHTTP_MAX_IN_FLIGHT_PER_HOST`` attempts of a process go
to one (scheme, host, port) at once.

A message whose host is at its cap does not take a place. It waits in the
process for one (FIFO, handed over directly when an attempt to that host ends),
on one of the threads kept for waiting only, so waiting never takes a thread an
attempt to another host could use; when those are all taken, or the wait runs
past ``MAX_WAIT_SECONDS``, the runner hands the message back to the broker with
a short delay. Neither spends a retry: no attempt was made.

A thread holds at most one place, from :meth:`InFlightLimits.acquire` until
:meth:`InFlightLimits.release` (idempotent, so the runner may release early and
again when the run ends).
"""

from __future__ import annotations

import collections
import random
import threading
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from ..config import Settings
from ..core.urls import OriginKey, origin_key
from ..logs import get_logger

#: Longest a message waits in the process for its host; then it goes back to the broker.
MAX_WAIT_SECONDS = 10.0
#: Bounds of the delay of a message handed back for a busy host (seconds).
MIN_DEFER_SECONDS = 0.2
MAX_DEFER_SECONDS = 10.0
#: Weight of the newest attempt in a host's average attempt time.
DURATION_WEIGHT = 0.2

HostKey = OriginKey
#: A URL that does not parse shares one key (its attempt fails fast).
host_key = origin_key


def waiting_threads(max_in_flight: int) -> int:
    """Threads a worker process keeps, beyond ``max_in_flight``, for messages waiting on a busy host."""
    return max(1, max_in_flight // 2)


class _Waiter:
    __slots__ = ("granted", "key", "woken")

    def __init__(self, key: HostKey) -> None:
        self.key = key
        self.granted = False
        self.woken = threading.Event()


class InFlightLimits:
    """The places of one worker process; thread-safe."""

    def __init__(self, max_in_flight: int, max_per_host: int, max_waiting: int | None = None) -> None:
        self.max_in_flight = max_in_flight
        self.max_per_host = max_per_host
        self.max_waiting = waiting_threads(max_in_flight) if max_waiting is None else max_waiting
        self._lock = threading.Lock()
        self._total = 0
        self._per_host: collections.Counter[HostKey] = collections.Counter()
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._held = threading.local()
        self._durations: dict[HostKey, float] = {}
        self._stopping = False

    # ------------------------------------------------------------- places
    def acquire(self, url: str, *, wait: float = MAX_WAIT_SECONDS) -> bool:
        """Take a place for an attempt to ``url`` on this thread; False: none came within ``wait`` s.

        False at once when every waiting thread is taken or the worker is shutting down.
        """
        key = host_key(url)
        self.release()  # a thread runs one attempt at a time
        with self._lock:
            if self._fits(key):
                self._take(key)
                return self._hold(key)
            if self._stopping or wait <= 0 or len(self._waiters) >= self.max_waiting:
                return False
            waiter = _Waiter(key)
            self._waiters.append(waiter)
        # One wait, no polling: a release hands the place over and sets the event,
        # and so does a shutdown (``stop_waiting``); a wake-up costs CPU, hundreds of them a lot.
        waiter.woken.wait(wait)
        with self._lock:
            if waiter.granted:  # handed over, maybe just as the wait ran out: it is ours
                return self._hold(key)
            self._waiters.remove(waiter)
            return False

    def release(self) -> None:
        """Give back this thread's place, if it holds one, to the first waiter it fits."""
        key, started = getattr(self._held, "key", None), getattr(self._held, "started", 0.0)
        if key is None:
            return
        self._held.key = None
        with self._lock:
            self._total -= 1
            self._per_host[key] -= 1
            if not self._per_host[key]:
                del self._per_host[key]
            self._note_duration(key, time.monotonic() - started)
            for waiter in self._waiters:
                if self._fits(waiter.key):
                    self._waiters.remove(waiter)
                    self._take(waiter.key)
                    waiter.granted = True
                    waiter.woken.set()
                    break

    def stop_waiting(self) -> None:
        """The worker is shutting down: waiting messages go back to the broker, and no new one waits."""
        with self._lock:
            self._stopping = True
            for waiter in self._waiters:
                waiter.woken.set()

    def defer_delay(self, url: str) -> float:
        """How long a message handed back for its busy host should wait: about one attempt to it, jittered."""
        typical = self._durations.get(host_key(url), 1.0)
        return min(MAX_DEFER_SECONDS, max(MIN_DEFER_SECONDS, typical * random.uniform(0.5, 1.5)))

    # ------------------------------------------------------------- counts
    def in_flight(self, url: str | None = None) -> int:
        """Places taken now, in all or by attempts to ``url``'s host."""
        with self._lock:
            return self._total if url is None else self._per_host.get(host_key(url), 0)

    def snapshot(self) -> tuple[int, dict[str, int]]:
        """Places taken now: in all, and by ``scheme://host:port`` (for the heartbeat)."""
        with self._lock:
            by_host = {f"{scheme}://{host}:{port}": n for (scheme, host, port), n in self._per_host.items() if n}
            return self._total, by_host

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)

    # ----------------------------------------------------------- internal
    def _fits(self, key: HostKey) -> bool:
        return self._total < self.max_in_flight and self._per_host[key] < self.max_per_host

    def _take(self, key: HostKey) -> None:
        self._total += 1
        self._per_host[key] += 1

    def _hold(self, key: HostKey) -> bool:
        self._held.key, self._held.started = key, time.monotonic()
        return True

    def _note_duration(self, key: HostKey, seconds: float) -> None:
        previous = self._durations.get(key)
        self._durations[key] = seconds if previous is None else previous + DURATION_WEIGHT * (seconds - previous)
        if len(self._durations) > 10_000:  # a worker that met very many hosts forgets the oldest
            del self._durations[next(iter(self._durations))]


class WorkerSlots(Middleware):
    """Sizes a Dramatiq worker process by ``BGHTTP_MAX_IN_FLIGHT``, whatever its ``--threads``.

    A Dramatiq worker thread runs one message until it is acked, so a process
    runs as many attempts at once as it has threads: ``max_in_flight`` of them,
    plus the threads kept for messages waiting on a busy host. Set in
    ``before_worker_boot``, before Dramatiq starts the threads and the consumers.
    """

    def __init__(self, settings: Settings) -> None:
        self.limits = InFlightLimits(settings.max_in_flight, settings.max_in_flight_per_host)

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        threads = self.limits.max_in_flight + self.limits.max_waiting
        replaced = worker.worker_threads  # Dramatiq's --threads (8 unless given): not what sizes a bghttp worker
        # Dramatiq's own prefetch (2 x threads) would hold twice the messages a
        # process can start, away from the other processes; a quarter more keeps
        # every thread fed while acks travel back.
        worker.worker_threads = threads
        worker.queue_prefetch = min(threads + threads // 4, 65535)
        get_logger().info(
            "worker_slots",
            max_in_flight=self.limits.max_in_flight,
            max_in_flight_per_host=self.limits.max_per_host,
            waiting_threads=self.limits.max_waiting,
            threads=threads,
            dramatiq_threads_replaced=replaced,
            prefetch=worker.queue_prefetch,
        )

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.limits.stop_waiting()  # waiting messages go back to the broker instead of holding the stop


__all__ = ["InFlightLimits", "WorkerSlots", "host_key", "waiting_threads"]
