"""Attempts whose worker died: closed with what is known, never a send beyond the retries.

The crashed attempt is written into the status record as a dead worker leaves it
(``running``, the attempt without an outcome), then a new message runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer

from bghttp.core.outcomes import Outcome
from bghttp.errors import StoreError
from bghttp.lifecycle import RequestLifecycle
from bghttp.models import AttemptRecord, Phase, RequestStatus
from bghttp.validation import prepare_request
from bghttp.worker.execution import build_http_client
from bghttp.worker.unrecorded import ATTEMPT_OPTION, OutcomeNotRecorded, UnrecordedAttempt
from tests.unit.test_runner import make_runner, submit


def crash(runner: Any, request_id: str, *, sent: bool) -> None:
    """Leave ``request_id`` as a worker killed during its first attempt leaves it."""
    started = time.time() - 1
    attempt = AttemptRecord(number=1, started_at=started, sent_at=started + 0.01 if sent else None)
    runner.store.update_status(request_id, lambda r: r.evolve(phase=Phase.RUNNING, attempts=(attempt,)))


def counting_transport() -> tuple[httpx.MockTransport, list[httpx.Request]]:
    calls: list[httpx.Request] = []
    return httpx.MockTransport(lambda request: calls.append(request) or httpx.Response(200)), calls


def test_an_attempt_interrupted_after_sending_spends_the_only_try(tmp_path: Path) -> None:
    transport, calls = counting_transport()
    runner, published = make_runner(tmp_path, transport)
    submit(runner, retries=0)
    crash(runner, "r1", sent=True)

    runner.run("r1", 1)

    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.FAILED
    assert calls == [] and published == []  # not sent again
    assert [(a.outcome, a.counted) for a in record.attempts] == [("interrupted", True)]
    assert record.last_error == "the worker stopped during this attempt, after sending the request"


def test_an_attempt_interrupted_after_sending_is_retried_on_the_schedule(tmp_path: Path) -> None:
    transport, calls = counting_transport()
    runner, published = make_runner(tmp_path, transport)
    submit(runner, retries=1)
    crash(runner, "r1", sent=True)

    runner.run("r1", 1)

    record = runner.store.read_status("r1")
    assert record is not None and record.phase is Phase.WAITING_RETRY and record.retries_used == 1
    assert calls == []  # not now: after the backoff, like any error
    ((request_id, token, delay),) = published
    assert (request_id, token) == ("r1", 2) and delay is not None and 1.9 < delay <= 2.0
    runner.run("r1", 2)  # due time not reached: deferred, still not sent
    assert calls == []


def test_an_attempt_interrupted_before_sending_runs_again_at_once_for_free(tmp_path: Path) -> None:
    transport, calls = counting_transport()
    runner, _ = make_runner(tmp_path, transport)
    submit(runner, retries=0)
    crash(runner, "r1", sent=False)

    runner.run("r1", 1)

    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.COMPLETED and len(calls) == 1
    assert [(a.outcome, a.counted) for a in record.attempts] == [("interrupted", False), ("success", True)]
    assert record.retries_used == 0


def test_a_response_saved_before_the_worker_died_is_the_attempts_outcome(tmp_path: Path) -> None:
    transport, calls = counting_transport()
    runner, _ = make_runner(tmp_path, transport)
    submit(runner, retries=0)
    crash(runner, "r1", sent=True)
    with runner.store.open_response_part("r1") as part:
        part.write(b"the answer")
    runner.store.commit_response("r1", {"status_code": 201, "headers": [], "size": 10, "saved_at": time.time()})

    runner.run("r1", 1)

    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.COMPLETED and calls == []
    assert record.last_status_code == 201
    assert [(a.outcome, a.status_code) for a in record.attempts] == [("success", 201)]


class _Killed(BaseException):
    """The worker's death, between two system calls."""


def _killed_between_metadata_and_body(runner: Any, monkeypatch: pytest.MonkeyPatch, body: bytes, size: int) -> None:
    """A worker dies inside commit_response, after the answer's metadata, before its body is moved into place."""
    with runner.store.open_response_part("r1") as part:
        part.write(body)

    def killed(*_: object) -> None:
        raise _Killed

    metadata = {"status_code": 201, "headers": [], "size": size, "saved_at": time.time()}
    with monkeypatch.context() as patched:
        patched.setattr("bghttp.store.os.replace", killed)
        with pytest.raises(_Killed):
            runner.store.commit_response("r1", metadata)


def test_a_worker_killed_between_an_answers_metadata_and_its_body_saved_the_answer_if_the_body_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport, calls = counting_transport()
    runner, _ = make_runner(tmp_path, transport)
    submit(runner, retries=1)
    crash(runner, "r1", sent=True)
    _killed_between_metadata_and_body(runner, monkeypatch, b"the answer", 10)

    runner.run("r1", 1)

    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.COMPLETED and calls == []
    assert [(a.outcome, a.status_code) for a in record.attempts] == [("success", 201)]
    assert runner.store.response_file_path("r1").read_bytes() == b"the answer"
    assert runner.store.partial_response_size("r1") is None


