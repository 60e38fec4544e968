"""What a worker does with one message: the life of a request between attempts.

``RequestRunner.run(request_id, token)`` is the body of the ``execute_request``
actor. It holds the request's claim for the whole attempt, so duplicates of a
message (redelivery, recovery) can never run one request twice at once, and it
decides the next step under that claim:

* completed / failed  -> final status record, no new message;
* retry               -> publish the next run (delay 2, 4 … 512 s × scale), then
                         record ``waiting_retry``;
* network down        -> publish a re-check, record ``waiting_network``; no retry spent.

What a message does before an attempt is the core's run plan
(:func:`~bghttp.core.run_plan.plan_run`); what to do after one is the retry
policy's :func:`~bghttp.worker.retry_policy.decide`; every status change and the
token rule (:func:`~bghttp.lifecycle.hand_over`: the next message is published
*before* the status record names its token) are :mod:`bghttp.lifecycle`'s. This
module only carries them out.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx

from .. import lifecycle, record_log, tracing
from ..config import Settings
from ..core.outcomes import Outcome
from ..core.run_plan import EARLY_TOLERANCE_SECONDS, RunPlan, Step, plan_run
from ..core.urls import url_host
from ..durability import NotDurable
from ..errors import BrokerUnavailable, StoreError, UnknownRequest
from ..lifecycle import RequestLifecycle
from ..logs import get_logger
from ..models import AttemptRecord, Phase, RequestSpec, RequestStatus, StatusRecord
from ..redaction import request_secrets, scrub
from ..store_api import Batch, Store
from .cancel_watch import CancelWatch
from .execution import AttemptResult, perform_attempt
from .in_flight import InFlightLimits
from .retry_policy import Verdict, decide
from .saved_answers import answer_saved_during, end_half_saved_answer
from .unrecorded import ATTEMPT_OPTION, OutcomeNotRecorded, UnrecordedAttempt, carried, interrupted

#: How long the next run waits for the claim its predecessor is about to release
#: (then it publishes itself again, 1 s later, and the message we hold is acked).
SUCCESSOR_CLAIM_WAIT_SECONDS = 10.0
#: How long a message waits for a claim held by another message, while the record
#: shows this message's own run under way, before it concludes that it is a duplicate.
DUPLICATE_CLAIM_GRACE_SECONDS = 1.0


class Publish(Protocol):
    """Publish the run ``(request_id, token)`` after ``delay`` s, with message ``options`` (broker.publish_request)."""

    def __call__(
        self, request_id: str, token: int, delay: float | None, /, *, options: dict[str, Any] | None = None
    ) -> None: ...


#: Called after a run that wrote or met its request's final status, its writes durable:
#: ``(final record, response file or None)``, as the run held them in memory (publishes final events).
AfterRun = Callable[[StatusRecord, "Path | None"], object]


class RequestNotInStore(Exception):
    """The message names a request this store neither holds nor removed: maybe another group's.

    Not to be acked away (its request would wait for ever): the actor dead-letters it.
    """


class Connectivity(Protocol):
    def is_online(self) -> bool: ...
    def check_now(self) -> bool: ...


class RequestRunner:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        http: httpx.Client,
        publish: Publish,
        connectivity: Connectivity | None = None,
        on_attempt: Callable[[RequestSpec, StatusRecord, AttemptResult], None] | None = None,
        on_failed_without_attempt: Callable[[StatusRecord], None] | None = None,
        after_run: AfterRun | None = None,
        in_flight: InFlightLimits | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.http = http
        self.publish = publish
        self.connectivity = connectivity
        self.on_attempt = on_attempt
        #: Called with the record when this run fails a request with no attempt (unreadable, or its
        #: attempts kept killing workers): counted like a failure after an attempt, by whoever counts.
        self.on_failed_without_attempt = on_failed_without_attempt
        self.after_run = after_run
        self.lifecycle = RequestLifecycle(store)
        self.in_flight = in_flight or InFlightLimits(settings.max_in_flight, settings.max_in_flight_per_host)

    # ------------------------------------------------------------------ entry
    def run(
        self,
        request_id: str,
        token: int,
        *,
        after_failure: bool = False,
        retried: bool = False,
        unrecorded: UnrecordedAttempt | None = None,
    ) -> None:
        """Run the message ``(request_id, token)``. ``after_failure``: it is a retry of a run of it whose
        commit failed (NotDurable): a final record it meets is written to the disk again. ``retried``: it
        is a retry of a run that raised (which may have kept an owed event, ``keep_owed_event``).
        ``unrecorded``: the finished attempt the message carries (used if the record shows it unfinished).
        Raises OutcomeNotRecorded if an attempt's outcome could not be written."""
        # Every file this run writes becomes durable in one shared filesystem sync
        # before we return (and the message is acked), instead of 5 fsyncs of its own.
        try:
            try:
                with self.store.batch() as batch:
                    final = self._run(request_id, token, batch, after_failure, unrecorded)
            except NotDurable as error:
                # The commit failed (a failing disk): what this run wrote may be lost on a
                # power cut, so the message must not be acked. Raised on, the message is
                # retried (store errors without limit); its next run writes a final record again
                # (``rewrite_final``: a sync alone would not write pages a failed writeback lost).
                get_logger(request_id=request_id, token=token).error(
                    "run_not_durable", error=str(error), store=self.store.location
                )
                raise
        finally:
            self.in_flight.release()  # the attempt's place, if an error ended the run before it was given back
        if self.after_run is None:
            return
        # Outcomes of this ID whose event a failed publish left owed (``keep_owed_event``): this message's
        # own, if it is their retry, or those of a request of the ID removed (and submitted again) since.
        owed = self.store.owed_events(request_id) if retried or final is None else []
        if final is not None:
            owed = [record for record in owed if record.outcome != final[0].outcome]
        if final is None and not owed:
            return
        try:
            for record in owed:
                self.after_run(record, None)  # its response went with its request
            if final is not None:
                # After the sync, before the ack: a final status's event (bghttp.events), at least once.
                # From the record this run wrote or met, not read again: the caller may remove
                # the request the moment it sees it final, and its event is owed all the same.
                self.after_run(*final)
        except BaseException:
            # The message is retried; kept here, the event is announced by that retry even if
            # the request is removed (and its ID submitted again) before it.
            if final is not None:
                self.store.keep_owed_event(final[0])
            raise
        if retried or owed:
            self.store.forget_owed_events(request_id, [*owed, *([] if final is None else [final[0]])])

    def _run(
        self,
        request_id: str,
        token: int,
        batch: Batch,
        after_failure: bool = False,
        unrecorded: UnrecordedAttempt | None = None,
    ) -> tuple[StatusRecord, Path | None] | None:
        """Run the message; the request's final record (and response file) if this message announces it."""
        record, response = self._run_under_claim(request_id, token, batch, after_failure, unrecorded)
        if record is None or not record.is_terminal or lifecycle.is_stale(record, token):
            return None  # not final, or a newer message of the request announces it
        return record, response

    def _with_response(self, record: StatusRecord | None) -> tuple[StatusRecord | None, Path | None]:
        """``record`` and, if it is final, its response file if one is saved: looked at under the
        claim, which a remove must take, so the event names the file the outcome saved."""
        if record is None or not record.is_terminal:
            return record, None
        path = self.store.response_file_path(record.request_id)
        return record, path if path.exists() else None

    def _run_under_claim(
        self,
        request_id: str,
        token: int,
        batch: Batch,
        after_failure: bool = False,
        unrecorded: UnrecordedAttempt | None = None,
    ) -> tuple[StatusRecord | None, Path | None]:
        """Run the message: the request's record as this run last wrote or read it (None: none to
        announce), with its response file if it is final."""
        log = get_logger(request_id=request_id, token=token)
        spec, unreadable = self._load_request(request_id)
        if spec is None and unreadable is None:
            self._not_here(request_id, log)
            return None, None
        if spec is not None:
            log = log.bind(method=spec.method, host=url_host(spec.url))
        started = time.monotonic()
        deadline = started + SUCCESSOR_CLAIM_WAIT_SECONDS
        rewrite = False
        while True:
            with self.store.claim(request_id) as claimed:
                try:
                    record = self.store.read_status(request_id)
                except StoreError as error:
                    if not isinstance(error.__cause__, record_log.CorruptRecord):
                        raise  # the store may come back: Dramatiq retries the message
                    # No valid version in the whole file: no retry can help, and nothing can be recorded.
                    log.error("request_unreadable_status_not_written", error=str(error), store=self.store.location)
                    return None, None
                if record is None:
                    self._not_here(request_id, log)
                    return None, None
                plan = self._plan(record, token)
                # A final record to write again needs the claim: a remove, or a replace by another
                # request of the ID, takes it, and must not come between the rewrite's read and its
                # renames (the old body would be put in place as the new request's). Wait for it below.
                rewrite = record.is_terminal and after_failure
                if plan.step is Step.DROP and (claimed or not rewrite):
                    end_half_saved_answer(self.store, record, claimed)  # its worker died, cancelled, in commit_response
                    if rewrite:
                        # The run that wrote it may have failed its commit: after a failed writeback
                        # the kernel keeps the pages as clean, and a sync writes nothing. Only
                        # writing them again puts the outcome on the disk before this message's ack.
                        self.store.rewrite_final(request_id)
                    _drop(record, plan.reason, batch, log)
                    return self._with_response(record)  # a final one is announced again (at least once)
                if claimed:
                    return self._with_response(self._run_owned(spec, unreadable, record, token, log, unrecorded))
                if (
                    lifecycle.is_running_under(record, token)
                    and time.monotonic() - started > DUPLICATE_CLAIM_GRACE_SECONDS
                ):
                    # The record shows this very run's attempt under way, for a while: this
                    # message is a duplicate. (A stale message holds the claim only for the
                    # moment it takes to see that it is stale; dropping at once would lose
                    # the current run behind it, were its worker dead.)
                    log.info("message_dropped", reason="duplicate of a running attempt")
                    return None, None
            # The next run, whose predecessor still holds the claim while it finishes
            # (the record may name our token already: the predecessor published us,
            # recorded us, and has yet to let go): wait for it rather than drop the
            # only message left.
            if time.monotonic() > deadline:
                self._defer_for_claim(request_id, token, rewrite, log, unrecorded)
                return None, None
            time.sleep(0.01)

    def _defer_for_claim(
        self, request_id: str, token: int, rewrite: bool, log: Any, unrecorded: UnrecordedAttempt | None = None
    ) -> None:
        """Hand the message back: another held the claim too long. NotDurable (Dramatiq retries this
        message, its option kept) if it is to write a final record again: a message published again
        would not say that a commit failed. The one published again carries the attempt this one
        carries (``unrecorded``): without it, that attempt would be closed as a dead worker's."""
        if rewrite:
            raise NotDurable(
                f"request {request_id}: its final record is still to be written again (a commit failed),"
                " and another holds its claim"
            )
        options = None if unrecorded is None else {ATTEMPT_OPTION: unrecorded.to_option()}
        self.publish(request_id, token, 1.0, options=options)
        log.info("message_deferred", reason="claim still held")

    def _run_owned(
        self,
        spec: RequestSpec | None,
        unreadable: str | None,
        record: StatusRecord,
        token: int,
        log: Any,
        unrecorded: UnrecordedAttempt | None = None,
    ) -> StatusRecord | None:
        """The claim is ours and ``token`` may run: run the request (or fail it if its file is unreadable)."""
        if spec is None:
            return self._fail_unreadable(record.request_id, str(unreadable), log)
        if not lifecycle.is_same_request(spec, record):
            # The request was removed and its ID submitted again after we
            # read the spec: ours is not the request that is there now.
            log.info("message_dropped", reason="request replaced")
            return None
        return self._run_claimed(spec, record, token, log, unrecorded)

    def _not_here(self, request_id: str, log: Any) -> None:
        """A message whose request is not in this store: dropped if the store removed it (``run`` then
        announces the outcomes a failed publish left owed, if any), else RequestNotInStore."""
        if self.store.was_removed(request_id):
            log.info("message_dropped", reason="removed")
            return
        # A client on another store (or a mistyped --store) shares this queue: acking
        # would leave its request queued for ever, with nobody the wiser.
        log.error(
            "request_not_in_store",
            store=self.store.location,
            queue=self.settings.queue_name,
            reason="not in this store and not removed here: dead-lettered (is a client using another store?)",
        )
        raise RequestNotInStore(request_id)

    def _load_request(self, request_id: str) -> tuple[RequestSpec | None, str | None]:
        """(spec, None); (None, why) if the request file holds no valid request; (None, None) if it is gone.

        A file that cannot be *opened* raises (StoreError): the store may come
        back, and Dramatiq retries the message. A file that opens but is not a
        request (cut off, edited by hand) will not get better by retrying.
        """
        path = self.store.request_file_path(request_id)
        try:
            spec = self.store.load_request(request_id)
        except StoreError as error:
            if isinstance(error.__cause__, OSError):
                raise
            cause = error.__cause__
            why = f"not valid JSON ({cause})" if isinstance(cause, ValueError) else "not a JSON object"
            return None, f"the request file {path} is {why}"
        except ValueError as error:
            return None, f"the request file {path} is not a valid request: {error}"
        if spec is not None and spec.request_id != request_id:
            # Running it would write another request's status and response.
            return None, f"the request file {path} names another request ({spec.request_id!r})"
        return spec, None

    def _fail_unreadable(self, request_id: str, error: str, log: Any) -> StatusRecord | None:
        """End a request whose file no worker can read: failed, with the reason (no retry helps)."""
        log.error("request_unreadable", error=error)
        try:
            return self._failed_without_attempt(self.lifecycle.fail(request_id, error))
        except (StoreError, UnknownRequest) as status_error:
            log.error("request_unreadable_status_not_written", error=str(status_error), store=self.store.location)
            return None

    # ---------------------------------------------------------- under claim
    def _plan(self, record: StatusRecord | None, token: int) -> RunPlan:
        online = self.connectivity is None or self.connectivity.is_online()
        return plan_run(record, token, now=time.time(), online=online)

    def _run_claimed(
        self, spec: RequestSpec, record: StatusRecord, token: int, log: Any, unrecorded: UnrecordedAttempt | None
    ) -> StatusRecord:
        """Carry out the request's run plan under its claim; its record as this run left it."""
        plan = self._plan(record, token)
        if plan.step is Step.CLOSE_INTERRUPTED:
            # The claim is ours, so the worker that ran this attempt is gone.
            record, settled = self._close_interrupted(spec, record, log, unrecorded, token)
            if settled:
                return record
            plan = self._plan(record, token)  # it was never sent: what now, with the attempt closed
        if plan.step is Step.DEFER_UNTIL_DUE:
            # Never run early: hand the message back for the time that is left.
            request_id, delay = spec.request_id, plan.delay
            return lifecycle.hand_over(
                record, lambda t: self.publish(request_id, t, delay), lambda t: self.lifecycle.defer(request_id, t)
            )
        if plan.step is Step.WAIT_FOR_NETWORK:
            return self._wait_for_network(spec, record, log)
        if plan.step is Step.FAIL:
            error = plan.reason or "failed"
            log.error("request_failed", error=error)
            return self._failed_without_attempt(self.lifecycle.fail(spec.request_id, error))
        if plan.step is not Step.START:  # DROP: the record was read under this claim, and allowed the run
            return record
        return self._attempt(spec, record, token, plan.delay, log)

    def _attempt(self, spec: RequestSpec, record: StatusRecord, token: int, wait: float, log: Any) -> StatusRecord:
        """Make the attempt the plan started (after ``wait`` s: due within the tolerance, never early)."""
        if wait > 0:
            time.sleep(wait)
        now = time.time()
        if not self.in_flight.acquire(spec.url):
            return self._defer_for_busy_host(spec, record, log)
        number = record.attempt_count + 1
        started = AttemptRecord(number=number, started_at=now, due_at=record.next_attempt_at)
        record = self.lifecycle.mark_running(spec.request_id, token, started)
        if record.is_terminal:  # cancelled between our checks
            return record
        log = log.bind(attempt=number)
        log.info("attempt_started")
        sent_at: list[float] = []

        def mark_sent() -> None:  # raises if it cannot be recorded: then nothing is sent
            now = time.time()
            self.lifecycle.mark_sent(spec.request_id, number, now)
            sent_at.append(now)

        with tracing.attempt_span(spec, number, propagate=self.settings.propagate_trace) as span:
            result = perform_attempt(
                self.http,
                self.store,
                span.spec,  # with the span's traceparent when it is propagated
                max_response_bytes=self.settings.max_response_bytes,
                is_cancelled=CancelWatch(self.store, spec.request_id),
                on_sending=mark_sent,
            )
            span.record(result)
        self.in_flight.release()  # the host's place is free while the outcome is recorded
        if result.error:
            # The one place an attempt's error text enters logs and records: an
            # httpx/h11/OS message may quote a secret header or the URL's password.
            result = dataclasses.replace(result, error=scrub(result.error, request_secrets(spec.headers, spec.url)))
        finished = dataclasses.replace(
            started,
            finished_at=time.time(),
            outcome=result.outcome,
            status_code=result.status_code,
            error=result.error,
            sent_at=sent_at[0] if sent_at else None,
            retry_after=result.retry_after,
        )
        log = log.bind(
            outcome=result.outcome.value, status_code=result.status_code, duration_ms=round(result.duration_ms, 1)
        )
        try:
            record = self._settle(spec, record, finished, result, log)
        except OutcomeNotRecorded:
            raise  # after the retry was published: it carries the attempt, and says so
        except StoreError as error:
            # Not a dead worker's attempt: the re-run of this message, and the retry if one was
            # published, carry how it ended, and the run that closes it says so.
            unrecorded = UnrecordedAttempt(finished, result.final, not_saved=str(error))
            raise OutcomeNotRecorded(str(error), unrecorded) from error
        self._attempt_ended(spec, record, result)
        return record

    def _settle(
        self,
        spec: RequestSpec,
        record: StatusRecord,
        attempt: AttemptRecord,
        result: AttemptResult,
        log: Any,
        closing: Sequence[AttemptRecord] = (),
        token: int | None = None,
        carry: UnrecordedAttempt | None = None,
    ) -> StatusRecord:
        """Carry out the retry policy's decision on the finished ``attempt``; ``closing``: unfinished
        attempts a dead worker left, closed in the same write (``lifecycle.close_interrupted``).
        ``token``: the message closing them, which may itself be the retry a hand-over would publish
        now; ``carry``: how the attempt ended, as the retry is to carry it (default: ``attempt``).
        Raises OutcomeNotRecorded if a retry was published and its outcome then could not be written."""
        request_id = spec.request_id
        connectivity = self.connectivity
        decision = decide(
            result.outcome,
            retries_used=record.retries_used,
            max_retries=spec.max_retries,
            backoff_scale=self.settings.backoff_scale,
            network_down=None if connectivity is None else lambda: not connectivity.check_now(),
            method=spec.method,
            status_code=result.status_code,
            retry_after=result.retry_after,
            max_retry_after=self.settings.max_retry_after,
            final=result.final,
        )
        verdict = decision.verdict
        if verdict is Verdict.COMPLETE:
            log.info("request_completed", response_bytes=result.response_bytes)
            return self._finish(request_id, attempt, RequestStatus.COMPLETED, closing)
        if verdict is Verdict.CANCELLED:
            log.info("request_cancelled")
            return self._finish(request_id, attempt, RequestStatus.CANCELLED, closing)
        if verdict is Verdict.WAIT_FOR_NETWORK:
            log.warning("attempt_failed_offline", error=result.error)
            record = self.lifecycle.record_attempt(
                request_id, attempt, lambda r: lifecycle.offline_attempt(r, attempt), closing=closing
            )
            if record.is_terminal:
                return record
            return self._wait_for_network(spec, record, log)
        if verdict is Verdict.RETRY:
            retry_number, delay = decision.retry_number, decision.delay
            log.warning("attempt_failed", error=result.error, retry=retry_number, retry_in_s=delay)
            # Due exactly as documented (AttemptRecord.due_at): the attempt's end plus the
            # delay, however long judging it took; the message waits only for what is left.
            due = (attempt.finished_at or time.time()) + delay
            carried = carry or UnrecordedAttempt(attempt, result.final)
            successor = lifecycle.next_token(record)
            if successor in (token, carried.successor):
                # The retry a hand-over would publish now is in the queue already (published before a
                # write that failed): this message, or the one the re-run message published. Recorded
                # under its token, not published again: another message at every run while the disk
                # stays full, each of which publishes one more, would double them at every round.
                return self._schedule_retry(request_id, attempt, retry_number, due, successor, closing)
            carried = dataclasses.replace(carried, successor=None)
            # Published before the outcome is written: should that write fail, the retry knows how the attempt ended.
            follows = {ATTEMPT_OPTION: carried.to_option()}
            published: list[int] = []

            def publish(t: int) -> None:
                self.publish(request_id, t, max(0.0, due - time.time()), options=follows)
                published.append(t)

            try:
                return lifecycle.hand_over(
                    record, publish, lambda t: self._schedule_retry(request_id, attempt, retry_number, due, t, closing)
                )
            except StoreError as error:
                if not published:
                    raise
                # The retry carries the attempt and closes it: a re-run of this message must not publish another.
                not_saved = carried.not_saved or str(error)
                unrecorded = dataclasses.replace(carried, not_saved=not_saved, successor=published[0])
                raise OutcomeNotRecorded(str(error), unrecorded) from error
            except BrokerUnavailable:
                # Spend the retry and record the due time under the *current*
                # token: the message we hold comes back (redelivered, or retried by
                # Dramatiq) and then waits until it is due, as the new one would have.
                self._schedule_retry(request_id, attempt, retry_number, due, None, closing)
                raise
        log.error("request_failed", error=result.error, retries_used=record.retries_used)
        return self._finish(request_id, attempt, RequestStatus.FAILED, closing)

    def _close_interrupted(
        self,
        spec: RequestSpec,
        record: StatusRecord,
        log: Any,
        unrecorded: UnrecordedAttempt | None = None,
        token: int | None = None,
    ) -> tuple[StatusRecord, bool]:
        """Close the attempts left unfinished: ``(record, whether that settled this run)``.

        What is known decides: the outcome the message carries (``unrecorded``:
        its worker ended the attempt but could not write its outcome), decided as
        when it ended; else a response saved during the attempt; else its worker
        died: an attempt that was marked sent may have reached the server and
        spends a retry like any error (none left: failed); one that was not sent
        spends nothing, and the request runs again now.
        Attempts of a run before the latest replay are closed and charged to nothing.
        """
        unfinished = [attempt for attempt in record.attempts if attempt.finished_at is None]
        now = time.time()
        if not any(attempt.finished_at is None for attempt in record.run_attempts):
            # Left by a run before the latest replay (cancelled, its worker killed): that run's
            # outcome is final, so its dead attempt is only closed; the replay's budget is its own.
            end_half_saved_answer(self.store, record)
            closed = [carried(unrecorded, a) or interrupted(a, now) for a in unfinished]
            record = self.lifecycle.close_interrupted(spec.request_id, closed)
            return record, record.is_terminal
        closed = [interrupted(attempt, now) for attempt in unfinished[:-1]]
        last = unfinished[-1]
        known = unrecorded if unrecorded is not None and unrecorded.ends(last) else None
        saved = None if known is not None else answer_saved_during(self.store, spec.request_id, last)
        ended, sent_at, counted = now, last.sent_at, saved is not None or last.sent_at is not None
        if known is not None:  # its worker's own judgement (of a response it saved too, if it did)
            how = known.attempt
            assert how.outcome is not None and how.finished_at is not None  # from_option keeps finished ones only
            result = AttemptResult(
                how.outcome, how.status_code, known.closing_error(), retry_after=how.retry_after, final=known.final
            )
            # As it ended: its retry is due on the schedule from then, not from now.
            ended, sent_at, counted = how.finished_at, how.sent_at or last.sent_at, how.counted
        elif saved is not None:
            status_code, answer = saved
            result = AttemptResult(answer.outcome, status_code, answer.error, retry_after=answer.retry_after)
        else:
            result = AttemptResult(Outcome.INTERRUPTED, None, interrupted(last, now).error)
        attempt = dataclasses.replace(
            last,
            finished_at=ended,
            outcome=result.outcome,
            status_code=result.status_code,
            error=result.error,
            counted=counted,
            sent_at=sent_at,
            retry_after=result.retry_after,
        )
        closing = [*closed, attempt]
        log = log.bind(attempt=attempt.number)
        if known is not None:
            log.warning("attempt_outcome_recorded_late", outcome=result.outcome.value, not_saved=known.not_saved)
        else:
            log.warning("attempt_interrupted", sent=last.sent_at is not None, status_code=result.status_code)
        if not attempt.counted:
            record = self.lifecycle.close_interrupted(spec.request_id, closing)
            if record.is_terminal:
                self._attempt_ended(spec, record, result)
                return record, True
            return record, False  # never sent: run it again now, no retry spent
        # Closed and decided in one write: with two, a failure between them (a full disk) left the
        # attempt closed but undecided, and the re-run started another one, beyond the retries.
        carry = known if known is not None else UnrecordedAttempt(attempt, result.final)
        record = self._settle(spec, record, attempt, result, log, closing=closing, token=token, carry=carry)
        if token is not None and record.token == token and record.phase is Phase.WAITING_RETRY:
            # This message went on as the retry (see _settle): the attempt was ended by the worker
            # that ran it, or by this run if it died; the retry runs now, or when it is due.
            self._attempt_ended(spec, record, result)
            return record, False
        # The worker that ran the attempt died before it could count it: this one ended it, and counts it
        # (and the request, when that made it final) in its metrics and heartbeat.
        self._attempt_ended(spec, record, result)
        return record, True

    def _failed_without_attempt(self, record: StatusRecord) -> StatusRecord:
        if self.on_failed_without_attempt is not None and record.status is RequestStatus.FAILED:
            self.on_failed_without_attempt(record)
        return record

    def _attempt_ended(self, spec: RequestSpec, record: StatusRecord, result: AttemptResult) -> None:
        if self.on_attempt is not None:
            self.on_attempt(spec, record, result)

    def _finish(
        self, request_id: str, attempt: AttemptRecord, status: RequestStatus, closing: Sequence[AttemptRecord] = ()
    ) -> StatusRecord:
        return self.lifecycle.record_attempt(
            request_id, attempt, lambda r: lifecycle.finish(r, attempt, status), closing=closing
        )

    def _schedule_retry(
        self,
        request_id: str,
        attempt: AttemptRecord,
        retry_number: int,
        due: float,
        token: int | None,
        closing: Sequence[AttemptRecord] = (),
    ) -> StatusRecord:
        return self.lifecycle.record_attempt(
            request_id,
            attempt,
            lambda r: lifecycle.schedule_retry(r, attempt, retry_number=retry_number, due=due, token=token),
            closing=closing,
        )

    def _wait_for_network(self, spec: RequestSpec, record: StatusRecord, log: Any) -> StatusRecord:
        log.info("waiting_for_network", recheck_in_s=self.settings.connectivity_interval)
        request_id, delay = spec.request_id, self.settings.connectivity_interval
        return lifecycle.hand_over(
            record,
            lambda t: self.publish(request_id, t, delay),
            lambda t: self.lifecycle.wait_for_network(request_id, t),
        )

    def _defer_for_busy_host(self, spec: RequestSpec, record: StatusRecord, log: Any) -> StatusRecord:
        """Hand the message back for a little while: its host has all its places taken here.

        As for a message that came early: a new run under the next token, published
        before the record names it; no attempt is recorded and no retry spent. (Not
        the same token: a copy that arrived while this message still held the claim
        would take itself for a duplicate of a running attempt and drop, and the
        request would be left with no message.)
        """
        request_id, delay = spec.request_id, self.in_flight.defer_delay(spec.url)
        record = lifecycle.hand_over(
            record, lambda t: self.publish(request_id, t, delay), lambda t: self.lifecycle.defer(request_id, t)
        )
        log.info("message_deferred", reason="host busy", retry_in_s=round(delay, 3))
        return record


def _drop(record: StatusRecord, why_not: str | None, batch: Batch, log: Any) -> None:
    """Drop a message that may not run the request, after making a final record durable.

    It may be the retry of a run whose commit failed: the outcome is acked with
    this message, so it must be on disk first (the batch commits it, or raises).
    """
    if record.is_terminal:
        batch.add_request(record.request_id)
    log.info("message_dropped", reason=why_not)


__all__ = ["EARLY_TOLERANCE_SECONDS", "RequestNotInStore", "RequestRunner"]
