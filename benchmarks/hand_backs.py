"""Drain fast GETs through a worker whose per-host cap forces hand-backs; count the requests left stranded.

    python -m benchmarks.hand_backs                       # 3 drains of 3,000 GETs, 2 processes, cap 2 per host
    python -m benchmarks.hand_backs --gets 10000 --drains 3 --per-host 2 --in-flight 16
    python -m benchmarks.hand_backs --tree DIR            # the workers from another source tree (an older engine)

Every GET goes to one host (the Python target server), so with a low
``BGHTTP_MAX_IN_FLIGHT_PER_HOST`` most messages find their host busy, and those
that cannot wait in the process are handed back to the broker as the request's
next run. A request is *stranded* when it is not final and nothing happens to
the store for ``--stall`` seconds (longer than any hand-back delay, 10 s, and a
successor's wait for the claim, 10 s): no message is left to run it. Prints one
line per drain, and the stranded requests' records if any. Only measures: the
exit status is 1 when a request was stranded.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

from bghttp import BackgroundHttpClient, RequestStatus
from bghttp.store import FileStore

from .infra import WorkerShape, bench_settings, load, worker_group
from .target import start_target

SUBMIT_CHUNK = 500


def drain(gets: int, shape: WorkerShape, stall: float) -> tuple[dict[str, int], list[str], float]:
    """One drain: (log events counted, stranded records, seconds until all final or stalled)."""
    with start_target("python") as target, bench_settings(fsync=True) as settings, worker_group(
        settings, shape=shape
    ) as group, BackgroundHttpClient(settings) as client:
        started = time.monotonic()
        for offset in range(0, gets, SUBMIT_CHUNK):
            client.submit_many([{"method": "GET", "url": target.small_url}] * min(SUBMIT_CHUNK, gets - offset))
        store = FileStore(settings.store_dir, fsync=False)
        pending = set(store.request_ids())
        last_change, last_pending = time.monotonic(), len(pending)
        while pending and time.monotonic() - last_change < stall:
            time.sleep(1.0)
            for request_id in list(pending):
                record = store.read_status(request_id)
                if record is not None and record.is_terminal:
                    pending.discard(request_id)
            if len(pending) != last_pending:
                last_change, last_pending = time.monotonic(), len(pending)
        seconds = time.monotonic() - started - (stall if pending else 0.0)
        failed = sum(1 for r in store.statuses() if r.status is not RequestStatus.COMPLETED) - len(pending)
        stranded = [json.dumps(record.to_json()) for request_id in sorted(pending)
                    if (record := store.read_status(request_id)) is not None]
        counts = _count_log_events(group.log_path)
        counts["failed"] = failed
        return counts, stranded, seconds


def _count_log_events(log_path: Path) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("event") == "message_deferred":
            counts[f"deferred ({event.get('reason')})"] += 1
        elif event.get("event") == "message_dropped":
            counts[f"dropped ({event.get('reason')})"] += 1
    return dict(counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hand_backs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gets", type=int, default=3000, help="GETs per drain (3,000)")
    parser.add_argument("--drains", type=int, default=3, help="drains, each with a new store and queue (3)")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (2)")
    parser.add_argument("--in-flight", type=int, default=16, help="BGHTTP_MAX_IN_FLIGHT per process (16)")
    parser.add_argument("--per-host", type=int, default=2, help="BGHTTP_MAX_IN_FLIGHT_PER_HOST (2)")
    parser.add_argument("--stall", type=float, default=45.0, help="seconds without progress that end a drain (45)")
    parser.add_argument("--tree", type=Path, help="run the workers from this source tree's bghttp")
    args = parser.parse_args(argv)
    env = (("BGHTTP_MAX_IN_FLIGHT", str(args.in_flight)), ("BGHTTP_MAX_IN_FLIGHT_PER_HOST", str(args.per_host)))
    shape = WorkerShape(processes=args.processes, env=env, tree=args.tree)
    print(f"# {shape.describe()}; {args.gets:,} GETs to one host per drain; load {load()}")
    any_stranded = False
    for number in range(1, args.drains + 1):
        counts, stranded, seconds = drain(args.gets, shape, args.stall)
        any_stranded = any_stranded or bool(stranded)
        shown = ", ".join(f"{name}: {count:,}" for name, count in sorted(counts.items()))
        print(f"drain {number}: {len(stranded)} stranded of {args.gets:,} in {seconds:.1f} s; {shown}; "
              f"load {load()}", flush=True)
        for record in stranded:
            print(f"  stranded: {record}")
    return 1 if any_stranded else 0


if __name__ == "__main__":
    sys.exit(main())
