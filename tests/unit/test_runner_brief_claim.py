"""A message with the current token must not be lost behind a claim held only for a moment.

Found by ``tests/cli/test_manage.py::test_recover_twice_sends_each_request_once``:
a stale message takes the claim just long enough to see that it is stale; the
current message arriving in that moment used to be dropped as a "duplicate of a
running attempt", leaving the request queued forever.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from bghttp.models import RequestStatus
from tests.unit.test_runner import make_runner, submit


def test_current_message_runs_after_a_brief_foreign_claim(tmp_path: Path) -> None:
    calls: list[httpx.Request] = []
    runner, published = make_runner(tmp_path, httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200)))
    submit(runner)
    holding, release = threading.Event(), threading.Event()

    def stale_check() -> None:
        with runner.store.claim("r1") as claimed:
            assert claimed
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=stale_check)
    holder.start()
    holding.wait(5)
    threading.Timer(0.2, release.set).start()  # well inside the grace period

    runner.run("r1", 1)
    holder.join()

    assert len(calls) == 1 and published == []
    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.COMPLETED
