"""Retry timing: how late does a retry reach the target server, at the real schedule (scale 1)?

``python -m benchmarks.retry_timing [--requests 200] [--cpu-load N]`` starts
``bghttp worker`` (its defaults: 2 processes) on a fresh queue and store,
submits ``--requests`` GETs with ``retries=2`` to a loopback server that answers
each request's first two attempts with 500 and the third with 200, and waits
until all are completed (the schedule is 2 s + 4 s, so about 6-8 s per request,
all in parallel). For each retry it compares the moment the server received it
with the attempt's ``due_at`` (the previous attempt's ``finished_at`` + 2ⁿ s):
lateness = arrival - due_at. None may be negative. ``--cpu-load N`` runs N
busy-loop processes meanwhile (load on a 2-core machine).

Prints one Markdown block for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.server
import multiprocessing
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

from bghttp import BackgroundHttpClient, RequestStatus
from bghttp.worker.retry_policy import backoff_seconds

from .infra import WorkerShape, bench_settings, delete_queues, load, worker_group
from .stats import percentile

FAILURES = 2


class _FailsTwice(http.server.BaseHTTPRequestHandler):
    """500 for each path's first two requests, then 200; records each arrival (time.time())."""

    arrivals: dict[str, list[float]] = {}
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        now = time.time()
        with self.lock:
            seen = self.arrivals.setdefault(self.path, [])
            seen.append(now)
            failing = len(seen) <= FAILURES
        body = b"no" if failing else b"ok"
        self.send_response(500 if failing else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _burn() -> None:
    while True:
        pass


def run(requests: int, cpu_load: int, tree: Path | None = None) -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailsTwice)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    burners = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(cpu_load)]
    shape = WorkerShape(tree=tree)
    try:
        with bench_settings() as settings, worker_group(settings, shape=shape):
            for burner in burners:
                burner.start()
            load_before = load()
            started = time.monotonic()
            with BackgroundHttpClient(settings) as client:
                ids = [client.get(f"{base}/r/{index}", retries=FAILURES).request_id for index in range(requests)]
                records = [client.wait(request_id, timeout=300) for request_id in ids]
            took = time.monotonic() - started
            load_after = load()
            delete_queues(f"{settings.queue_name}.submit")
    finally:
        for burner in burners:
            burner.terminate()
        server.shutdown()
        server.server_close()

    lateness: list[float] = []
    due_errors: list[float] = []
    for index, record in enumerate(records):
        if record.status is not RequestStatus.COMPLETED or len(record.attempts) != FAILURES + 1:
            raise RuntimeError(f"request {index} ended {record.status.value} after {len(record.attempts)} attempts")
        arrivals = _FailsTwice.arrivals[f"/r/{index}"]
        for retry in range(1, FAILURES + 1):
            previous, attempt = record.attempts[retry - 1], record.attempts[retry]
            assert attempt.due_at is not None and previous.finished_at is not None
            due_errors.append(attempt.due_at - (previous.finished_at + backoff_seconds(retry)))
            lateness.append(arrivals[retry] - attempt.due_at)
    ms = [value * 1000 for value in lateness]
    early = sum(1 for value in lateness if value < 0)
    figures = " | ".join(f"{percentile(ms, pct):.0f}" for pct in (50, 90, 99)) + f" | {max(ms):.0f} | {min(ms):.1f}"
    return "\n".join(
        [
            f"- **Date**: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
            f"- **Command**: `python -m benchmarks.retry_timing --requests {requests} --cpu-load {cpu_load}"
            + (f" --tree {tree}`" if tree else "`"),
            f"- **Machine**: {os.cpu_count()} cores, Python {platform.python_version()}; shared with other work",
            f"- **Workers**: {shape.describe()}, BGHTTP_BACKOFF_SCALE=1, BGHTTP_FSYNC=1, real RabbitMQ",
            f"- **Load** (1/5/15 min) before/after: {load_before} / {load_after}; {cpu_load} busy-loop processes; "
            f"took {took:.0f} s",
            f"- {len(lateness)} retries ({requests} requests x {FAILURES}); early: {early}; "
            f"due_at - (previous finished_at + 2^n): max |{max(abs(e) for e in due_errors) * 1000:.3f}| ms",
            "",
            "| lateness at the server (ms) | p50 | p90 | p99 | max | min |",
            "|---|---:|---:|---:|---:|---:|",
            f"| arrival - due_at | {figures} |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--cpu-load", type=int, default=0, metavar="N", help="busy-loop processes meanwhile")
    parser.add_argument("--tree", type=Path, help="run the workers from another source tree (an older engine)")
    args = parser.parse_args()
    print(run(args.requests, args.cpu_load, args.tree))


if __name__ == "__main__":
    main()
