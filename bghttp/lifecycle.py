"""A request's life: the token protocol and every status transition, in one place.

::

                 mark_running                 finish (completed / failed)
    queued ─────────────────────▶ running ─────────────────────────────▶ done
      │  ▲                         │  │ schedule_retry                   ▲
      │  │ defer (too early)       │  └───────────▶ waiting_retry ──┐    │ fail (unreadable,
      │  └─────────────────────────┼────────────────────────────────┘    │  worker died)
      │ hold_for_network (gate)    │ wait_for_network / offline_attempt   │
      └──────────────▶ waiting_network ◀─┘                                │
    cancel: queued, running, waiting_* ─▶ cancelled ──────────────────────┘
    amend_after_cancel: a terminal record keeps its status; the attempt that
        was running records how it really ended.
    mark_sent: the running attempt is about to send its first byte (from then
        on, its worker's death spends a retry).
    close_interrupted: a new run closes the attempts a dead worker left, then
        finish / schedule_retry / fail decide as after any attempt.
    replay: failed / cancelled ─▶ queued (unconfirmed) with a new token and a fresh
        retry budget; the attempts stay. undo_replay: its message was not confirmed,
        the record goes back to how it ended.

Every transition is a pure function ``(record, ...) -> record`` that names the
states it accepts and raises :class:`IllegalTransition` for the rest. A
:class:`RequestLifecycle` applies them to a store under the request's status
lock; there a refused transition leaves the record as it is and returns it, so
a caller sees what is (a request cancelled meanwhile stays cancelled).

Tokens. Every message ``execute_request(request_id, token)`` carries a token;
the record's ``token`` is the newest one that may run the request. A message
with a smaller token is stale (a redelivered or recovered duplicate) and is
dropped. A next run is published with ``next_token`` *before* the record names
it, so a crash between the two leaves a message that is still accepted.

The run that hands over (a retry, a hand-back, a re-check) still holds the
request's claim when the record names the next token, and a slow thread may
hold it a while longer. So a message that finds the claim held and the record
naming its own token is a duplicate only if the record shows that very run's
attempt under way (:func:`is_running_under`); otherwise it is the next run, and
it waits for the claim.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import BghttpError, RetryRefused, StoreError, UnknownRequest
from .models import AttemptRecord, Phase, RequestSpec, RequestStatus, StatusRecord

if TYPE_CHECKING:
    from .store_api import Store

FIRST_TOKEN = 1

_UNFINISHED = frozenset({Phase.QUEUED, Phase.RUNNING, Phase.WAITING_RETRY, Phase.WAITING_NETWORK})
#: A request the gate may hold for the network: not running, not finished.
_HOLDABLE = frozenset({Phase.QUEUED, Phase.WAITING_RETRY})
_FINAL = frozenset({RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED})


class IllegalTransition(BghttpError):
    """A transition asked of a record in a state it does not accept (never leaves bghttp)."""


# ------------------------------------------------------------------ tokens
def message_args(request_id: str, token: int) -> tuple[str, int]:
    """The arguments of the message that runs ``request_id`` with ``token``."""
    return (request_id, token)


def parse_message_args(args: Sequence[Any]) -> tuple[str, int] | None:
    """``(request_id, token)`` of a request message's arguments; None if they are not one.

    Messages published before tokens existed carry the ID only: their token is the first.
    Anything else (an event sent here by a misdirected ``on_complete``, junk) is None.
    """
    if not args or len(args) > 2:
        return None
    request_id, token = args[0], args[1] if len(args) > 1 else FIRST_TOKEN
    if not isinstance(request_id, str) or isinstance(token, bool) or not isinstance(token, int):
        return None
    return (request_id, token)


def next_token(record: StatusRecord) -> int:
    """The token of the next message published for this request."""
    return record.token + 1


def hand_over(
    record: StatusRecord, publish: Callable[[int], object], write: Callable[[int], StatusRecord]
) -> StatusRecord:
    """The token rule, carried out: the next run's message is published under ``next_token(record)``,
    and only then does ``write`` record that token. A crash between the two leaves a message the
    record still accepts; the other order could leave a record naming a message that was never sent.
    If ``publish`` raises, nothing is written (the caller decides what the record says then)."""
    token = next_token(record)
    publish(token)
    return write(token)


def is_stale(record: StatusRecord, token: int) -> bool:
    """True if a newer message than ``token`` has been published for this request."""
    return token < record.token


def is_running_under(record: StatusRecord, token: int) -> bool:
    """True if an attempt of the run ``token`` names is under way (or its worker died in it)."""
    return (
        record.token == token
        and record.phase is Phase.RUNNING
        and bool(record.attempts)
        and record.attempts[-1].finished_at is None
    )


def why_not_run(record: StatusRecord | None, token: int) -> str | None:
    """Why a message with ``token`` must not run the request now, or None if it may."""
    if record is None:
        return "gone"
    if record.is_terminal:
        return "terminal"
    if is_stale(record, token):
        return "stale"
    return None


def is_same_request(spec: RequestSpec, record: StatusRecord) -> bool:
    """False when the ID was removed and submitted again after ``spec`` was read."""
    return spec.generation == record.generation


def is_unconfirmed(record: StatusRecord) -> bool:
    """Stored, but no message of it was confirmed yet: a second submitter publishes one."""
    return not (record.published or record.is_terminal)


def is_untouched(record: StatusRecord) -> bool:
    """Still as its submit stored it: unconfirmed, queued, never attempted (its submitter may take it back)."""
    # A replay is unconfirmed and queued too, maybe without attempts (cancelled while queued): not untouched.
    return not record.published and record.phase is Phase.QUEUED and not record.attempts and not record.replays


# ------------------------------------------------------------- transitions
def _require(record: StatusRecord, accepted: frozenset[Phase], transition: str) -> None:
    if record.phase not in accepted or record.is_terminal:
        state = f"{record.status.value}/{record.phase.value}"
        raise IllegalTransition(f"{transition} does not apply to request {record.request_id!r} in {state}")


def new_record(spec: RequestSpec) -> StatusRecord:
    """The first record of a stored request: ``queued``, its first message not yet confirmed."""
    return StatusRecord(
        request_id=spec.request_id,
        status=RequestStatus.IN_PROGRESS,
        phase=Phase.QUEUED,
        created_at=spec.created_at,
        updated_at=spec.created_at,
        max_retries=spec.max_retries,
        generation=spec.generation,
        published=False,
        metadata=spec.metadata,
        on_complete=spec.on_complete,
    )


def mark_published(record: StatusRecord, generation: str) -> StatusRecord:
    """A message of the request was confirmed. Accepts an unfinished request of ``generation``."""
    _require(record, _UNFINISHED, "mark_published")
    if record.generation != generation:
        raise IllegalTransition(f"request {record.request_id!r} is of another generation now")
    return record if record.published else record.evolve(published=True)


def republish(record: StatusRecord, token: int) -> StatusRecord:
    """Recovery published a new message with ``token``. Accepts any unfinished request."""
    _require(record, _UNFINISHED, "republish")
    return record.evolve(token=max(record.token, token), published=True)


def hold_for_network(record: StatusRecord, token: int) -> StatusRecord:
    """The gate holds the current message while offline. Accepts ``queued`` and ``waiting_retry``."""
    _require(record, _HOLDABLE, "hold_for_network")
    if is_stale(record, token):
        raise IllegalTransition(f"token {token} of request {record.request_id!r} is stale")
    return record.evolve(phase=Phase.WAITING_NETWORK)


def defer(record: StatusRecord, token: int) -> StatusRecord:
    """A message came before its due time and was published again for the rest. Accepts any
    unfinished request; the phase and the due time stay (the gate may have marked it waiting_network)."""
    _require(record, _UNFINISHED, "defer")
    return record.evolve(token=max(record.token, token))


def wait_for_network(record: StatusRecord, token: int) -> StatusRecord:
    """The network is down: a re-check was published with ``token``; no retry is spent. Accepts
    any unfinished request."""
    _require(record, _UNFINISHED, "wait_for_network")
    return record.evolve(phase=Phase.WAITING_NETWORK, token=max(record.token, token), next_attempt_at=None)


def mark_running(record: StatusRecord, token: int, attempt: AttemptRecord) -> StatusRecord:
    """An attempt starts. Accepts any unfinished request (``running`` too: its worker died)."""
    _require(record, _UNFINISHED, "mark_running")
    return record.evolve(
        phase=Phase.RUNNING, token=token, next_attempt_at=None, attempts=(*record.attempts, attempt)
    )


def finish(record: StatusRecord, attempt: AttemptRecord, status: RequestStatus) -> StatusRecord:
    """The running attempt ended the request: ``completed``, ``failed`` or ``cancelled``. Accepts ``running``."""
    _require(record, frozenset({Phase.RUNNING}), "finish")
    if status not in _FINAL:
        raise IllegalTransition(f"{status.value} is not a final status")
    return record.evolve(
        status=status,
        phase=Phase.DONE,
        next_attempt_at=None,
        completed_at=time.time(),
        attempts=_replace_last(record.attempts, attempt),
        last_error=attempt.error,
        last_status_code=attempt.status_code,
    )


def schedule_retry(
    record: StatusRecord, attempt: AttemptRecord, *, retry_number: int, due: float, token: int | None
) -> StatusRecord:
    """The attempt failed and retry ``retry_number`` is due at ``due``. Accepts ``running``.

    ``token`` is the retry message's; None when it could not be published (the
    message being run comes back and waits until ``due``).
    """
    _require(record, frozenset({Phase.RUNNING}), "schedule_retry")
    return record.evolve(
        phase=Phase.WAITING_RETRY,
        token=record.token if token is None else max(record.token, token),
        retries_used=retry_number,
        next_attempt_at=due,
        attempts=_replace_last(record.attempts, attempt),
        last_error=attempt.error,
        last_status_code=attempt.status_code,
    )


def mark_sent(record: StatusRecord, number: int, when: float) -> StatusRecord:
    """Attempt ``number`` is about to send the request's first byte. Accepts ``running``."""
    _require(record, frozenset({Phase.RUNNING}), "mark_sent")
    last = record.attempts[-1] if record.attempts else None
    if last is None or last.number != number or last.finished_at is not None:
        raise IllegalTransition(f"attempt {number} of {record.request_id!r} is not the one running")
    if last.sent_at is not None:
        return record
    return record.evolve(attempts=(*record.attempts[:-1], dataclasses.replace(last, sent_at=when)))


