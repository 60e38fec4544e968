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
    parse_retry_after,
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


# ------------------------------------------------------------- Retry-After
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("Fri, 15 Jan 2027 08:00:30 GMT", 30.0),  # the HTTP-date form
        ("Fri, 15 Jan 2027 08:00:30 -0000", 30.0),
        ("Fri, 15 Jan 2027 07:00:00 GMT", 0.0),  # a date in the past: now
        ("-5", None),  # negative: ignored
        ("1.5", None),  # not delay-seconds
        ("soon", None),
        ("", None),
        (None, None),
        ("٣", None),  # a non-ASCII digit is not delay-seconds
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date_and_garbage_is_ignored(
    value: str | None, seconds: float | None
) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_an_absurdly_long_retry_after_parses_without_error() -> None:
    assert parse_retry_after("9" * 5000, NOW) == 1e12


@pytest.mark.parametrize("status_code", [429, 503])
def test_retry_after_lengthens_the_delay_of_a_429_or_503_but_never_shortens_it(status_code: int) -> None:
    def decision(retry_after: float | None, retries_used: int = 0) -> Decision:
        return decide(
            Outcome.HTTP_ERROR,
            retries_used=retries_used,
            max_retries=10,
            backoff_scale=0.05,
            status_code=status_code,
            retry_after=retry_after,
            max_retry_after=3600,
        )

    # The scale shrinks the schedule (2 s -> 0.1 s), not the server's 3 s.
    assert decision(3.0) == Decision(Verdict.RETRY, 1, 3.0)
    # max(schedule, Retry-After): the schedule wins when it is longer (512 s x 0.05 = 25.6 s).
    assert decision(3.0, retries_used=9) == Decision(Verdict.RETRY, 10, 25.6)
    assert decision(None) == Decision(Verdict.RETRY, 1, 0.1)


def test_retry_after_is_capped_and_still_spends_a_retry() -> None:
    capped = decide(
        Outcome.HTTP_ERROR, retries_used=1, max_retries=2, status_code=503, retry_after=100_000, max_retry_after=60
    )
    assert capped == Decision(Verdict.RETRY, 2, 60.0)
    spent = decide(Outcome.HTTP_ERROR, retries_used=2, max_retries=2, status_code=503, retry_after=5)
    assert spent == Decision(Verdict.FAIL)


@pytest.mark.parametrize("status_code", [500, 502, 404, 301])
def test_retry_after_of_other_statuses_keeps_the_schedule(status_code: int) -> None:
    decision = decide(Outcome.HTTP_ERROR, retries_used=0, max_retries=1, status_code=status_code, retry_after=300)
    assert decision == Decision(Verdict.RETRY, 1, 2.0)


def test_an_outcome_another_attempt_would_repeat_fails_at_once_without_a_connectivity_check() -> None:
    asked: list[bool] = []

    def network_down() -> bool:
        asked.append(True)
        return False

    for outcome in (Outcome.BAD_RESPONSE, Outcome.NETWORK_ERROR):
        decision = decide(outcome, retries_used=0, max_retries=3, network_down=network_down, final=True)
        assert decision == Decision(Verdict.FAIL)
    assert asked == []
    assert decide(Outcome.SUCCESS, retries_used=0, max_retries=3, final=True) == Decision(Verdict.COMPLETE)
