"""The run plan: one test per branch, from scripted records (no store, no broker, no clock)."""

from __future__ import annotations

import pytest

from bghttp.core.outcomes import Outcome
from bghttp.core.run_plan import (
    EARLY_TOLERANCE_SECONDS,
    MAX_INTERRUPTED_ATTEMPTS,
    RunPlan,
    Step,
    interrupted_failure,
    plan_run,
)
from bghttp.models import AttemptRecord, Phase, RequestStatus, StatusRecord

NOW = 1000.0


def record(
    *,
    phase: Phase = Phase.QUEUED,
    status: RequestStatus = RequestStatus.IN_PROGRESS,
    token: int = 2,
    due: float | None = None,
    attempts: tuple[AttemptRecord, ...] = (),
    earlier_attempts: int = 0,
) -> StatusRecord:
    return StatusRecord(
        request_id="r1", status=status, phase=phase, created_at=1.0, updated_at=1.0, max_retries=3, token=token,
        next_attempt_at=due, attempts=attempts, earlier_attempts=earlier_attempts,
    )  # fmt: skip


def attempt(number: int, outcome: Outcome | None = Outcome.HTTP_ERROR) -> AttemptRecord:
    finished = None if outcome is None else 2.0
    return AttemptRecord(number=number, started_at=1.0, finished_at=finished, outcome=outcome)


def plan(current: StatusRecord | None, token: int = 2, *, online: bool = True) -> RunPlan:
    return plan_run(current, token, now=NOW, online=online)


def test_a_current_message_of_a_queued_request_starts_an_attempt() -> None:
    assert plan(record()) == RunPlan(Step.START)


@pytest.mark.parametrize(
    ("current", "token", "reason"),
    [
        (None, 2, "gone"),
        (record(status=RequestStatus.COMPLETED, phase=Phase.DONE), 2, "terminal"),
        (record(status=RequestStatus.CANCELLED, phase=Phase.DONE), 2, "terminal"),
        (record(token=3), 2, "stale"),
    ],
)
def test_a_message_with_nothing_to_run_drops_with_the_reason(
    current: StatusRecord | None, token: int, reason: str
) -> None:
    assert plan(current, token) == RunPlan(Step.DROP, reason=reason)


def test_a_newer_token_than_the_record_runs() -> None:
    assert plan(record(token=2), 5).step is Step.START  # published before the record named it


def test_a_message_that_came_early_is_deferred_for_the_time_left() -> None:
    assert plan(record(phase=Phase.WAITING_RETRY, due=NOW + 30)) == RunPlan(Step.DEFER_UNTIL_DUE, delay=30.0)
    # The due time holds whatever the phase (the gate may have marked it waiting for the network).
    assert plan(record(phase=Phase.WAITING_NETWORK, due=NOW + 5), online=False).step is Step.DEFER_UNTIL_DUE


def test_a_message_early_by_less_than_the_tolerance_runs() -> None:
    assert plan(record(due=NOW + EARLY_TOLERANCE_SECONDS / 2)).step is Step.START
    assert plan(record(due=NOW - 60)).step is Step.START


def test_an_unfinished_attempt_is_closed_first_even_offline() -> None:
    current = record(phase=Phase.RUNNING, attempts=(attempt(1, None),))
    assert plan(current) == RunPlan(Step.CLOSE_INTERRUPTED)
    assert plan(current, online=False) == RunPlan(Step.CLOSE_INTERRUPTED)


def test_offline_the_message_waits_for_the_network() -> None:
    assert plan(record(), online=False) == RunPlan(Step.WAIT_FOR_NETWORK)


def test_attempts_that_keep_killing_workers_fail_the_request() -> None:
    interrupted = tuple(attempt(n, Outcome.INTERRUPTED) for n in range(1, MAX_INTERRUPTED_ATTEMPTS + 1))
    assert plan(record(attempts=interrupted)) == RunPlan(
        Step.FAIL, reason=f"the worker died during {MAX_INTERRUPTED_ATTEMPTS} attempts"
    )
    assert plan(record(attempts=interrupted[:-1])).step is Step.START  # one fewer: run again


def test_only_this_runs_interrupted_attempts_count_after_a_replay() -> None:
    interrupted = tuple(attempt(n, Outcome.INTERRUPTED) for n in range(1, MAX_INTERRUPTED_ATTEMPTS + 1))
    assert plan(record(attempts=interrupted, earlier_attempts=1)).step is Step.START


def test_the_network_is_checked_before_the_interrupted_limit() -> None:
    interrupted = tuple(attempt(n, Outcome.INTERRUPTED) for n in range(1, MAX_INTERRUPTED_ATTEMPTS + 1))
    assert plan(record(attempts=interrupted), online=False).step is Step.WAIT_FOR_NETWORK


def test_the_interrupted_limit() -> None:
    assert interrupted_failure(MAX_INTERRUPTED_ATTEMPTS - 1) is None
    assert interrupted_failure(MAX_INTERRUPTED_ATTEMPTS + 2) == "the worker died during 7 attempts"
