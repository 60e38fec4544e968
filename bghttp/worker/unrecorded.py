"""An attempt that ended but whose outcome could not be written, carried by the messages that follow it.

An attempt's outcome is written into the status record after the attempt. If
that write fails (a full disk), the record still shows the attempt running, as
a dead worker leaves it. The runner makes sure the next run knows better: the
retry it publishes just before the write carries the finished attempt (message
option ``bghttp_attempt``), and so does Dramatiq's re-run of the message whose
write failed (:class:`OutcomeNotRecorded`: the actor puts it into the message's
options, with the store's error). The run that closes the attempt then records
what happened instead of "the worker stopped during this attempt".
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..core.outcomes import Outcome
from ..errors import StoreError
from ..models import AttemptRecord

#: The message option that carries the finished attempt a message follows (see UnrecordedAttempt).
ATTEMPT_OPTION = "bghttp_attempt"


@dataclasses.dataclass(frozen=True)
class UnrecordedAttempt:
    """An attempt as its worker finished it, carried by the messages that follow it (see the module)."""

    attempt: AttemptRecord
    #: Another attempt would end the same way (``AttemptResult.final``).
    final: bool = False
    #: Why the outcome could not be written, when known (the re-run knows; a retry published before the write
    #: does not: there the worker may also have stopped between the publish and the write).
    not_saved: str | None = None
    #: The token of the retry published (carrying this attempt) before the write failed, if one was: that
    #: message closes the attempt, so a re-run of the message that published it has nothing left to do.
    successor: int | None = None

    def to_option(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt.to_json(),
            "final": self.final,
            "not_saved": self.not_saved,
            "successor": self.successor,
        }

    @classmethod
    def from_option(cls, value: object) -> UnrecordedAttempt | None:
        """The attempt a message's option carries; None for none (or junk: it only adds what is known)."""
        if not isinstance(value, dict) or not isinstance(value.get("attempt"), dict):
            return None
        try:
            attempt = AttemptRecord.from_json(value["attempt"])
        except (TypeError, ValueError):
            return None
        if attempt.finished_at is None or attempt.outcome is None:
            return None
        not_saved, successor = value.get("not_saved"), value.get("successor")
        return cls(
            attempt,
            value.get("final") is True,
            not_saved if isinstance(not_saved, str) else None,
            successor if isinstance(successor, int) and not isinstance(successor, bool) else None,
        )

    def ends(self, attempt: AttemptRecord) -> bool:
        """Whether this is how ``attempt`` (of a record, unfinished there) ended."""
        return self.attempt.number == attempt.number and self.attempt.started_at == attempt.started_at

    def closing_error(self) -> str | None:
        """The attempt's error, and that its outcome is recorded late (a success has no error: none)."""
        if self.attempt.outcome is Outcome.SUCCESS:
            return None
        if self.attempt.outcome is Outcome.INTERRUPTED:
            return self.attempt.error  # a dead worker's attempt, closed by a run that could not write it: no more known
        why = f" ({self.not_saved})" if self.not_saved else ""
        note = f"its outcome could not be saved when the attempt ended{why}; recorded by the next run"
        return f"{self.attempt.error}; {note}" if self.attempt.error else note


class OutcomeNotRecorded(StoreError):
    """The attempt ended but its outcome could not be written: the message is run again, carrying it."""

    def __init__(self, message: str, unrecorded: UnrecordedAttempt) -> None:
        super().__init__(message)
        self.unrecorded = unrecorded


def carried(unrecorded: UnrecordedAttempt | None, attempt: AttemptRecord) -> AttemptRecord | None:
    """``attempt``, closed with the outcome ``unrecorded`` carries for it (its worker's own); None if none."""
    if unrecorded is None or not unrecorded.ends(attempt):
        return None
    how = unrecorded.attempt
    return dataclasses.replace(
        attempt,
        finished_at=how.finished_at,
        outcome=how.outcome,
        status_code=how.status_code,
        error=unrecorded.closing_error(),
        counted=how.counted,
        sent_at=how.sent_at or attempt.sent_at,
        retry_after=how.retry_after,
    )


def interrupted(attempt: AttemptRecord, now: float) -> AttemptRecord:
    """``attempt``, closed as interrupted: counted (a retry spent) only if it may have reached the server."""
    sent = attempt.sent_at is not None
    when = "after sending the request" if sent else "before sending the request"
    return dataclasses.replace(
        attempt,
        finished_at=now,
        outcome=Outcome.INTERRUPTED,
        error=f"the worker stopped during this attempt, {when}",
        counted=sent,
    )


__all__ = ["ATTEMPT_OPTION", "OutcomeNotRecorded", "UnrecordedAttempt", "carried", "interrupted"]
