"""The places of a worker process: per host and in all, waiting without a place, handing back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bghttp.config import Settings
from bghttp.models import RequestStatus
from bghttp.store import FileStore
from bghttp.validation import prepare_request
from bghttp.worker import in_flight
from bghttp.worker.in_flight import InFlightLimits, WorkerSlots, host_key
from bghttp.worker.runner import RequestRunner

SLOW, FAST = "http://slow.test/x", "https://fast.test:8443/y"


class Holder:
    """A thread that takes a place and keeps it until ``let_go()``."""

    def __init__(self, limits: InFlightLimits, url: str, wait: float = 0.0) -> None:
        self.got: bool | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(limits, url, wait), daemon=True)
        self._decided = threading.Event()
        self._thread.start()

    def _run(self, limits: InFlightLimits, url: str, wait: float) -> None:
        self.got = limits.acquire(url, wait=wait)
        self._decided.set()
        self._done.wait(10)
        limits.release()

    def decided(self, timeout: float = 5.0) -> bool | None:
        self._decided.wait(timeout)
        return self.got

    def let_go(self) -> None:
        self._done.set()
        self._thread.join(5)


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.let_go()


def hold(holders: list[Holder], limits: InFlightLimits, url: str, wait: float = 0.0) -> Holder:
    holder = Holder(limits, url, wait)
    holders.append(holder)
    return holder


def test_host_key_names_scheme_host_and_port() -> None:
    assert host_key("http://Slow.test/x") == ("http", "slow.test", 80)
    assert host_key("https://fast.test/y") == ("https", "fast.test", 443)
    assert host_key("https://fast.test:8443/y") == ("https", "fast.test", 8443)
    assert host_key("http://[::1") == ("", "", 0)  # unparsable: one shared key, the attempt says what is wrong


def test_a_host_at_its_cap_does_not_stop_other_hosts(holders: list[Holder]) -> None:
    limits = InFlightLimits(max_in_flight=10, max_per_host=2, max_waiting=0)
    assert hold(holders, limits, SLOW).decided() and hold(holders, limits, SLOW).decided()
    assert hold(holders, limits, SLOW).decided() is False  # a third to the slow host: no place
    assert hold(holders, limits, FAST).decided() is True
    assert limits.in_flight(SLOW) == 2 and limits.in_flight() == 3


def test_the_total_is_capped_too(holders: list[Holder]) -> None:
    limits = InFlightLimits(max_in_flight=2, max_per_host=5, max_waiting=0)
    assert hold(holders, limits, SLOW).decided() and hold(holders, limits, FAST).decided()
    assert hold(holders, limits, "http://third.test/").decided() is False


def test_a_waiter_gets_the_place_an_attempt_gives_back(holders: list[Holder]) -> None:
    limits = InFlightLimits(max_in_flight=10, max_per_host=1, max_waiting=4)
    first = hold(holders, limits, SLOW)
    assert first.decided()
    waiter = hold(holders, limits, SLOW, wait=10)
    assert waiter.decided(timeout=0.3) is None  # still waiting
    assert limits.waiting() == 1
    first.let_go()
    assert waiter.decided() is True
    assert limits.in_flight(SLOW) == 1 and limits.waiting() == 0


def test_waiters_are_served_first_come_first_served_and_only_as_many_wait_as_allowed(
    holders: list[Holder],
) -> None:
    limits = InFlightLimits(max_in_flight=10, max_per_host=1, max_waiting=2)
    running = hold(holders, limits, SLOW)
    assert running.decided()
    early = hold(holders, limits, SLOW, wait=10)
    assert early.decided(timeout=0.2) is None
    late = hold(holders, limits, SLOW, wait=10)
    assert late.decided(timeout=0.2) is None
    assert hold(holders, limits, SLOW, wait=10).decided() is False  # no waiting thread left: handed back at once
    running.let_go()
    assert early.decided() is True and late.decided(timeout=0.3) is None


def test_a_wait_ends_after_its_time_and_at_shutdown(holders: list[Holder]) -> None:
    limits = InFlightLimits(max_in_flight=10, max_per_host=1, max_waiting=4)
    assert hold(holders, limits, SLOW).decided()
    assert hold(holders, limits, SLOW, wait=0.3).decided() is False
    waiter = hold(holders, limits, SLOW, wait=30)
    assert waiter.decided(timeout=0.2) is None
    limits.stop_waiting()
    assert waiter.decided(timeout=2) is False
    assert limits.waiting() == 0


def test_release_is_idempotent_and_a_thread_holds_one_place() -> None:
    limits = InFlightLimits(max_in_flight=10, max_per_host=5)
    assert limits.acquire(SLOW) and limits.acquire(SLOW)  # the second replaces the first
    assert limits.in_flight() == 1
    limits.release()
    limits.release()
    assert limits.in_flight() == 0


def test_the_hand_back_delay_follows_the_hosts_attempt_time(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = InFlightLimits(max_in_flight=10, max_per_host=5)
    assert in_flight.MIN_DEFER_SECONDS <= limits.defer_delay(SLOW) <= 1.5  # unknown host: about a second
    clock = [100.0]
    monkeypatch.setattr(in_flight.time, "monotonic", lambda: clock[0])
    assert limits.acquire(SLOW)
    clock[0] += 60.0  # a very slow attempt
    limits.release()
    assert limits.defer_delay(SLOW) == in_flight.MAX_DEFER_SECONDS


def test_worker_slots_size_the_dramatiq_worker(tmp_path: Path) -> None:
    class FakeWorker:
        worker_threads, queue_prefetch = 8, 16

    worker = FakeWorker()
    slots = WorkerSlots(Settings(store_dir=tmp_path, max_in_flight=40, max_in_flight_per_host=10))
    slots.before_worker_boot(None, worker)  # type: ignore[arg-type]
    assert worker.worker_threads == 40 + 20  # the attempts, and the threads kept for waiting
    assert worker.queue_prefetch == 75
    assert slots.limits.max_per_host == 10


def test_a_message_for_a_busy_host_is_handed_back_as_a_new_run_spending_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    published: list[tuple[str, int, float | None]] = []
    sent: list[httpx.Request] = []
    limits = InFlightLimits(max_in_flight=10, max_per_host=1, max_waiting=0)
    runner = RequestRunner(
        store,
        Settings(store_dir=store.root),
        httpx.Client(transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200))),
        lambda *message, **options: published.append(message),
        in_flight=limits,
    )
    prepared = prepare_request("GET", SLOW, request_id="r1")
    assert store.create_request(prepared.spec) is not None
    before = store.read_status("r1")
    other = threading.Thread(target=lambda: limits.acquire(SLOW))  # another attempt holds the host's one place
    other.start()
    other.join()

    runner.run("r1", 1)

    assert sent == []
    assert len(published) == 1 and published[0][:2] == ("r1", 2)  # the next run, as for an early message
    assert published[0][2] is not None and published[0][2] >= in_flight.MIN_DEFER_SECONDS
    after = store.read_status("r1")
    assert before is not None and after is not None
    assert after == before.evolve(token=2, updated_at=after.updated_at)  # no attempt, no retry: only the token moved
    assert limits.in_flight() == 1  # the runner took no place

    fast = prepare_request("GET", FAST, request_id="r2")  # another host runs meanwhile
    assert store.create_request(fast.spec) is not None
    runner.run("r2", 1)
    record = store.read_status("r2")
    assert record is not None and record.status is RequestStatus.COMPLETED and len(sent) == 1
    assert limits.in_flight() == 1  # r2's place was given back