def close_interrupted(record: StatusRecord, closed: Sequence[AttemptRecord]) -> StatusRecord:
    """Attempts whose worker died are closed with what is known of them (``closed``: the same
    attempts, finished). Accepts any unfinished request: it was running when its worker died,
    and it is ``running`` again, for the decision that follows, whatever a later message marked."""
    _require(record, _UNFINISHED, "close_interrupted")
    by_number = {attempt.number: attempt for attempt in closed}
    attempts = tuple(by_number.get(attempt.number, attempt) for attempt in record.attempts)
    return record.evolve(phase=Phase.RUNNING, attempts=attempts)


def offline_attempt(record: StatusRecord, attempt: AttemptRecord) -> StatusRecord:
    """The attempt failed because the network is down: recorded, no retry spent. Accepts ``running``."""
    _require(record, frozenset({Phase.RUNNING}), "offline_attempt")
    uncounted = dataclasses.replace(attempt, counted=False)
    return record.evolve(attempts=_replace_last(record.attempts, uncounted), last_error=attempt.error)


def amend_after_cancel(record: StatusRecord, attempt: AttemptRecord) -> StatusRecord:
    """An attempt that was running when its request ended (cancelled) records how it really ended.
    Accepts terminal records only; the status stays (what ``cancel()`` answered stays true), but a
    response the server delivered is not hidden."""
    if not record.is_terminal:
        raise IllegalTransition(f"request {record.request_id!r} is not finished; there is nothing to amend")
    return record.evolve(
        attempts=_replace_last(record.attempts, attempt),
        last_error=attempt.error if attempt.error is not None else record.last_error,
        last_status_code=attempt.status_code if attempt.status_code is not None else record.last_status_code,
    )


