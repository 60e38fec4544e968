"""Store operations run as a process of one "host" (its own mount of the volume).

python -m tests.fleet.hostproc bump STORE REQUEST_ID COUNT START_AT
    at the wall-clock time START_AT (so that the hosts overlap), applies COUNT
    changes to the request's status record (token + 1 each), under its status lock
"""

from __future__ import annotations

import sys
import time

from bghttp.store import FileStore


def bump(store_dir: str, request_id: str, count: int, start_at: float) -> None:
    store = FileStore(store_dir)
    time.sleep(max(0.0, start_at - time.time()))
    for _ in range(count):
        store.update_status(request_id, lambda r: r.evolve(token=r.token + 1), durable=False)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "bump":
        bump(args[0], args[1], int(args[2]), float(args[3]))
    else:
        sys.exit(f"unknown command {command!r}")
