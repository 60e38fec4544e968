"""The dashboard's requests page with 100,000 requests in the store: server time for the newest 100.

Run from the repository root (needs ``bghttp[dashboard]``)::

    python -m benchmarks.dashboard_requests [--requests 100000] [--store DIR] [--keep]

Creates the requests directly through the store API (no broker, no worker, no
fsync): every 10th ends failed, every 3rd completed, the rest stay queued. Then
asks the application (in-process, through its ASGI interface) for the requests
page and reads its ``Server-Timing`` header: the time the application took,
from the request's arrival to the first byte of the answer. Not a test: the
figures go to benchmarks/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bghttp.config import Settings
from bghttp.lifecycle import finish, mark_running
from bghttp.models import AttemptRecord, RequestSpec, RequestStatus
from bghttp.store import FileStore


def fill(store: FileStore, count: int) -> None:
    started = time.perf_counter()
    for number in range(count):
        request_id = f"bench-{number:07d}"
        spec = RequestSpec(
            request_id=request_id,
            method="GET",
            url=f"http://host{number % 7}.example/items/{number}",
            headers=[("Accept", "application/json")],
            timeout=10.0,
            max_retries=0,
            created_at=time.time(),
        )
        store.create_request(spec)
        if number % 10 == 0 or number % 3 == 0:
            failed = number % 10 == 0
            attempt = AttemptRecord(number=1, started_at=time.time())
            ended = AttemptRecord(
                number=1,
                started_at=attempt.started_at,
                finished_at=time.time(),
                outcome="http_error" if failed else "success",
                status_code=500 if failed else 200,
                error="HTTP 500 Internal Server Error" if failed else None,
            )
            status = RequestStatus.FAILED if failed else RequestStatus.COMPLETED
            store.update_status(
                request_id, lambda record, a=attempt, e=ended, s=status: finish(mark_running(record, 1, a), e, s)
            )
        if number and number % 10000 == 0:
            print(f"  {number} requests, {time.perf_counter() - started:.0f} s", flush=True)


def time_page(store_dir: Path, path: str, repeats: int) -> list[float]:
    from starlette.testclient import TestClient

    from bghttp.dashboard.app import create_app

    settings = Settings(store_dir=store_dir, broker_url="local")
    client = TestClient(create_app(settings), base_url="http://127.0.0.1:8470")
    figures = []
    for _ in range(repeats):
        response = client.get(path)
        assert response.status_code == 200, response.status_code
        figures.append(float(response.headers["server-timing"].split("dur=")[1]))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--store", type=Path, help="an existing benchmark store to reuse (else a new one in /tmp)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the store for another run")
    args = parser.parse_args()
    store_dir = args.store or Path(tempfile.mkdtemp(prefix="bghttp-dashboard-bench-")) / "store"
    try:
        store = FileStore(store_dir, fsync=False)
        existing = sum(1 for _ in store.request_ids())
        if existing < args.requests:
            print(f"creating {args.requests - existing} requests in {store_dir}")
            fill(store, args.requests)  # IDs already there are skipped by create_request
        print(f"{sum(1 for _ in store.request_ids())} requests in the store")
        for path in ("/requests", "/requests?page=2", "/requests?status=failed", "/requests?host=host3.example"):
            figures = time_page(store_dir, path, args.repeats)
            print(
                f"GET {path}: first {figures[0]:.0f} ms, median {statistics.median(figures):.0f} ms, "
                f"max {max(figures):.0f} ms (server time, {args.repeats} requests)"
            )
    finally:
        if not args.keep and args.store is None:
            shutil.rmtree(store_dir.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
