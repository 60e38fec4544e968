"""What ``bghttp wait`` says while nothing downloads: one line per change, on stderr.

``Wait`` reads the status every 50 ms; :class:`WaitNotes` turns each unfinished
record into at most one sentence and writes it only when the sentence's subject
changed (a new failed attempt, the network lost, the worker count), never a
spinner:

* ``attempt 2 failed (HTTP 500); retry 2 of 4 in 4 s``
* ``waiting for the network since 2026-12-04T20:31:05Z``
* ``queued since …, on queue Q, store S: no live worker serves them (see bghttp workers)``
  or ``…: 2 live workers serve them``

The narration is for a person: on a terminal, or with ``--progress``. The one
line that says no live worker serves the request is a warning, shown to a log
too. Server text (an error, a reason) is escaped before it is printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import IO

from ..config import Settings
from ..core.outcomes import Outcome
from ..errors import StoreError
from ..heartbeats import WorkerHeartbeat, read_heartbeats
from ..models import Phase, StatusRecord
from . import output as out
from .workers import QUEUED_NOTICE_SECONDS, serving_workers, visible, waiting_for_a_worker_since

#: Heartbeats are read again at most this often while a request waits for a worker.
HEARTBEAT_READ_SECONDS = 2.0
#: Longest server error text quoted in a line.
ERROR_CHARACTERS = 120


class WaitNotes:
    """Narrates one wait; ``narrate`` False: only the "no live worker" warning."""

    def __init__(
        self,
        settings: Settings,
        stream: IO[str],
        *,
        narrate: bool,
        before_line: Callable[[], None] | None = None,
        read_workers: Callable[[], list[WorkerHeartbeat]] | None = None,
        clock: Callable[[], float] = time.time,
        queue: str = "",
    ) -> None:
        self.settings = settings
        # The queue the request was submitted to; "" (saved before queues were recorded): this command's.
        self.queue = queue or settings.queue_name
        self.stream = stream
        self.narrate = narrate
        self.before_line = before_line  # clears a progress line drawn in place
        self.read_workers = read_workers or (lambda: read_heartbeats(settings.store_dir))
        self.clock = clock
        self._last_key: object = None
        self._workers: list[WorkerHeartbeat] | None = None
        self._workers_read_at = float("-inf")

    def update(self, record: StatusRecord) -> None:
        note = self._note(record, self.clock())
        if note is None:
            return
        key, line = note
        if key == self._last_key:
            return
        self._last_key = key
        if self.before_line is not None:
            self.before_line()
        self.stream.write(visible(line) + "\n")
        self.stream.flush()

    # ------------------------------------------------------------ sentences
    def _note(self, record: StatusRecord, now: float) -> tuple[object, str] | None:
        since = waiting_for_a_worker_since(record, now)
        if since is not None and now - since >= QUEUED_NOTICE_SECONDS:
            return self._queue_note(record, since, now)
        if not self.narrate:
            return None
        if record.phase is Phase.WAITING_RETRY and record.next_attempt_at is not None:
            return ("retry", record.attempt_count, record.next_attempt_at), self._retry_line(record, now)
        if record.phase is Phase.WAITING_NETWORK:
            return ("network",), f"waiting for the network since {out.timestamp(record.updated_at)}"
        if record.phase is Phase.RUNNING and record.attempt_count > 1:
            return ("running", record.attempt_count), f"attempt {record.attempt_count} running"
        return None

    def _queue_note(self, record: StatusRecord, since: float, now: float) -> tuple[object, str] | None:
        if now - self._workers_read_at >= HEARTBEAT_READ_SECONDS:  # at once the first time (-inf)
            self._workers_read_at = now
            try:
                self._workers = serving_workers(self.read_workers(), self.queue)
            except StoreError:
                self._workers = None
        if self._workers is None:
            return None  # the heartbeats cannot be read here: whether a worker serves it is not known
        count = len(self._workers)
        if count and not self.narrate:
            return None
        what = "queued" if record.phase is Phase.QUEUED else "retry due"
        where = f"on queue {self.queue}, store {self.settings.store_dir}"
        if count == 0:
            served = "no live worker serves them (see bghttp workers)"
        else:
            served = f"{count} live worker{'s' if count > 1 else ''} serve{'' if count > 1 else 's'} them"
        return ("queue", record.phase, since, count), f"{what} since {out.timestamp(since)}, {where}: {served}"

    @staticmethod
    def _retry_line(record: StatusRecord, now: float) -> str:
        last = record.attempts[-1] if record.attempts else None
        if last is not None and last.status_code is not None and last.outcome is Outcome.HTTP_ERROR:
            # Only an error status is the reason: a 200 whose body was cut short failed for that.
            why = f"HTTP {last.status_code}"
        elif last is not None and (last.error or last.outcome):
            why = (last.error or last.outcome or "")[:ERROR_CHARACTERS]
        else:
            why = (record.last_error or "an error")[:ERROR_CHARACTERS]
        number = last.number if last is not None else record.attempt_count
        wait = max(0.0, (record.next_attempt_at or now) - now)
        return (
            f"attempt {number} failed ({why}); retry {record.retries_used} of {record.max_retries} "
            f"in {_seconds(wait)}"
        )


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value:.1f} s"
    whole = round(value)  # rounded once: the minutes are whole ones, never rounded up on their own
    if whole < 120:
        return f"{whole} s"
    minutes, seconds = divmod(whole, 60)
    return f"{minutes} min {seconds} s"