def fail(record: StatusRecord, error: str) -> StatusRecord:
    """The request can never run (its file is unreadable, its attempts kill the worker). Accepts
    any unfinished request."""
    _require(record, _UNFINISHED, "fail")
    return record.evolve(status=RequestStatus.FAILED, phase=Phase.DONE, completed_at=time.time(), last_error=error)


def cancel(record: StatusRecord) -> StatusRecord:
    """The caller cancels the request; a running attempt stops at its next check. Accepts any unfinished request."""
    _require(record, _UNFINISHED, "cancel")
    return record.evolve(status=RequestStatus.CANCELLED, phase=Phase.DONE, completed_at=time.time())


_REPLAYABLE = frozenset({RequestStatus.FAILED, RequestStatus.CANCELLED})


def why_not_replay(record: StatusRecord) -> str | None:
    """Why ``record``'s request cannot be replayed, or None if it can (failed or cancelled)."""
    if record.status in _REPLAYABLE:
        return None
    state = f"{record.status.value}/{record.phase.value}"
    return f"request {record.request_id!r} is {state}: only failed and cancelled requests can be retried"


def why_not_replace(record: StatusRecord) -> str | None:
    """Why another request may not take ``record``'s ID (``on_conflict="replace"``), or None if it may.

    A finished request's outcome is recorded (and announced); a queued one that
    this run never attempted has done nothing yet: replacing either loses
    nothing. Any other may have reached the server and has an outcome to come
    (running, waiting for a retry or for the network, queued again after an
    interrupted attempt): replacing it would lose that outcome unseen.
    """
    if record.is_terminal:
        return None
    if record.phase is Phase.QUEUED and len(record.attempts) <= record.earlier_attempts:
        return None
    state = f"{record.status.value}/{record.phase.value}"
    return (
        f"request {record.request_id!r} is {state} and has been attempted; only a finished request or one still"
        " queued and never attempted can be replaced: cancel it first"
    )


