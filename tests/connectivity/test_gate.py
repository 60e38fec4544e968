"""The gate and the runner's offline rules as pure logic: a real store, fake interfaces, no broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import httpx
import pytest

from bghttp.broker import ACTOR_NAME
from bghttp.config import Settings
from bghttp.models import Phase, RequestStatus
from bghttp.store import FileStore
from bghttp.validation import prepare_request
from bghttp.worker.connectivity import ConnectivityMonitor, MonitorHolder
from bghttp.worker.gate import ConnectivityGate
from bghttp.worker.runner import RequestRunner
from tests.connectivity.test_monitor import DOWN, UP, FakeInterfaces
from tests.support import capture_logs, wait_until


class Gated:
    def __init__(self, tmp_path: Path, hold: float) -> None:
        self.interfaces = FakeInterfaces(eth0=DOWN)
        self.settings = Settings(
            store_dir=tmp_path / "store",
            fsync=False,
            network_interfaces=("eth0",),
            connectivity_interval=0.01,
            offline_after_failures=1,
            offline_hold_seconds=hold,
        )
        self.store = FileStore(self.settings.store_dir, fsync=False)
        self.holder = MonitorHolder(self.settings, lambda s: ConnectivityMonitor(s, read_interfaces=self.interfaces))
        self.gate = ConnectivityGate(self.settings, self.holder, self.store)

    def submit(self, request_id: str = "r1") -> None:
        prepared = prepare_request("GET", "http://service.test/x", request_id=request_id, retries=0)
        assert self.store.create_request(prepared.spec) is not None

    def phase(self, request_id: str = "r1") -> Phase:
        record = self.store.read_status(request_id)
        assert record is not None
        return record.phase

    def process_in_thread(self, request_id: str = "r1", token: int = 1) -> threading.Thread:
        message = dramatiq.Message(
            queue_name="q", actor_name=ACTOR_NAME, args=(request_id, token), kwargs={}, options={}
        )
        thread = threading.Thread(target=self.gate.before_process_message, args=(None, message), daemon=True)
        thread.start()
        return thread


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[Gated]:
    gated = Gated(tmp_path, hold=30.0)
    yield gated
    gated.holder.stop()


def test_held_while_offline_and_released_when_online(gated: Gated) -> None:
    gated.submit()
    with capture_logs() as logs:
        thread = gated.process_in_thread()
        wait_until(lambda: gated.phase() is Phase.WAITING_NETWORK)
        time.sleep(0.2)
        assert thread.is_alive()  # still held: the actor has not been called
        gated.interfaces.interfaces["eth0"] = UP
        thread.join(10)
        assert not thread.is_alive()
    released = next(entry for entry in logs if entry["event"] == "request_released")
    assert released["online"] is True
    online = next(entry for entry in logs if entry["event"] == "network_online")
    assert online["held_requests"] == 1


def test_the_hold_is_bounded(tmp_path: Path) -> None:
    gated = Gated(tmp_path, hold=0.2)
    try:
        gated.submit()
        with capture_logs() as logs:
            gated.process_in_thread().join(10)
        released = next(entry for entry in logs if entry["event"] == "request_released")
        assert released["online"] is False
        assert gated.phase() is Phase.WAITING_NETWORK  # the runner re-publishes it from here
    finally:
        gated.holder.stop()


def test_shutdown_lets_held_messages_go(gated: Gated) -> None:
    gated.submit()
    thread = gated.process_in_thread()
    wait_until(lambda: gated.phase() is Phase.WAITING_NETWORK)
    gated.gate.before_worker_shutdown(None, None)  # type: ignore[arg-type]
    thread.join(10)
    assert not thread.is_alive()


def test_online_messages_pass_untouched(gated: Gated) -> None:
    gated.interfaces.interfaces["eth0"] = UP
    gated.submit()
    gated.holder.get().poll()
    gated.process_in_thread().join(10)
    assert gated.phase() is Phase.QUEUED


def test_stale_finished_or_unknown_messages_are_not_held(gated: Gated) -> None:
    gated.submit("stale")
    gated.store.update_status("stale", lambda r: r.evolve(token=3))
    gated.submit("done")
    gated.store.update_status("done", lambda r: r.evolve(status=RequestStatus.COMPLETED, phase=Phase.DONE))
    threads = [gated.process_in_thread("stale", token=2), gated.process_in_thread("done"),
               gated.process_in_thread("no-such-request")]
    for thread in threads:
        thread.join(10)  # the hold is 30 s: these were let through at once
        assert not thread.is_alive()
    assert gated.phase("stale") is Phase.QUEUED


def test_a_running_request_is_held_but_not_marked(gated: Gated) -> None:
    # A redelivery after a worker died mid-attempt: it must wait for the network too.
    gated.submit("running")
    gated.store.update_status("running", lambda r: r.evolve(phase=Phase.RUNNING))
    thread = gated.process_in_thread("running")
    time.sleep(0.3)
    assert thread.is_alive()
    assert gated.phase("running") is Phase.RUNNING
    gated.interfaces.interfaces["eth0"] = UP
    thread.join(10)
    assert not thread.is_alive()


# ------------------------------------------------------------- the runner
class FakeConnectivity:
    def __init__(self, online: bool) -> None:
        self.online = online
        self.checks = 0

    def is_online(self) -> bool:
        return self.online

    def check_now(self) -> bool:
        self.checks += 1
        return self.online


class Published(list[tuple[str, int, float | None]]):
    def __call__(self, request_id: str, token: int, delay: float | None, **options: object) -> None:
        self.append((request_id, token, delay))


def make_runner(
    tmp_path: Path, handler: httpx.MockTransport, connectivity: FakeConnectivity, retries: int = 0
) -> tuple[RequestRunner, Published]:
    store = FileStore(tmp_path / "store", fsync=False)
    published = Published()
    settings = Settings(store_dir=store.root, connectivity_interval=7.0, fsync=False)
    runner = RequestRunner(store, settings, httpx.Client(transport=handler), published, connectivity=connectivity)
    prepared = prepare_request("GET", "http://service.test/x", request_id="r1", retries=retries)
    assert store.create_request(prepared.spec) is not None
    return runner, published


def test_offline_before_the_attempt_sends_nothing(tmp_path: Path) -> None:
    sent: list[httpx.Request] = []
    runner, published = make_runner(
        tmp_path, httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200)), FakeConnectivity(False)
    )
    runner.run("r1", 1)
    record = runner.store.read_status("r1")
    assert record is not None
    assert sent == []
    assert published == [("r1", 2, 7.0)]  # re-checked after BGHTTP_CONNECTIVITY_INTERVAL
    assert (record.phase, record.token, record.retries_used, record.attempt_count) == (Phase.WAITING_NETWORK, 2, 0, 0)


@pytest.mark.parametrize("error", [httpx.ConnectError("unreachable"), httpx.ConnectTimeout("no answer")])
def test_outage_errors_do_not_spend_a_retry(tmp_path: Path, error: Exception) -> None:
    network = FakeConnectivity(True)  # the monitor has not noticed yet

    def handler(request: httpx.Request) -> httpx.Response:
        if not network.online:
            raise error
        return httpx.Response(200, text="ok")

    runner, published = make_runner(tmp_path, httpx.MockTransport(handler), network, retries=0)
    network.online = False
    network.is_online = lambda: True  # type: ignore[method-assign]  # only check_now knows
    runner.run("r1", 1)
    record = runner.store.read_status("r1")
    assert record is not None
    assert network.checks == 1
    assert (record.status, record.phase, record.retries_used) == (RequestStatus.IN_PROGRESS, Phase.WAITING_NETWORK, 0)
    assert [a.counted for a in record.attempts] == [False]
    assert published == [("r1", 2, 7.0)]
    network.online = True
    runner.run("r1", 2)
    record = runner.store.read_status("r1")
    assert record is not None
    assert (record.status, record.retries_used) == (RequestStatus.COMPLETED, 0)
    assert [a.counted for a in record.attempts] == [False, True]


def test_network_errors_while_online_follow_the_retry_rules(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    network = FakeConnectivity(True)
    runner, published = make_runner(tmp_path, httpx.MockTransport(refuse), network, retries=0)
    runner.run("r1", 1)
    record = runner.store.read_status("r1")
    assert record is not None
    assert network.checks == 1
    assert record.status is RequestStatus.FAILED and published == []


def test_an_early_message_keeps_the_due_time_whatever_the_phase(tmp_path: Path) -> None:
    runner, published = make_runner(
        tmp_path, httpx.MockTransport(lambda r: httpx.Response(200)), FakeConnectivity(True)
    )
    due = time.time() + 100
    # A retry not yet due that the gate marked waiting_network while it held the message.
    runner.store.update_status("r1", lambda r: r.evolve(phase=Phase.WAITING_NETWORK, next_attempt_at=due))
    runner.run("r1", 1)
    record = runner.store.read_status("r1")
    assert record is not None
    assert record.next_attempt_at == due and record.attempt_count == 0
    assert len(published) == 1 and published[0][2] is not None and published[0][2] > 90


def test_the_worker_shares_one_monitor_between_gate_and_runner(tmp_path: Path) -> None:
    from dramatiq.middleware import CurrentMessage, Retries, ShutdownNotifications

    from bghttp.broker import create_broker
    from bghttp.worker.actor import RunnerHolder, worker_middleware

    settings = Settings(broker_url="local", store_dir=tmp_path / "store", fsync=False, connectivity_interval=60)
    broker = create_broker(settings, worker_middleware(settings))
    order = [type(m) for m in broker.middleware]
    wanted = [ShutdownNotifications, CurrentMessage, ConnectivityGate, Retries]
    assert [t for t in order if t in wanted] == wanted
    gate = next(m for m in broker.middleware if isinstance(m, ConnectivityGate))
    try:
        assert RunnerHolder(settings, broker).get().connectivity is gate.connectivity.get()
    finally:
        gate.connectivity.stop()
