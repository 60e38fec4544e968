"""The runner's hook for final events: called after the run's writes, for every message, and raising through."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bghttp.broker import BghttpRabbitmqBroker
from bghttp.errors import BrokerUnavailable
from bghttp.events import EventPublisher, event_id, final_event
from bghttp.models import RequestStatus, StatusRecord
from tests.support import free_port
from tests.unit.test_runner import make_runner, submit


def test_a_message_that_meets_its_request_final_announces_it_again_with_the_same_event(tmp_path: Path) -> None:
    calls: list[httpx.Request] = []
    runner, _ = make_runner(tmp_path, httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200)))
    announced: list[tuple[str, int, RequestStatus | None, str | None]] = []
    failures = [BrokerUnavailable("the broker did not confirm the event")]

    def after_run(record: StatusRecord, response: Path | None) -> None:
        on_disk = runner.store.read_status(record.request_id)  # the run's writes are there, durable
        assert on_disk is not None and event_id(on_disk) == event_id(record)
        assert response is not None and response.read_bytes() == b""
        announced.append((record.request_id, record.token, record.status, event_id(record)))
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

    runner.run("r1", 1)  # the runner drops the message; no announcement (it would raise: a retry forever)


def test_the_final_event_comes_from_the_run_even_if_the_request_is_removed_before_it_is_published(
    tmp_path: Path,
) -> None:
    runner, _ = make_runner(tmp_path, httpx.MockTransport(lambda r: httpx.Response(200, content=b"done")))
    submit(runner, retries=0)
    store = runner.store
    events: list[dict[str, object]] = []
    real_batch = store.batch

    @contextlib.contextmanager
    def batch_then_removed(**options: bool) -> Iterator[object]:
        # The caller saw the request final and removed it as the run's batch ended,
        # between the final write (and the claim let go) and the event.
        with real_batch(**options) as committed:
            yield committed
        assert store.delete("r1")

    store.batch = batch_then_removed  # type: ignore[method-assign]
    runner.after_run = lambda record, response: events.append(final_event(record, response))

    runner.run("r1", 1)

    assert store.read_status("r1") is None
    [event] = events
    assert (event["event_type"], event["status_code"], event["attempts"]) == ("request.completed", 200, 1)
    assert event["response_file_path"] == str(store.response_file_path("r1"))
