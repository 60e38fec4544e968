"""Messages of an attempt whose outcome cannot be written while the disk stays full: no message storm.

The queue is modelled as Dramatiq runs it: a message whose run raises (a StoreError) is
run again, with the options the actor sets; every publish adds a message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from bghttp.errors import StoreError
from bghttp.lifecycle import RequestLifecycle
from bghttp.models import Phase
from bghttp.worker.unrecorded import ATTEMPT_OPTION, OutcomeNotRecorded, UnrecordedAttempt
from tests.unit.test_interrupted_attempts import counting_transport, crash
from tests.unit.test_runner import make_runner, submit

Message = tuple[int, dict[str, Any]]


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every outcome write fails while the returned list holds True."""
    record_attempt = RequestLifecycle.record_attempt
    full = [True]

    def failing(self: RequestLifecycle, *args: Any, **kwargs: Any) -> Any:
        if full[0]:
            raise StoreError("cannot write status: [Errno 28] No space left on device")
        return record_attempt(self, *args, **kwargs)

    monkeypatch.setattr(RequestLifecycle, "record_attempt", failing)
    return full


def _queue_run(runner: Any, queue: list[Message]) -> list[Message]:
    """Run every message of ``queue`` once, as the worker would: what the queue holds afterwards."""
    published: list[Message] = []
    runner.publish = lambda request_id, token, delay, *, options=None: published.append((token, dict(options or {})))
    left: list[Message] = []
    for token, options in queue:
        unrecorded = UnrecordedAttempt.from_option(options.get(ATTEMPT_OPTION))
        try:
            runner.run("r1", token, unrecorded=unrecorded)
        except OutcomeNotRecorded as error:
            left.append((token, {**options, ATTEMPT_OPTION: error.unrecorded.to_option()}))
        except StoreError:
            left.append((token, options))  # Dramatiq's Retries: store errors without limit, options kept
    return left + published


@pytest.mark.parametrize("how", ["carried", "dead_worker"])
def test_the_messages_of_an_unwritable_outcome_do_not_multiply_while_the_disk_stays_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    transport, _ = counting_transport()
    if how == "carried":
        transport = httpx.MockTransport(lambda request: httpx.Response(503))
    runner, _ = make_runner(tmp_path, transport)
    submit(runner, retries=3)
    if how == "dead_worker":
        crash(runner, "r1", sent=True)
    full = _disk_full(monkeypatch)
    queue: list[Message] = [(1, {})]
    sizes = []
    for _ in range(6):  # six rounds of Dramatiq retries while the disk stays full
        queue = _queue_run(runner, queue)
        sizes.append(len(queue))
    assert max(sizes) <= 2, f"messages per round while the disk is full: {sizes}"

    full[0] = False
    for _ in range(3):
        queue = _queue_run(runner, queue)
    record = runner.store.read_status("r1")
    assert record is not None
    assert record.retries_used <= 2 and len(record.attempts) <= 3, record
    assert record.status.value == "completed" or record.phase is Phase.WAITING_RETRY, record
    first = record.attempts[0]
    assert first.error is None or first.error.count("recorded by the next run") <= 1, first.error
    if how == "carried":
        assert first.outcome == "http_error" and first.status_code == 503, first
    else:
        assert first.error == "the worker stopped during this attempt, after sending the request", first.error


def test_a_retry_that_hands_itself_back_for_the_claim_still_carries_the_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry published before a failed outcome write comes while another holds the claim too long: the
    message it publishes again in its place must carry the attempt too, or the attempt is closed as a dead
    worker's ('the worker stopped'), though none stopped."""

    def times_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    runner, _ = make_runner(tmp_path, httpx.MockTransport(times_out))
    submit(runner, retries=2)
    full = _disk_full(monkeypatch)
    queue = _queue_run(runner, [(1, {})])  # the re-run of message 1 and the retry, 2, both carrying the attempt
    full[0] = False
    ((token, options),) = [message for message in queue if message[0] == 2]
    monkeypatch.setattr("bghttp.worker.runner.SUCCESSOR_CLAIM_WAIT_SECONDS", 0.0)
    with runner.store.claim("r1") as claimed:
        assert claimed
        handed_back = _queue_run(runner, [(token, options)])
    ((again, again_options),) = handed_back
    assert again == 2

    _queue_run(runner, [(again, again_options)])

    record = runner.store.read_status("r1")
    assert record is not None
    first = record.attempts[0]
    assert first.outcome == "timeout", first
    assert "worker stopped" not in (first.error or ""), first.error


def test_an_attempt_carried_past_a_cancel_and_a_replay_is_closed_with_its_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outcome write fails; the request is cancelled and replayed before the carrying retry runs:
    the replay's run closes the earlier attempt with the outcome the message carries, not as a dead
    worker's, and runs the replay."""
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503 if len(calls) == 1 else 200)

    runner, _ = make_runner(tmp_path, httpx.MockTransport(answer))
    submit(runner, retries=2)
    full = _disk_full(monkeypatch)
    queue = _queue_run(runner, [(1, {})])
    full[0] = False
    runner.lifecycle.cancel("r1")
    runner.lifecycle.replay("r1")
    ((token, options),) = [message for message in queue if message[0] == 2]  # the replay's token too

    _queue_run(runner, [(token, options)])

    record = runner.store.read_status("r1")
    assert record is not None and record.status.value == "completed" and len(calls) == 2, record
    first = record.attempts[0]
    assert first.outcome == "http_error" and first.status_code == 503, first
    assert "worker stopped" not in (first.error or ""), first.error