def test_a_worker_killed_between_an_answers_metadata_and_a_body_not_whole_saved_no_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport, calls = counting_transport()
    runner, _ = make_runner(tmp_path, transport)
    submit(runner, retries=1)
    crash(runner, "r1", sent=True)
    _killed_between_metadata_and_body(runner, monkeypatch, b"the ans", 10)  # 7 of its 10 bytes on the disk

    runner.run("r1", 1)

    record = runner.store.read_status("r1")
    assert record is not None and calls == []
    assert record.phase is Phase.WAITING_RETRY  # an interrupted attempt that was sent: a retry spent, on schedule
    assert [a.outcome for a in record.attempts] == [Outcome.INTERRUPTED]


def test_an_attempt_that_cannot_be_marked_sent_sends_nothing(
    tmp_path: Path, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mark is written when the first byte is about to go out (httpcore's trace): a real socket."""
    httpserver.expect_request("/x").respond_with_data("ok")

    def cannot_write(self: RequestLifecycle, request_id: str, number: int, when: float) -> None:
        raise StoreError("cannot write status: [Errno 5] Input/output error")

    monkeypatch.setattr(RequestLifecycle, "mark_sent", cannot_write)
    runner, _ = make_runner(tmp_path, httpx.MockTransport(lambda r: httpx.Response(500)))
    runner.http = build_http_client()

    prepared = prepare_request("POST", httpserver.url_for("/x"), data=b"pay", request_id="r1", retries=0)
    assert runner.store.create_request(prepared.spec, body=prepared.body) is not None

    runner.run("r1", 1)

    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.FAILED
    assert len(httpserver.log) == 0
    assert record.attempts[0].outcome == "store_error" and record.attempts[0].sent_at is None
    assert record.last_error is not None and record.last_error.startswith("not sent:")


def test_a_real_attempt_is_marked_sent(tmp_path: Path, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/x").respond_with_data("ok")
    runner, _ = make_runner(tmp_path, httpx.MockTransport(lambda r: httpx.Response(500)))
    runner.http = build_http_client()

    prepared = prepare_request("GET", httpserver.url_for("/x"), request_id="r1")
    assert runner.store.create_request(prepared.spec) is not None

    runner.run("r1", 1)

    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.COMPLETED
    sent_at = record.attempts[0].sent_at
    assert sent_at is not None and record.attempts[0].started_at <= sent_at <= (record.attempts[0].finished_at or 0)


def test_a_503_saved_before_the_worker_died_keeps_its_retry_after(tmp_path: Path) -> None:
    transport, calls = counting_transport()
    runner, published = make_runner(tmp_path, transport)
    submit(runner, retries=1)
    crash(runner, "r1", sent=True)
    # The worker saved the server's answer, then died before recording the attempt.
    headers = [["Retry-After", "120"], ["Content-Length", "0"]]
    with runner.store.open_response_part("r1"):
        pass
    runner.store.commit_response("r1", {"status_code": 503, "headers": headers, "size": 0, "saved_at": time.time()})

    runner.run("r1", 1)

    record = runner.store.read_status("r1")
    assert record is not None and record.phase is Phase.WAITING_RETRY and calls == []
    assert record.attempts[0].retry_after == 120.0
    [(_, _, delay)] = published
    assert delay is not None and 119.9 < delay <= 120.0  # what the server asked, not the 2 s of the schedule


def test_an_answer_saved_before_the_worker_died_is_worded_as_the_attempt_words_it(tmp_path: Path) -> None:
    # One judge of a status (core.outcomes.judge_status): the error names the status and its reason
    # whether the attempt recorded it or a later run read it back from the saved metadata.
    transport, calls = counting_transport()
    runner, _ = make_runner(tmp_path, transport)
    submit(runner, retries=0)
    crash(runner, "r1", sent=True)
    with runner.store.open_response_part("r1"):
        pass
    metadata = {"status_code": 502, "reason": "Bad Gateway", "headers": [], "size": 0, "saved_at": time.time()}
    runner.store.commit_response("r1", metadata)

    runner.run("r1", 1)

    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.FAILED and calls == []
    assert record.last_error == record.attempts[0].error == "HTTP 502 Bad Gateway"


def _outcome_write_fails_once(monkeypatch: pytest.MonkeyPatch) -> None:
    record_attempt = RequestLifecycle.record_attempt
    failed: list[bool] = []

    def fails_once(self: RequestLifecycle, *args: Any, **kwargs: Any) -> Any:
        if not failed:
            failed.append(True)
            raise StoreError("cannot write status: [Errno 28] No space left on device")
        return record_attempt(self, *args, **kwargs)

    monkeypatch.setattr(RequestLifecycle, "record_attempt", fails_once)


def test_an_attempt_whose_outcome_could_not_be_written_is_closed_with_it_not_as_a_dead_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message's re-run carries the finished attempt (OutcomeNotRecorded) and closes it truthfully."""
    calls: list[httpx.Request] = []
    runner, _ = make_runner(
        tmp_path, httpx.MockTransport(lambda request: calls.append(request) or httpx.Response(503))
    )
    submit(runner, retries=1)
    _outcome_write_fails_once(monkeypatch)
    with pytest.raises(OutcomeNotRecorded) as raised:
        runner.run("r1", 1)
    carried = raised.value.unrecorded
    assert carried.attempt.outcome == "http_error" and carried.not_saved and "No space left" in carried.not_saved
    assert isinstance(raised.value, StoreError)  # retried by Dramatiq without limit, like any store outage

    runner.run("r1", 1, unrecorded=UnrecordedAttempt.from_option(carried.to_option()))

    record = runner.store.read_status("r1")
    assert record is not None and record.phase is Phase.WAITING_RETRY and record.retries_used == 1
    (attempt,) = record.attempts
    assert attempt.outcome == "http_error" and attempt.status_code == 503 and attempt.counted
    assert attempt.error is not None and "worker stopped" not in attempt.error
    assert "its outcome could not be saved" in attempt.error and "No space left" in attempt.error
    assert attempt.finished_at == carried.attempt.finished_at  # the retry is due on the schedule from then
    assert record.next_attempt_at == pytest.approx(carried.attempt.finished_at + 2.0, abs=0.001)
    assert len(calls) == 1


def test_the_retry_published_before_a_failed_outcome_write_carries_the_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, _ = make_runner(tmp_path, httpx.MockTransport(lambda request: httpx.Response(502)))
    submit(runner, retries=2)
    options: list[dict[str, Any]] = []
    publish = runner.publish

    def keeping_options(request_id: str, token: int, delay: float | None, **kwargs: Any) -> None:
        options.append(kwargs.get("options") or {})
        publish(request_id, token, delay)

    runner.publish = keeping_options  # type: ignore[assignment]
    _outcome_write_fails_once(monkeypatch)
    with pytest.raises(OutcomeNotRecorded):
        runner.run("r1", 1)
    (option,) = options
    unrecorded = UnrecordedAttempt.from_option(option[ATTEMPT_OPTION])
    assert unrecorded is not None and unrecorded.not_saved is None  # the publish came before the write

    runner.run("r1", 2, unrecorded=unrecorded)  # the retry arrives first

    record = runner.store.read_status("r1")
    assert record is not None
    first = record.attempts[0]
    assert first.outcome == "http_error" and first.status_code == 502 and record.retries_used == 1
    note = "its outcome could not be saved when the attempt ended; recorded by the next run"
    assert first.error == f"HTTP 502 Bad Gateway; {note}"


def test_a_carried_attempt_of_another_attempt_is_ignored(tmp_path: Path) -> None:
    """A worker killed in a later attempt: the message's option is about an earlier one; the close is as before."""
    transport, calls = counting_transport()
    runner, _ = make_runner(tmp_path, transport)
    submit(runner, retries=0)
    crash(runner, "r1", sent=True)
    other = UnrecordedAttempt(AttemptRecord(number=1, started_at=1.0, finished_at=2.0, outcome=Outcome.DISK_FULL))

    runner.run("r1", 1, unrecorded=other)

    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.FAILED and calls == []
    assert record.last_error == "the worker stopped during this attempt, after sending the request"


def test_a_success_whose_final_record_could_not_be_written_completes_without_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport, calls = counting_transport()
    runner, _ = make_runner(tmp_path, transport)
    submit(runner, retries=0)
    _outcome_write_fails_once(monkeypatch)
    with pytest.raises(OutcomeNotRecorded) as raised:
        runner.run("r1", 1)

    runner.run("r1", 1, unrecorded=raised.value.unrecorded)

    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.COMPLETED and len(calls) == 1
    assert [(a.outcome, a.error) for a in record.attempts] == [("success", None)] and record.last_error is None


def test_a_dead_workers_attempt_closed_but_not_decided_is_not_sent_again_beyond_the_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The close is written, the decision after it is not (the disk fills between the two): the re-run
    must still decide that attempt, not take the request for one with nothing unfinished and send it."""
    transport, calls = counting_transport()
    runner, _ = make_runner(tmp_path, transport)
    submit(runner, retries=0)
    crash(runner, "r1", sent=True)
    _outcome_write_fails_once(monkeypatch)
    with pytest.raises(StoreError):
        runner.run("r1", 1)

    runner.run("r1", 1)

    record = runner.store.read_status("r1")
    assert calls == [], f"a retries=0 request whose attempt was marked sent was sent again; {record}"
    assert record is not None and record.status is RequestStatus.FAILED
    assert [(a.outcome, a.counted) for a in record.attempts] == [("interrupted", True)]
