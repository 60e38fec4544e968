"""The request lifecycle with httpx.MockTransport: pure logic, no broker, no sockets."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from bghttp.config import Settings
from bghttp.models import AttemptRecord, Phase, RequestStatus
from bghttp.recovery import recover_pending
from bghttp.store import FileStore
from bghttp.validation import prepare_request
from bghttp.worker.retry_policy import Outcome, backoff_seconds, is_retryable
from bghttp.worker.runner import RequestRunner


class Published(list[tuple[str, int, float | None]]):
    def __call__(self, request_id: str, token: int, delay: float | None, **options: object) -> None:
        self.append((request_id, token, delay))


def make_runner(tmp_path: Path, handler: httpx.MockTransport, **settings: object) -> tuple[RequestRunner, Published]:
    store = FileStore(tmp_path / "store", fsync=False)
    published = Published()
    runner = RequestRunner(
        store, Settings(store_dir=store.root, backoff_scale=1.0, **settings), httpx.Client(transport=handler), published  # type: ignore[arg-type]
    )
    return runner, published


def submit(runner: RequestRunner, request_id: str = "r1", retries: int = 3) -> None:
    prepared = prepare_request("GET", "http://service.test/x", request_id=request_id, retries=retries)
    assert runner.store.create_request(prepared.spec) is not None


def test_backoff_schedule() -> None:
    assert [backoff_seconds(n) for n in range(1, 11)] == [2, 4, 8, 16, 32, 64, 128, 256, 512, 512]
    assert backoff_seconds(3, 0.5) == 4.0
    with pytest.raises(ValueError):
        backoff_seconds(0)
    assert is_retryable(Outcome.HTTP_ERROR) and is_retryable(Outcome.TIMEOUT) and is_retryable(Outcome.NETWORK_ERROR)
    assert not is_retryable(Outcome.TOO_LARGE) and not is_retryable(Outcome.BLOCKED)


def test_retry_is_published_before_the_status_names_it(tmp_path: Path) -> None:
    seen_status_at_publish: list[Phase] = []
    runner, published = make_runner(tmp_path, httpx.MockTransport(lambda r: httpx.Response(502)))

    def publish(request_id: str, token: int, delay: float | None, **options: object) -> None:
        record = runner.store.read_status(request_id)
        assert record is not None
        seen_status_at_publish.append(record.phase)
        published(request_id, token, delay)

    runner.publish = publish
    submit(runner)
    runner.run("r1", 1)
    ((request_id, token, delay),) = published
    assert (request_id, token) == ("r1", 2) and delay is not None and 1.9 < delay <= 2.0  # what is left of 2 s
    assert seen_status_at_publish == [Phase.RUNNING]  # the message exists before the record points at it
    record = runner.store.read_status("r1")
    assert record is not None
    assert (record.phase, record.token, record.retries_used) == (Phase.WAITING_RETRY, 2, 1)
    assert record.next_attempt_at == record.attempts[0].finished_at + 2.0  # due: the attempt's end + 2 s


def test_stale_and_terminal_messages_are_dropped(tmp_path: Path) -> None:
    calls: list[httpx.Request] = []
    runner, published = make_runner(tmp_path, httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200)))
    submit(runner)
    runner.store.update_status("r1", lambda r: r.evolve(token=3))
    runner.run("r1", 2)  # older than the record: stale
    assert calls == [] and published == []
    runner.run("r1", 3)
    assert len(calls) == 1
    runner.run("r1", 3)  # the request is terminal now
    runner.run("r1", 4)
    assert len(calls) == 1
    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.COMPLETED


def test_a_message_that_arrives_early_is_handed_back(tmp_path: Path) -> None:
    calls: list[httpx.Request] = []
    runner, published = make_runner(tmp_path, httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200)))
    submit(runner)
    due = time.time() + 30
    runner.store.update_status("r1", lambda r: r.evolve(phase=Phase.WAITING_RETRY, next_attempt_at=due))
    runner.run("r1", 1)
    assert calls == []
    ((request_id, token, delay),) = published
    assert request_id == "r1" and token == 2 and delay is not None and 29 < delay <= 30
    record = runner.store.read_status("r1")
    assert record is not None and record.next_attempt_at == due and record.phase is Phase.WAITING_RETRY


def test_a_duplicate_of_a_running_attempt_is_dropped(tmp_path: Path) -> None:
    calls: list[httpx.Request] = []
    runner, published = make_runner(tmp_path, httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200)))
    submit(runner)
    with runner.store.claim("r1") as claimed:  # another worker runs token 1's attempt
        assert claimed
        runner.lifecycle.mark_running("r1", 1, AttemptRecord(number=1, started_at=time.time()))
        runner.run("r1", 1)
    assert calls == [] and published == []


def test_retries_exhausted_fails_with_last_error(tmp_path: Path) -> None:
    runner, published = make_runner(tmp_path, httpx.MockTransport(lambda r: httpx.Response(500, text="boom")))
    submit(runner, retries=1)
    runner.run("r1", 1)
    runner.store.update_status("r1", lambda r: r.evolve(next_attempt_at=time.time()))
    runner.run("r1", 2)
    record = runner.store.read_status("r1")
    assert record is not None
    assert record.status is RequestStatus.FAILED and record.attempt_count == 2 and record.retries_used == 1
    assert record.last_error == "HTTP 500 Internal Server Error"
    assert runner.store.response_body_path("r1").read_text() == "boom"
    assert len(published) == 1


def test_not_retryable_outcome_fails_at_once(tmp_path: Path) -> None:
    runner, published = make_runner(
        tmp_path, httpx.MockTransport(lambda r: httpx.Response(200, content=b"x" * 5000)), max_response_bytes=1000
    )
    submit(runner, retries=5)
    runner.run("r1", 1)
    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.FAILED and published == []
    assert "BGHTTP_MAX_RESPONSE_BYTES" in (record.last_error or "")
    assert not runner.store.response_part_path("r1").exists()
    assert not runner.store.response_body_path("r1").exists()


def test_recovery_publishes_newer_tokens_and_keeps_due_times(tmp_path: Path) -> None:
    runner, _ = make_runner(tmp_path, httpx.MockTransport(lambda r: httpx.Response(200)))
    submit(runner, "queued")
    submit(runner, "waiting")
    submit(runner, "done")
    due = time.time() + 20
    runner.store.update_status("waiting", lambda r: r.evolve(phase=Phase.WAITING_RETRY, next_attempt_at=due, token=4))
    runner.store.update_status("done", lambda r: r.evolve(status=RequestStatus.COMPLETED, phase=Phase.DONE))
    published = Published()
    assert recover_pending(runner.store, published) == 2
    by_id = {request_id: (token, delay) for request_id, token, delay in published}
    assert by_id["queued"] == (2, None)
    assert by_id["waiting"][0] == 5 and 19 < (by_id["waiting"][1] or 0) <= 20
    # Recovering again makes the first recovery's messages stale.
    again = Published()
    recover_pending(runner.store, again)
    assert {(r, t) for r, t, _ in again} == {("queued", 3), ("waiting", 6)}


def test_attempts_interrupted_by_dying_workers_are_bounded(tmp_path: Path) -> None:
    from bghttp.models import AttemptRecord
    from bghttp.worker.retry_policy import MAX_INTERRUPTED_ATTEMPTS

    calls: list[httpx.Request] = []
    runner, _ = make_runner(tmp_path, httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(200)))
    submit(runner, retries=0)
    crashed = tuple(AttemptRecord(number=n, started_at=time.time()) for n in range(1, MAX_INTERRUPTED_ATTEMPTS))
    runner.store.update_status("r1", lambda r: r.evolve(phase=Phase.RUNNING, attempts=crashed))
    runner.run("r1", 1)  # one crash fewer than the bound: it runs, and a crash spends no retry
    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.COMPLETED and len(calls) == 1

    submit(runner, "r2", retries=0)
    crashed = tuple(AttemptRecord(number=n, started_at=time.time()) for n in range(1, MAX_INTERRUPTED_ATTEMPTS + 1))
    runner.store.update_status("r2", lambda r: r.evolve(phase=Phase.RUNNING, attempts=crashed))
    runner.run("r2", 1)
    record = runner.store.read_status("r2")
    assert record is not None and record.status is RequestStatus.FAILED and len(calls) == 1
    assert record.last_error == f"the worker died during {MAX_INTERRUPTED_ATTEMPTS} attempts"


def test_a_retry_that_cannot_be_published_is_still_spent_and_delayed(tmp_path: Path) -> None:
    from bghttp.errors import BrokerUnavailable

    calls: list[httpx.Request] = []
    runner, _ = make_runner(tmp_path, httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(503)))

    def broker_down(request_id: str, token: int, delay: float | None, **options: object) -> None:
        raise BrokerUnavailable("broker down")

    runner.publish = broker_down
    submit(runner, retries=2)
    with pytest.raises(BrokerUnavailable):
        runner.run("r1", 1)
    record = runner.store.read_status("r1")
    assert record is not None
    assert (record.phase, record.token, record.retries_used) == (Phase.WAITING_RETRY, 1, 1)
    assert record.next_attempt_at is not None and record.next_attempt_at > time.time() + 1
    assert record.attempts[0].outcome == "http_error"
    # The redelivered message (same token) does not run before the retry is due.
    published = Published()
    runner.publish = published
    runner.run("r1", 1)
    assert len(calls) == 1
    ((_, token, delay),) = published
    assert token == 2 and delay is not None and delay > 1