def replay(record: StatusRecord) -> StatusRecord:
    """A failed or cancelled request runs again under its ID. Accepts failed and cancelled only.

    The new run has a fresh retry budget (``retries_used`` 0) and the next token;
    the attempt history stays and attempt numbers go on. The record is
    unconfirmed until the replay's message is (``mark_published``): a message
    published before the record said ``queued`` would find it final and be dropped.
    """
    refusal = why_not_replay(record)
    if refusal is not None:
        raise IllegalTransition(refusal)
    return record.evolve(
        status=RequestStatus.IN_PROGRESS,
        phase=Phase.QUEUED,
        token=next_token(record),
        retries_used=0,
        next_attempt_at=None,
        completed_at=None,
        published=False,
        replays=record.replays + 1,
        earlier_attempts=len(record.attempts),
    )


def undo_replay(record: StatusRecord, ended: StatusRecord, token: int) -> StatusRecord:
    """The replay with ``token`` was not confirmed by the broker: back to ``ended`` (how the request
    ended before). Accepts the record as that replay left it only (queued, unconfirmed, ``token``)."""
    if record.phase is not Phase.QUEUED or record.published or record.token != token or record.is_terminal:
        raise IllegalTransition(f"request {record.request_id!r} has moved on since its replay")
    return ended.evolve(token=max(record.token, ended.token))


def _replace_last(attempts: tuple[AttemptRecord, ...], attempt: AttemptRecord) -> tuple[AttemptRecord, ...]:
    if attempts and attempts[-1].number == attempt.number:
        return (*attempts[:-1], attempt)
    return (*attempts, attempt)


# ------------------------------------------------------------ on a store
Transition = Callable[[StatusRecord], StatusRecord]


def _or_unchanged(transition: Transition) -> Callable[[StatusRecord], StatusRecord | None]:
    def change(record: StatusRecord) -> StatusRecord | None:
        try:
            return transition(record)
        except IllegalTransition:
            return None  # the record stays as it is; the caller sees it

    return change


