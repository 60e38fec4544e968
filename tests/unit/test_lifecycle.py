"""The state machine of a request (``bghttp.lifecycle``): one test per arrow, and the arrows that do not exist."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bghttp import lifecycle
from bghttp.errors import RetryRefused, UnknownRequest
from bghttp.lifecycle import IllegalTransition, RequestLifecycle
from bghttp.models import AttemptRecord, Phase, RequestSpec, RequestStatus, StatusRecord
from bghttp.store import FileStore
from bghttp.validation import prepare_request

UNFINISHED = (Phase.QUEUED, Phase.RUNNING, Phase.WAITING_RETRY, Phase.WAITING_NETWORK)
FINAL = (RequestStatus.COMPLETED, RequestStatus.FAILED, RequestStatus.CANCELLED)


def spec(generation: str = "g1") -> RequestSpec:
    return RequestSpec(
        request_id="r1", method="GET", url="http://service.test/", headers=[], timeout=5.0, max_retries=3,
        created_at=1000.0, generation=generation,
    )


def record(
    phase: Phase = Phase.QUEUED, status: RequestStatus = RequestStatus.IN_PROGRESS, **fields: object
) -> StatusRecord:
    base = lifecycle.new_record(spec())
    if status is not RequestStatus.IN_PROGRESS:
        phase = Phase.DONE
    return base.evolve(phase=phase, status=status, **fields)


def finished_attempt(*, status_code: int | None = 502, error: str | None = "HTTP 502") -> AttemptRecord:
    return AttemptRecord(number=1, started_at=1.0, finished_at=2.0, outcome="http_error",
                         status_code=status_code, error=error)


def running(token: int = 1) -> StatusRecord:
    return lifecycle.mark_running(record(), token, AttemptRecord(number=1, started_at=1.0))


# ------------------------------------------------------------------ tokens
def test_message_arguments_round_trip_and_old_messages_carry_the_first_token() -> None:
    assert lifecycle.parse_message_args(lifecycle.message_args("r1", 7)) == ("r1", 7)
    assert lifecycle.parse_message_args(["r1"]) == ("r1", lifecycle.FIRST_TOKEN)
    assert lifecycle.parse_message_args([]) is None


def test_a_message_runs_only_with_a_current_token_of_an_unfinished_request() -> None:
    current = record(token=3)
    assert lifecycle.next_token(current) == 4
    assert lifecycle.why_not_run(current, 3) is None
    assert lifecycle.why_not_run(current, 4) is None  # published before the record names it
    assert lifecycle.why_not_run(current, 2) == "stale"
    assert lifecycle.why_not_run(record(status=RequestStatus.COMPLETED, token=3), 3) == "terminal"
    assert lifecycle.why_not_run(None, 1) == "gone"


def test_a_run_is_under_way_only_while_the_record_shows_its_own_attempt_unfinished() -> None:
    assert lifecycle.is_running_under(running(token=2), 2)
    assert not lifecycle.is_running_under(running(token=2), 3)  # the next run, published, not yet running
    # Handed back (for a busy host, or early): the record names the next token, and nothing runs.
    assert not lifecycle.is_running_under(lifecycle.defer(record(), 2), 2)
    # A dead worker's attempt closed, then handed back: still "running" by phase, but no attempt is under way.
    closed = lifecycle.close_interrupted(running(token=1), [finished_attempt()])
    assert not lifecycle.is_running_under(lifecycle.defer(closed, 2), 2)


def test_a_spec_of_another_generation_is_another_request() -> None:
    assert lifecycle.is_same_request(spec("g1"), record())
    assert not lifecycle.is_same_request(spec("g2"), record())


# ------------------------------------------------------------ transitions
def test_new_record_is_queued_and_unconfirmed() -> None:
    new = lifecycle.new_record(spec())
    assert (new.status, new.phase, new.published, new.token) == (RequestStatus.IN_PROGRESS, Phase.QUEUED, False, 1)
    assert lifecycle.is_unconfirmed(new) and lifecycle.is_untouched(new)


def test_mark_published_accepts_its_own_generation_only() -> None:
    assert lifecycle.mark_published(record(published=False), "g1").published
    assert not lifecycle.is_unconfirmed(lifecycle.mark_published(record(published=False), "g1"))
    with pytest.raises(IllegalTransition):
        lifecycle.mark_published(record(published=False), "other")


def test_republish_raises_the_token_and_confirms() -> None:
    new = lifecycle.republish(record(published=False, token=2), 5)
    assert (new.token, new.published) == (5, True)
    assert lifecycle.republish(record(token=9), 5).token == 9  # never lowers it


@pytest.mark.parametrize("phase", [Phase.QUEUED, Phase.WAITING_RETRY])
def test_hold_for_network_from_queued_or_waiting_retry(phase: Phase) -> None:
    assert lifecycle.hold_for_network(record(phase), 1).phase is Phase.WAITING_NETWORK


@pytest.mark.parametrize("phase", [Phase.RUNNING, Phase.WAITING_NETWORK])
def test_hold_for_network_refuses_a_running_or_held_request(phase: Phase) -> None:
    with pytest.raises(IllegalTransition):
        lifecycle.hold_for_network(record(phase), 1)


def test_hold_for_network_refuses_a_stale_message() -> None:
    with pytest.raises(IllegalTransition):
        lifecycle.hold_for_network(record(token=2), 1)


def test_defer_keeps_phase_and_due_time() -> None:
    new = lifecycle.defer(record(Phase.WAITING_NETWORK, next_attempt_at=50.0), 2)
    assert (new.phase, new.next_attempt_at, new.token) == (Phase.WAITING_NETWORK, 50.0, 2)


@pytest.mark.parametrize("phase", UNFINISHED)
def test_wait_for_network_from_any_unfinished_phase(phase: Phase) -> None:
    new = lifecycle.wait_for_network(record(phase, next_attempt_at=50.0), 2)
    assert (new.phase, new.next_attempt_at, new.token, new.retries_used) == (Phase.WAITING_NETWORK, None, 2, 0)


@pytest.mark.parametrize("phase", UNFINISHED)  # running too: its worker died
def test_mark_running_from_any_unfinished_phase(phase: Phase) -> None:
    attempt = AttemptRecord(number=1, started_at=1.0)
    new = lifecycle.mark_running(record(phase, next_attempt_at=50.0), 4, attempt)
    assert (new.phase, new.token, new.next_attempt_at, new.attempts) == (Phase.RUNNING, 4, None, (attempt,))


@pytest.mark.parametrize("status", FINAL)
def test_finish_a_running_request(status: RequestStatus) -> None:
    attempt = finished_attempt(status_code=200, error=None)
    new = lifecycle.finish(running(), attempt, status)
    assert (new.status, new.phase, new.attempts, new.last_status_code) == (status, Phase.DONE, (attempt,), 200)
    assert new.completed_at is not None and new.is_terminal


def test_finish_refuses_a_request_that_is_not_running_and_a_status_that_is_not_final() -> None:
    with pytest.raises(IllegalTransition):
        lifecycle.finish(record(Phase.QUEUED), finished_attempt(), RequestStatus.COMPLETED)
    with pytest.raises(IllegalTransition):
        lifecycle.finish(running(), finished_attempt(), RequestStatus.IN_PROGRESS)


def test_schedule_retry_spends_a_retry_and_names_the_new_token() -> None:
    new = lifecycle.schedule_retry(running(), finished_attempt(), retry_number=1, due=99.0, token=2)
    assert (new.phase, new.retries_used, new.next_attempt_at, new.token) == (Phase.WAITING_RETRY, 1, 99.0, 2)
    assert (new.last_error, new.last_status_code, new.attempts[-1].finished_at) == ("HTTP 502", 502, 2.0)
    # The retry message could not be published: the current token stays (its message comes back).
    assert lifecycle.schedule_retry(running(3), finished_attempt(), retry_number=1, due=99.0, token=None).token == 3


def test_schedule_retry_refuses_a_request_that_is_not_running() -> None:
    with pytest.raises(IllegalTransition):
        lifecycle.schedule_retry(record(Phase.WAITING_RETRY), finished_attempt(), retry_number=1, due=1.0, token=2)


def test_offline_attempt_spends_no_retry() -> None:
    new = lifecycle.offline_attempt(running(), finished_attempt())
    assert (new.phase, new.retries_used, new.attempts[-1].counted, new.last_error) == (
        Phase.RUNNING, 0, False, "HTTP 502"
    )
    with pytest.raises(IllegalTransition):
        lifecycle.offline_attempt(record(Phase.QUEUED), finished_attempt())


def test_amend_after_cancel_keeps_the_status_and_records_the_real_outcome() -> None:
    cancelled = lifecycle.cancel(running())
    delivered = AttemptRecord(number=1, started_at=1.0, finished_at=2.0, outcome="cancelled", status_code=200)
    new = lifecycle.amend_after_cancel(cancelled, delivered)
    assert (new.status, new.last_status_code, new.attempts) == (RequestStatus.CANCELLED, 200, (delivered,))
    with pytest.raises(IllegalTransition):
        lifecycle.amend_after_cancel(running(), delivered)


@pytest.mark.parametrize("phase", UNFINISHED)
def test_fail_and_cancel_from_any_unfinished_phase(phase: Phase) -> None:
    failed = lifecycle.fail(record(phase), "unreadable")
    assert (failed.status, failed.phase, failed.last_error) == (RequestStatus.FAILED, Phase.DONE, "unreadable")
    cancelled = lifecycle.cancel(record(phase))
    assert (cancelled.status, cancelled.phase) == (RequestStatus.CANCELLED, Phase.DONE)
    assert cancelled.completed_at is not None


ALL_FROM_UNFINISHED: list[tuple[str, Callable[[StatusRecord], StatusRecord]]] = [
    ("mark_published", lambda r: lifecycle.mark_published(r, "g1")),
    ("republish", lambda r: lifecycle.republish(r, 2)),
    ("hold_for_network", lambda r: lifecycle.hold_for_network(r, 1)),
    ("defer", lambda r: lifecycle.defer(r, 2)),
    ("wait_for_network", lambda r: lifecycle.wait_for_network(r, 2)),
    ("mark_running", lambda r: lifecycle.mark_running(r, 2, AttemptRecord(number=1, started_at=1.0))),
    ("finish", lambda r: lifecycle.finish(r, finished_attempt(), RequestStatus.FAILED)),
    ("schedule_retry", lambda r: lifecycle.schedule_retry(r, finished_attempt(), retry_number=1, due=1.0, token=2)),
    ("offline_attempt", lambda r: lifecycle.offline_attempt(r, finished_attempt())),
    ("fail", lambda r: lifecycle.fail(r, "x")),
    ("cancel", lifecycle.cancel),
    ("mark_sent", lambda r: lifecycle.mark_sent(r, 1, 1.5)),
    ("close_interrupted", lambda r: lifecycle.close_interrupted(r, [finished_attempt()])),
]


def test_mark_sent_marks_the_running_attempt_once() -> None:
    sent = lifecycle.mark_sent(running(), 1, 1.5)
    assert sent.attempts[-1].sent_at == 1.5 and sent.phase is Phase.RUNNING
    assert lifecycle.mark_sent(sent, 1, 9.0).attempts[-1].sent_at == 1.5  # the first mark stays


@pytest.mark.parametrize("phase", [Phase.QUEUED, Phase.WAITING_RETRY, Phase.WAITING_NETWORK])
def test_mark_sent_refuses_a_request_that_is_not_running(phase: Phase) -> None:
    with pytest.raises(IllegalTransition, match="mark_sent"):
        lifecycle.mark_sent(record(phase), 1, 1.5)


def test_mark_sent_refuses_another_or_a_finished_attempt() -> None:
    with pytest.raises(IllegalTransition, match="not the one running"):
        lifecycle.mark_sent(running(), 2, 1.5)
    done = running().evolve(attempts=(finished_attempt(),))
    with pytest.raises(IllegalTransition, match="not the one running"):
        lifecycle.mark_sent(done, 1, 1.5)


@pytest.mark.parametrize("phase", UNFINISHED)
def test_close_interrupted_replaces_the_dead_attempts_and_is_running_again(phase: Phase) -> None:
    dead = AttemptRecord(number=1, started_at=1.0, sent_at=1.5)
    closed = AttemptRecord(number=1, started_at=1.0, sent_at=1.5, finished_at=3.0, outcome="interrupted")
    result = lifecycle.close_interrupted(record(phase, attempts=(dead,)), [closed])
    assert result.attempts == (closed,) and result.phase is Phase.RUNNING


@pytest.mark.parametrize("status", FINAL)
@pytest.mark.parametrize(("name", "transition"), ALL_FROM_UNFINISHED, ids=[name for name, _ in ALL_FROM_UNFINISHED])
def test_a_final_request_accepts_no_transition_but_the_amend(
    name: str, transition: Callable[[StatusRecord], StatusRecord], status: RequestStatus
) -> None:
    with pytest.raises(IllegalTransition, match=name):
        transition(record(status=status))


# ------------------------------------------------------------------ replay
@pytest.mark.parametrize("status", [RequestStatus.FAILED, RequestStatus.CANCELLED])
def test_replay_queues_a_failed_or_cancelled_request_with_a_fresh_budget_and_its_history(
    status: RequestStatus,
) -> None:
    ended = record(status=status, token=4, retries_used=3, completed_at=9.0, attempts=(finished_attempt(),))
    replayed = lifecycle.replay(ended)
    assert (replayed.status, replayed.phase) == (RequestStatus.IN_PROGRESS, Phase.QUEUED)
    assert replayed.token == 5 and not replayed.published  # the replay's message is still to be confirmed
    assert (replayed.retries_used, replayed.completed_at, replayed.next_attempt_at) == (0, None, None)
    assert replayed.attempts == ended.attempts and replayed.earlier_attempts == 1 and replayed.replays == 1
    assert replayed.run_attempts == ()
    assert lifecycle.is_unconfirmed(replayed)
    never_ran = lifecycle.replay(record(status=status))
    assert not lifecycle.is_untouched(never_ran)  # no submitter may take a replay back
    again = lifecycle.replay(lifecycle.fail(lifecycle.mark_published(replayed, "g1"), "x"))
    assert (again.replays, again.token) == (2, 6)


@pytest.mark.parametrize("phase", UNFINISHED)
def test_replay_refuses_a_request_in_progress(phase: Phase) -> None:
    with pytest.raises(IllegalTransition, match="only failed and cancelled"):
        lifecycle.replay(record(phase))


def test_replay_refuses_a_completed_request() -> None:
    with pytest.raises(IllegalTransition, match="completed/done"):
        lifecycle.replay(record(status=RequestStatus.COMPLETED))


def test_undo_replay_restores_the_end_as_long_as_the_replay_is_untouched() -> None:
    ended = record(status=RequestStatus.FAILED, token=4, retries_used=3, attempts=(finished_attempt(),))
    replayed = lifecycle.replay(ended)
    undone = lifecycle.undo_replay(replayed, ended, replayed.token)
    assert (undone.status, undone.retries_used, undone.attempts) == (RequestStatus.FAILED, 3, ended.attempts)
    assert undone.token == replayed.token  # tokens never go back: the unconfirmed message may exist
    confirmed = lifecycle.mark_published(replayed, "g1")
    started = lifecycle.mark_running(replayed, replayed.token, AttemptRecord(number=2, started_at=1.0))
    for moved_on in (confirmed, started, lifecycle.replay(undone)):
        with pytest.raises(IllegalTransition, match="moved on"):
            lifecycle.undo_replay(moved_on, ended, replayed.token)


def test_on_a_store_concurrent_replays_change_the_request_once(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    assert store.create_request(prepare_request("GET", "http://service.test/", request_id="r1").spec) is not None
    states = RequestLifecycle(store)
    states.fail("r1", "HTTP 500")
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def replay() -> None:
        barrier.wait()
        try:
            states.replay("r1")
            outcomes.append("replayed")
        except RetryRefused:
            outcomes.append("refused")

    threads = [threading.Thread(target=replay) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(outcomes) == ["refused"] * 7 + ["replayed"]
    current = store.read_status("r1")
    assert current is not None and current.replays == 1 and current.status is RequestStatus.IN_PROGRESS
    with pytest.raises(UnknownRequest):
        states.replay("missing")


# ------------------------------------------------------------- on a store
def test_on_a_store_a_refused_transition_leaves_the_record_as_it_is(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    created = store.create_request(prepare_request("GET", "http://service.test/", request_id="r1").spec)
    assert created is not None
    states = RequestLifecycle(store)
    assert states.hold_for_network("r1", 1).phase is Phase.WAITING_NETWORK
    assert states.hold_for_network("r1", 1).phase is Phase.WAITING_NETWORK  # refused: already held
    assert states.mark_published("r1", created.generation) and not states.mark_published("r1", "other")
    started = AttemptRecord(number=1, started_at=time.time())
    assert states.mark_running("r1", 2, started).phase is Phase.RUNNING
    assert states.cancel("r1").status is RequestStatus.CANCELLED
    assert states.cancel("r1").status is RequestStatus.CANCELLED  # again: unchanged, still cancelled
    delivered = AttemptRecord(number=1, started_at=started.started_at, finished_at=time.time(), status_code=200)
    after = states.record_attempt("r1", delivered, lambda r: lifecycle.finish(r, delivered, RequestStatus.COMPLETED))
    assert (after.status, after.last_status_code, after.attempts) == (RequestStatus.CANCELLED, 200, (delivered,))
    assert store.read_status("r1") == after
    with pytest.raises(UnknownRequest):
        states.cancel("missing")
    assert not states.mark_published("missing", "g")


# ------------------------------------------------------------------ replace
@pytest.mark.parametrize("status", FINAL)
def test_replace_takes_a_finished_request(status: RequestStatus) -> None:
    assert lifecycle.why_not_replace(record(status=status, attempts=(finished_attempt(),))) is None


def test_replace_takes_a_queued_request_this_run_never_attempted() -> None:
    assert lifecycle.why_not_replace(record()) is None
    replayed = record(attempts=(finished_attempt(),), earlier_attempts=1, replays=1)  # retry(): the old run ended
    assert lifecycle.why_not_replace(replayed) is None


@pytest.mark.parametrize("phase", UNFINISHED)
def test_replace_refuses_a_request_with_an_attempt_behind_or_running(phase: Phase) -> None:
    refusal = lifecycle.why_not_replace(record(phase, attempts=(finished_attempt(),)))
    assert refusal is not None and f"in_progress/{phase.value}" in refusal and "cancel it first" in refusal


def test_hand_over_publishes_the_next_token_before_the_record_names_it() -> None:
    steps: list[tuple[str, int]] = []
    current = record(Phase.WAITING_RETRY)

    def write(token: int) -> StatusRecord:
        steps.append(("write", token))
        return lifecycle.defer(current, token)

    new = lifecycle.hand_over(current, lambda token: steps.append(("publish", token)), write)
    assert steps == [("publish", current.token + 1), ("write", current.token + 1)] and new.token == current.token + 1

    def refused(token: int) -> None:
        raise OSError("broker down")

    steps.clear()
    with pytest.raises(OSError, match="broker down"):
        lifecycle.hand_over(current, refused, write)
    assert steps == []  # a message that was not published is never named by the record
