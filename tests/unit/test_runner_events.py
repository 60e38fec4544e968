"""The runner's hook for final events: called after the run's writes, for every message, and raising through."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bghttp.broker import BghttpRabbitmqBroker
from bghttp.errors import BrokerUnavailable
from bghttp.events import EventPublisher, event_id
from bghttp.models import RequestStatus
from bghttp.store_api import Store
from tests.support import free_port
from tests.unit.test_runner import make_runner, submit


def test_a_message_that_meets_its_request_final_announces_it_again_with_the_same_event(tmp_path: Path) -> None:
    calls: list[httpx.Request] = []
    runner, _ = make_runner(tmp_path, httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200)))
    announced: list[tuple[str, int, RequestStatus | None, str | None]] = []
    failures = [BrokerUnavailable("the broker did not confirm the event")]

    def after_run(store: Store, request_id: str, token: int) -> None:
        record = store.read_status(request_id)  # what the publisher reads: the run's writes are there
        assert record is not None
        announced.append((request_id, token, record.status, event_id(record) if record.is_terminal else None))
        if failures:
            raise failures.pop()

    runner.after_run = after_run
    submit(runner, retries=0)

    with pytest.raises(BrokerUnavailable):  # Dramatiq retries the message
        runner.run("r1", 1)
    runner.run("r1", 1)  # the same message again: the request is final, nothing is sent

    assert len(calls) == 1
    assert [entry[:3] for entry in announced] == [("r1", 1, RequestStatus.COMPLETED)] * 2
    assert announced[0][3] == announced[1][3] is not None


def test_a_status_file_with_no_valid_record_announces_nothing(tmp_path: Path) -> None:
    runner, _ = make_runner(tmp_path, httpx.MockTransport(lambda r: httpx.Response(200)))
    submit(runner)
    (runner.store.root / "status" / "r1.log").write_bytes(b"garbage\n")
    # A broker nobody listens on: any publish would raise BrokerUnavailable.
    publisher = EventPublisher(BghttpRabbitmqBroker(url=f"amqp://guest:guest@127.0.0.1:{free_port()}/"), "events")
    runner.after_run = publisher.announce_final

    runner.run("r1", 1)  # the runner drops the message; the announcement must not raise (a retry forever)
