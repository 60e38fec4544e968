"""``bghttp workers``: the worker processes a store's heartbeats describe, and whether one serves a queue.

Reads ``<store>/workers/`` (see :mod:`bghttp.heartbeats`); never writes. The
clock warnings go to stderr in both output forms, so ``--json`` stays one
document on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import IO

from ..config import Settings
from ..errors import StoreError
from ..heartbeats import WorkerHeartbeat, read_heartbeats, skew_warnings
from ..models import Phase, StatusRecord
from ..quoting import terminal_safe
from . import output as out

#: A request queued (or past its retry's due time) this long without a worker is worth a word.
QUEUED_NOTICE_SECONDS = 5.0

#: Characters a terminal would act on instead of showing: C0/C1 controls, DEL, and
#: the bidirectional formatting characters that reorder what follows them.


def visible(text: str) -> str:
    """``text`` safe for the operator's terminal: controls and bidi overrides shown as escapes.

    Heartbeat records and server text are written by others and must not drive the
    terminal; the CLI's one escaping function (``quoting.terminal_safe``) does it.
    """
    return terminal_safe(text)


def cmd_workers(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.store_dir.is_dir():
        raise StoreError(f"no store at {settings.store_dir} (set --store or BGHTTP_STORE_DIR)")
    now = datetime.now(UTC)
    heartbeats = read_heartbeats(settings.store_dir, now=now)
    warnings = skew_warnings(heartbeats, now=now)
    if getattr(args, "json", False):
        out.print_json(
            {
                "store": str(settings.store_dir),
                "workers": [heartbeat.to_json() for heartbeat in heartbeats],
                "clock_warnings": warnings,
            }
        )
    else:
        print_workers(heartbeats, now)
    for warning in warnings:
        print(f"warning: {visible(warning)}", file=sys.stderr)
    return 0


def print_workers(heartbeats: list[WorkerHeartbeat], now: datetime, stream: IO[str] | None = None) -> None:
    """One row per worker process: live ones first, then stale ones."""
    stream = stream or sys.stdout
    if not heartbeats:
        print("no workers have a heartbeat in this store", file=stream)
        return
    header = ("HOST", "PID", "QUEUE", "STATE", "SEEN", "IN FLIGHT", "TAKEN", "DONE", "FAILED", "SKEW", "BROKER")
    rows = [header]
    for heartbeat in sorted(heartbeats, key=lambda h: (h.stale, h.host, h.pid)):
        rows.append(
            (
                visible(heartbeat.host),
                str(heartbeat.pid),
                visible(heartbeat.queue),
                _state(heartbeat),
                f"{_age(heartbeat.age(now))} ago",
                str(heartbeat.in_flight),
                str(heartbeat.taken),
                str(heartbeat.completed),
                str(heartbeat.failed),
                f"{round(heartbeat.skew, 1) + 0.0:+.1f}s",  # + 0.0: no "-0.0s"
                visible(heartbeat.broker),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        print(f"{cells}  {row[-1]}", file=stream)


def _state(heartbeat: WorkerHeartbeat) -> str:
    if heartbeat.stale:
        return "stale"
    if not heartbeat.online:
        since = heartbeat.offline_since
        return "offline" if since is None else f"offline since {out.timestamp(since.timestamp())}"
    return "live"


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


# ------------------------------------------------------------- who serves a request


def serving_workers(heartbeats: list[WorkerHeartbeat], queue: str) -> list[WorkerHeartbeat]:
    """The live workers among a store's heartbeats that would run a request sent on ``queue``.

    A local-mode worker runs every pending request of its store, whatever the queue.
    """
    return [h for h in heartbeats if not h.stale and (h.queue == queue or h.broker == "local")]


def waiting_for_a_worker_since(record: StatusRecord, now: float) -> float | None:
    """Since when ``record`` has waited for a worker to take it: queued, or a retry past its due time."""
    if record.phase is Phase.QUEUED:
        return record.updated_at
    if record.phase is Phase.WAITING_RETRY and record.next_attempt_at is not None and record.next_attempt_at < now:
        return record.next_attempt_at
    return None


def unserved_notice(
    record: StatusRecord, settings: Settings, *, queue: str = "", now: float | None = None
) -> str | None:
    """A line saying no live worker serves the request's queue and store, when it has waited long for one.

    ``queue``: the one the request was submitted to (its spec's); "" for a request saved
    before queues were recorded, which is taken to be on this command's ``BGHTTP_QUEUE``.
    """
    now = time.time() if now is None else now
    queue = queue or settings.queue_name
    since = waiting_for_a_worker_since(record, now)
    if since is None or now - since < QUEUED_NOTICE_SECONDS:
        return None
    try:
        if serving_workers(read_heartbeats(settings.store_dir), queue):
            return None
    except StoreError:
        return None  # the heartbeats cannot be read here: whether a worker serves it is not known
    return (
        f"{record.request_id} has waited for a worker since {out.timestamp(since)}, and no live worker serves "
        f"queue {queue} on store {settings.store_dir} (see bghttp workers)"
    )
