"""Store operations run as a process of one "host" (its own mount of the volume).

python -m tests.fleet.hostproc bump STORE REQUEST_ID COUNT START_AT
    at the wall-clock time START_AT (so that the hosts overlap), applies COUNT
    changes to the request's status record (token + 1 each), under its status lock
"""

from __future__ import annotations

import json
import sys
import time

from bghttp.errors import BghttpError
from bghttp.models import RequestSpec
from bghttp.store import FileStore

ROUND_SECONDS = 0.1


def plain_spec(request_id: str) -> RequestSpec:
    """A request nobody sends (port 9): only its records matter here."""
    return RequestSpec(
        request_id=request_id,
        method="GET",
        url="http://127.0.0.1:9/",
        headers=[],
        timeout=5.0,
        max_retries=0,
        created_at=time.time(),
    )


def bump(store_dir: str, request_id: str, count: int, start_at: float) -> None:
    store = FileStore(store_dir)
    time.sleep(max(0.0, start_at - time.time()))
    for _ in range(count):
        store.update_status(request_id, lambda r: r.evolve(token=r.token + 1), durable=False)


def create(store_dir: str, request_id: str, rounds: int, start_at: float) -> None:
    created, errors = [], []
    for n in range(rounds):
        store = FileStore(f"{store_dir}/round{n}")
        spec = plain_spec(request_id)
        store._ensure_layout()  # directories first: the moment to share is the lock file's creation
        time.sleep(max(0.0, start_at + n * ROUND_SECONDS - time.time()))
        try:
            if store.create_request(spec) is not None:
                created.append(n)
        except BghttpError as error:
            errors.append(str(error))
    print(json.dumps({"created": created, "errors": errors}))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "bump":
        bump(args[0], args[1], int(args[2]), float(args[3]))
    elif command == "create":
        create(args[0], args[1], int(args[2]), float(args[3]))
    else:
        sys.exit(f"unknown command {command!r}")
