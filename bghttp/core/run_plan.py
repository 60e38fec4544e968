"""What a message does now with its request: the run plan, decided from what is known, with no I/O.

:func:`plan_run` looks at the request's status record, the message's token, the
time and whether the network is up, and returns one :class:`RunPlan`; the
runner carries it out under the request's claim::

    drop               the record is gone or final, or a newer message exists (the reason says which)
    defer_until_due    the next attempt is not due yet: hand the message back for the time left
    close_interrupted  an attempt is unfinished, and the claim is ours: its worker died
    wait_for_network   the network is down: re-check later, no retry spent
    fail               attempts keep killing workers: the request fails (the reason is the error)
    start              run an attempt now

After ``close_interrupted`` left the request to run (the attempt was never sent),
the runner plans again with the record it closed.
"""

from __future__ import annotations

import dataclasses
import enum

from .. import lifecycle
from ..models import StatusRecord
from .outcomes import Outcome

#: A message that arrives at most this early (Dramatiq's millisecond etas, clock skew
#: between hosts) waits until it is due and then runs; an earlier one is handed back.
EARLY_TOLERANCE_SECONDS = 0.05
#: Attempts during which the worker died (killed, out of memory) *before sending*
#: do not spend a retry; this many interrupted attempts fail the request, so a
#: request that kills every worker cannot loop forever. (One interrupted after
#: sending spends a retry like any error: it may have reached the server.)
MAX_INTERRUPTED_ATTEMPTS = 5


class Step(enum.Enum):
    DROP = "drop"
    DEFER_UNTIL_DUE = "defer_until_due"
    CLOSE_INTERRUPTED = "close_interrupted"
    WAIT_FOR_NETWORK = "wait_for_network"
    FAIL = "fail"
    START = "start"


@dataclasses.dataclass(frozen=True)
class RunPlan:
    step: Step
    #: ``drop``: why ("gone", "terminal", "stale"); ``fail``: the request's error.
    reason: str | None = None
    #: ``defer_until_due``: seconds until the next attempt is due; ``start``: seconds to wait
    #: first (due within the tolerance: waited for here, so an attempt never starts early).
    delay: float = 0.0


def plan_run(record: StatusRecord | None, token: int, *, now: float, online: bool) -> RunPlan:
    """What the message with ``token`` does now with the request whose record is ``record``.

    ``now`` is ``time.time()``; ``online`` whether the network is up (True when nothing watches it).
    """
    why_not = lifecycle.why_not_run(record, token)
    if record is None or why_not is not None:
        return RunPlan(Step.DROP, reason=why_not)
    if record.next_attempt_at is not None and record.next_attempt_at - now > EARLY_TOLERANCE_SECONDS:
        # Never run early; keep the due time whatever the phase (the gate may have marked it waiting_network).
        return RunPlan(Step.DEFER_UNTIL_DUE, delay=record.next_attempt_at - now)
    if any(attempt.finished_at is None for attempt in record.attempts):
        return RunPlan(Step.CLOSE_INTERRUPTED)
    if not online:
        return RunPlan(Step.WAIT_FOR_NETWORK)
    error = interrupted_failure(sum(1 for a in record.run_attempts if a.outcome is Outcome.INTERRUPTED))
    if error is not None:
        return RunPlan(Step.FAIL, reason=error)
    if record.next_attempt_at is not None and record.next_attempt_at > now:
        return RunPlan(Step.START, delay=record.next_attempt_at - now)
    return RunPlan(Step.START)


def interrupted_failure(unfinished_attempts: int) -> str | None:
    """The error that fails a request whose attempts keep killing the worker, or None to run it again."""
    if unfinished_attempts >= MAX_INTERRUPTED_ATTEMPTS:
        return f"the worker died during {unfinished_attempts} attempts"
    return None


__all__ = [
    "EARLY_TOLERANCE_SECONDS",
    "MAX_INTERRUPTED_ATTEMPTS",
    "RunPlan",
    "Step",
    "interrupted_failure",
    "plan_run",
]
