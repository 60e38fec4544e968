"""A message handed back for a busy host must not be lost behind the claim of the thread that handed it back.

The hand-back follows the token rule: the next token's message is published,
then the record names it, then the claim is let go. When the handing-back thread
is slow to let go (a loaded machine: hundreds of threads, a slow store), the new
message meets a record that names its own token while the claim is still held.
It used to take that for "a duplicate of a running attempt" after the grace
period and drop itself; the request then stayed queued with no message at all
(issue 20, item 6: once in a 3,000-GET drain on a quiet machine, 1-2 on a loaded one).

Here the handing-back thread is held past the grace period (fault injection in
``RequestLifecycle.defer``), and the next message arrives at once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from bghttp.config import Settings
from bghttp.models import RequestStatus
from bghttp.store import FileStore
from bghttp.validation import prepare_request
from bghttp.worker.in_flight import InFlightLimits
from bghttp.worker.runner import DUPLICATE_CLAIM_GRACE_SECONDS, RequestRunner
from tests.support import capture_logs

URL = "http://busy.test/x"
#: How long the handing-back thread keeps the claim after recording the next token.
HOLD_SECONDS = DUPLICATE_CLAIM_GRACE_SECONDS + 1.0


def test_the_next_run_of_a_hand_back_waits_for_the_claim_instead_of_dropping_itself(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    sent: list[httpx.Request] = []
    limits = InFlightLimits(max_in_flight=10, max_per_host=1, max_waiting=0)
    next_runs: list[threading.Thread] = []

    def publish(request_id: str, token: int, delay: float | None, **options: object) -> None:
        # The broker delivers the handed-back message to another thread at once.
        thread = threading.Thread(target=runner.run, args=(request_id, token))
        next_runs.append(thread)
        thread.start()

    runner = RequestRunner(
        store,
        Settings(store_dir=store.root),
        httpx.Client(transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200))),
        publish,
        in_flight=limits,
    )
    assert store.create_request(prepare_request("GET", URL, request_id="r1").spec) is not None

    place_free = threading.Event()

    def other_attempt() -> None:  # holds the host's one place until the hand-back is recorded
        assert limits.acquire(URL)
        place_free.wait(10)
        limits.release()

    other = threading.Thread(target=other_attempt)
    other.start()
    while limits.in_flight(URL) == 0:
        time.sleep(0.001)

    real_defer, held = runner.lifecycle.defer, []

    def slow_defer(request_id: str, token: int) -> object:
        record = real_defer(request_id, token)
        if not held:  # the first hand-back only: its thread stalls with the claim still held
            held.append(token)
            place_free.set()
            time.sleep(HOLD_SECONDS)
        return record

    runner.lifecycle.defer = slow_defer  # type: ignore[method-assign]

    with capture_logs() as logs:
        runner.run("r1", 1)  # hands the message back (token 2), and holds the claim past the grace
        other.join(10)
        for thread in next_runs:
            thread.join(30)

    dropped = [e for e in logs if e["event"] == "message_dropped" and e.get("token") == 2]
    assert dropped == [], dropped
    record = store.read_status("r1")
    assert record is not None and record.status is RequestStatus.COMPLETED, record
    assert len(sent) == 1 and held == [2]

