"""The retry policy's decision after an attempt (``bghttp.worker.retry_policy.decide``)."""

from __future__ import annotations

import pytest

from bghttp.worker.retry_policy import (
    MAX_INTERRUPTED_ATTEMPTS,
    Decision,
    Outcome,
    Verdict,
    decide,
    interrupted_failure,
)


def test_success_completes_and_cancel_cancels_whatever_the_retries() -> None:
    assert decide(Outcome.SUCCESS, retries_used=0, max_retries=0) == Decision(Verdict.COMPLETE)
    assert decide(Outcome.CANCELLED, retries_used=0, max_retries=5) == Decision(Verdict.CANCELLED)


def test_a_retryable_outcome_retries_with_the_exact_backoff_until_the_retries_are_spent() -> None:
    assert decide(Outcome.HTTP_ERROR, retries_used=0, max_retries=3) == Decision(Verdict.RETRY, 1, 2.0)
    assert decide(Outcome.TIMEOUT, retries_used=2, max_retries=3, backoff_scale=0.5) == Decision(Verdict.RETRY, 3, 4.0)
    assert decide(Outcome.HTTP_ERROR, retries_used=3, max_retries=3) == Decision(Verdict.FAIL)
    assert decide(Outcome.BAD_RESPONSE, retries_used=0, max_retries=0) == Decision(Verdict.FAIL)


@pytest.mark.parametrize("outcome", [Outcome.TOO_LARGE, Outcome.BLOCKED, Outcome.INVALID])
def test_an_outcome_no_retry_can_change_fails_at_once(outcome: Outcome) -> None:
    assert decide(outcome, retries_used=0, max_retries=10) == Decision(Verdict.FAIL)


@pytest.mark.parametrize("outcome", [Outcome.NETWORK_ERROR, Outcome.TIMEOUT])
def test_an_outage_waits_for_the_network_without_spending_a_retry(outcome: Outcome) -> None:
    # Even with no retries left: the attempt never reached the server's side of the outage.
    assert decide(outcome, retries_used=0, max_retries=0, network_down=lambda: True) == Decision(
        Verdict.WAIT_FOR_NETWORK
    )
    assert decide(outcome, retries_used=0, max_retries=1, network_down=lambda: False).verdict is Verdict.RETRY


def test_the_network_is_asked_only_after_an_outcome_an_outage_causes() -> None:
    asked: list[bool] = []

    def network_down() -> bool:
        asked.append(True)
        return True

    assert decide(Outcome.HTTP_ERROR, retries_used=0, max_retries=1, network_down=network_down).verdict is Verdict.RETRY
    assert decide(Outcome.SUCCESS, retries_used=0, max_retries=1, network_down=network_down).verdict is Verdict.COMPLETE
    assert asked == []


def test_attempts_that_killed_the_worker_fail_the_request_at_the_limit() -> None:
    assert interrupted_failure(MAX_INTERRUPTED_ATTEMPTS - 1) is None
    error = interrupted_failure(MAX_INTERRUPTED_ATTEMPTS)
    assert error == f"the worker died during {MAX_INTERRUPTED_ATTEMPTS} attempts"
