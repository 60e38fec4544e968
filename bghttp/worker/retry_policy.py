"""The one place that decides what happens after an attempt: retry, wait, fail.

:func:`decide` turns an attempt's outcome into a :class:`Decision` that the
runner carries out: complete, cancelled, retry (after a delay), wait for the
network (no retry spent), or fail. The schedule is the original plugin's: after
error number n the request waits ``min(2**n, 512)`` seconds (2, 4, 8 … 512),
times ``BGHTTP_BACKOFF_SCALE``. There is no jitter: users rely on the exact schedule.

A 429 or 503 answer with ``Retry-After`` (see :func:`bghttp.core.retry_after.parse_retry_after`) waits at
least what the server asked, capped by ``BGHTTP_MAX_RETRY_AFTER``: the delay is
``max(schedule delay, min(Retry-After, cap))``. The scale shrinks only our own
schedule, never the server's value; the retry is spent as any other.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable

# Outcome and Retry-After live in the core; imported from here by name as before.
from ..core.outcomes import Outcome as Outcome
from ..core.retry_after import RETRY_AFTER_STATUSES as RETRY_AFTER_STATUSES
from ..core.retry_after import parse_retry_after as parse_retry_after
from ..core.run_plan import MAX_INTERRUPTED_ATTEMPTS as MAX_INTERRUPTED_ATTEMPTS
from ..core.run_plan import interrupted_failure as interrupted_failure

MAX_BACKOFF_SECONDS = 512
#: Methods a server may receive twice with the effect of once (RFC 9110, 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


_RETRYABLE = frozenset(
    {
        Outcome.HTTP_ERROR,
        Outcome.TIMEOUT,
        Outcome.NETWORK_ERROR,
        Outcome.BAD_RESPONSE,
        Outcome.DISK_FULL,
        Outcome.STORE_ERROR,
        Outcome.INTERRUPTED,
    }
)
#: The server answered, but its answer could not be saved here.
_SAVE_FAILURES = frozenset({Outcome.DISK_FULL, Outcome.STORE_ERROR})


def is_retryable(outcome: Outcome) -> bool:
    return outcome in _RETRYABLE


def backoff_seconds(retry_number: int, scale: float = 1.0) -> float:
    """Delay before retry number ``retry_number`` (1 for the first retry)."""
    if retry_number < 1:
        raise ValueError("retry_number starts at 1")
    return float(min(2**retry_number, MAX_BACKOFF_SECONDS) * scale)


#: Outcomes an outage causes (a connect that times out as much as one refused):
#: after one the runner asks the connectivity monitor at once.
OUTAGE_OUTCOMES = frozenset({Outcome.NETWORK_ERROR, Outcome.TIMEOUT})


class Verdict(enum.Enum):
    COMPLETE = "complete"
    CANCELLED = "cancelled"
    RETRY = "retry"  # publish the next run after ``delay`` seconds; spends retry ``retry_number``
    WAIT_FOR_NETWORK = "wait_for_network"  # the network is down: no retry spent
    FAIL = "fail"


@dataclasses.dataclass(frozen=True)
class Decision:
    verdict: Verdict
    retry_number: int = 0
    delay: float = 0.0


def decide(
    outcome: Outcome,
    *,
    retries_used: int,
    max_retries: int,
    backoff_scale: float = 1.0,
    network_down: Callable[[], bool] | None = None,
    method: str = "GET",
    status_code: int | None = None,
    retry_after: float | None = None,
    max_retry_after: float = float("inf"),
    final: bool = False,
) -> Decision:
    """What to do after an attempt that ended with ``outcome``.

    ``network_down`` (asked only after an outcome an outage may cause) says
    whether the network is down now; an attempt that failed for that reason
    spends no retry. ``method`` and ``status_code`` (the server's answer, if
    any) decide about an answer that could not be saved: sending a
    non-idempotent request again because *our* disk was full would repeat what
    the server already did, so only an error answer or an idempotent method is
    retried then. ``final``: another attempt would end the same way (an answer
    this client refuses to read), so the request fails now, with no connectivity check.
    """
    if outcome is Outcome.SUCCESS:
        return Decision(Verdict.COMPLETE)
    if outcome is Outcome.CANCELLED:
        return Decision(Verdict.CANCELLED)
    if final:
        return Decision(Verdict.FAIL)
    if outcome in OUTAGE_OUTCOMES and network_down is not None and network_down():
        return Decision(Verdict.WAIT_FOR_NETWORK)
    if (
        outcome in _SAVE_FAILURES
        and status_code is not None
        and status_code < 400
        and method.upper() not in IDEMPOTENT_METHODS
    ):
        return Decision(Verdict.FAIL)
    if is_retryable(outcome) and retries_used < max_retries:
        retry_number = retries_used + 1
        delay = backoff_seconds(retry_number, backoff_scale)
        if retry_after is not None and status_code in RETRY_AFTER_STATUSES:
            delay = max(delay, min(retry_after, max_retry_after))
        return Decision(Verdict.RETRY, retry_number, delay)
    return Decision(Verdict.FAIL)