class RequestLifecycle:
    """The transitions above, applied to a store's records under each request's status lock.

    Each method returns the record as it is afterwards (unchanged if the
    transition was refused); ``UnknownRequest`` if the request is gone.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def _apply(self, request_id: str, transition: Transition, *, durable: bool = True) -> StatusRecord:
        return self.store.update_status(request_id, _or_unchanged(transition), durable=durable)

    def mark_published(self, request_id: str, generation: str, *, needed: bool = False) -> bool:
        """Record that a message of this request was confirmed; False if it is gone or replaced.

        Does not raise StoreError when the mark cannot be written (a file-size limit, a
        full disk): the message is confirmed and the request on its way whether or not
        it is marked, and a submit reported failed would be submitted again, and sent
        twice. Unless the mark is ``needed``: by a caller that found the request
        unconfirmed and did not create it. Its creator, whose publish may still fail,
        takes an unmarked request back (``discard_unconfirmed``); then StoreError,
        unless the record shows the request is not its creator's to take back any more.
        """
        try:
            # A power loss may undo it: then a later submit of the ID publishes once more (harmless).
            record = self._apply(request_id, lambda r: mark_published(r, generation), durable=False)
        except UnknownRequest:
            return False
        except StoreError:
            # Unmarked, a later submit of the same request publishes once more (harmless, as above).
            try:
                found = self.store.read_status(request_id)
            except StoreError:
                if needed:
                    raise
                return True
            if found is None or found.generation != generation:
                return False
            if needed and is_untouched(found):
                raise  # its creator may take it back: not "accepted"
            return True
        return record.generation == generation

    def republish(self, request_id: str, token: int) -> StatusRecord:
        return self._apply(request_id, lambda r: republish(r, token))

    def hold_for_network(self, request_id: str, token: int) -> StatusRecord:
        return self._apply(request_id, lambda r: hold_for_network(r, token))

    def defer(self, request_id: str, token: int) -> StatusRecord:
        return self._apply(request_id, lambda r: defer(r, token))

    def wait_for_network(self, request_id: str, token: int) -> StatusRecord:
        return self._apply(request_id, lambda r: wait_for_network(r, token))

    def mark_running(self, request_id: str, token: int, attempt: AttemptRecord) -> StatusRecord:
        # A process crash keeps this record (it is written before the request is
        # sent); only a power loss can undo it, and the request then just runs again.
        return self._apply(request_id, lambda r: mark_running(r, token, attempt), durable=False)

    def mark_sent(self, request_id: str, number: int, when: float) -> StatusRecord:
        # Like mark_running: a process crash keeps it; a power loss may undo it (the
        # attempt then counts as unsent, and runs again without spending a retry).
        return self._apply(request_id, lambda r: mark_sent(r, number, when), durable=False)

    def close_interrupted(self, request_id: str, closed: Sequence[AttemptRecord]) -> StatusRecord:
        return self._apply(request_id, lambda r: close_interrupted(r, closed))

    def fail(self, request_id: str, error: str) -> StatusRecord:
        return self._apply(request_id, lambda r: fail(r, error))

    def cancel(self, request_id: str) -> StatusRecord:
        return self._apply(request_id, cancel)

    def replay(self, request_id: str) -> tuple[StatusRecord, StatusRecord]:
        """Replay a failed or cancelled request: ``(the record before, after)``; RetryRefused for any
        other (the status lock makes concurrent replays of one request change it once)."""
        before: list[StatusRecord] = []

        def change(record: StatusRecord) -> StatusRecord:
            before.append(record)
            return replay(record)

        try:
            # amend_terminal: the one transition that leaves a final status.
            after = self.store.update_status(request_id, change, amend_terminal=True)
        except IllegalTransition as error:
            raise RetryRefused(str(error)) from None
        return before[-1], after

    def undo_replay(self, request_id: str, ended: StatusRecord, token: int) -> StatusRecord:
        return self._apply(request_id, lambda r: undo_replay(r, ended, token))

    def record_attempt(
        self, request_id: str, attempt: AttemptRecord, transition: Transition, *, closing: Sequence[AttemptRecord] = ()
    ) -> StatusRecord:
        """Record the finished ``attempt`` with ``transition`` (finish, schedule_retry,
        offline_attempt), or with :func:`amend_after_cancel` if the request ended meanwhile.
        ``closing``: attempts a dead worker left, closed first (:func:`close_interrupted`) in the
        same write, so that no record shows them closed but not decided."""

        def change(record: StatusRecord) -> StatusRecord | None:
            if record.is_terminal:
                return amend_after_cancel(record, attempt)
            if closing:
                try:
                    record = close_interrupted(record, closing)
                except IllegalTransition:
                    return None
            return _or_unchanged(transition)(record)

        return self.store.update_status(request_id, change, amend_terminal=True)


__all__ = [
    "FIRST_TOKEN",
    "IllegalTransition",
    "RequestLifecycle",
    "amend_after_cancel",
    "cancel",
    "close_interrupted",
    "defer",
    "fail",
    "finish",
    "hand_over",
    "hold_for_network",
    "is_running_under",
    "is_same_request",
    "is_stale",
    "is_unconfirmed",
    "is_untouched",
    "mark_published",
    "mark_running",
    "mark_sent",
    "message_args",
    "new_record",
    "next_token",
    "offline_attempt",
    "parse_message_args",
    "replay",
    "republish",
    "schedule_retry",
    "undo_replay",
    "wait_for_network",
    "why_not_replace",
    "why_not_replay",
    "why_not_run",
]
