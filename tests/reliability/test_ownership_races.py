"""More interleavings of cancel, remove, submit, run, recover and gc on one ID.

Each test forces one interleaving (or hammers one with real threads) and checks
that no write lands in a request that is not its writer's, and that a request
somebody was told about stays whole.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import dramatiq
import httpx
from dramatiq.brokers.stub import StubBroker

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.config import Settings as RunnerSettings
from bghttp.models import Phase, StatusRecord
from bghttp.recovery import recover_pending
from bghttp.store import FileStore
from bghttp.validation import prepare_request
from bghttp.worker.runner import RequestRunner

URL = "http://127.0.0.1:9/never-sent"


def _client(store_dir: Path, on_conflict: str = "return") -> BackgroundHttpClient:
    settings = Settings(broker_url="amqp://unused/", store_dir=store_dir, fsync=False, queue_name="own")
    return BackgroundHttpClient(settings, broker=StubBroker(), on_conflict=on_conflict)  # type: ignore[arg-type]


def _queued_ids(client: BackgroundHttpClient) -> list[str]:
    broker = client.broker
    assert isinstance(broker, StubBroker)
    queue = broker.queues[client.settings.queue_name]
    return [str(dramatiq.Message.decode(body).args[0]) for body in list(queue.queue)]


def _store_unpublished(store: FileStore, request_id: str) -> StatusRecord:
    """What a first submitter leaves when it dies (or still waits) before its broker confirmed."""
    record = store.create_request(prepare_request("GET", URL, request_id=request_id).spec)
    assert record is not None and not record.published
    return record


def test_a_second_submit_publishes_an_unconfirmed_request_single_and_bulk(tmp_path: Path) -> None:
    with _client(tmp_path / "store") as client:
        _store_unpublished(client.store, "single")
        _store_unpublished(client.store, "bulk")

        client.get(URL, request_id="single")
        client.submit_many([{"method": "GET", "url": URL, "request_id": "bulk"}])

        for request_id in ("single", "bulk"):
            record = client.get_request_status(request_id)
            assert record is not None and record.published, request_id
        assert sorted(_queued_ids(client)) == ["bulk", "single"]

        client.get(URL, request_id="single")  # confirmed now: returned as it is, nothing published
        assert sorted(_queued_ids(client)) == ["bulk", "single"]


def test_gc_that_listed_an_old_request_does_not_remove_its_replacement(tmp_path: Path) -> None:
    with _client(tmp_path / "store", on_conflict="replace") as client:
        client.get(URL, request_id="x")
        client.cancel("x")
        listed = client.get_request_status("x")  # gc lists it: finished
        assert listed is not None and listed.is_terminal

        client.get(URL, request_id="x", headers={"X-Version": "2"})  # replaced before gc removes it

        def finished(record: StatusRecord | None) -> bool:
            return record is not None and record.is_terminal

        assert client.store.delete("x", only_if=finished) is False
        record = client.get_request_status("x")
        assert record is not None and record.status is RequestStatus.IN_PROGRESS


def test_recover_skips_a_request_whose_attempt_holds_the_claim(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    _store_unpublished(store, "busy")
    published: list[tuple[str, int]] = []
    with store.claim("busy") as claimed:
        assert claimed
        count = recover_pending(store, lambda request_id, token, delay: published.append((request_id, token)))
    assert (count, published) == (0, [])
    assert recover_pending(store, lambda request_id, token, delay: published.append((request_id, token))) == 1
    record = store.read_status("busy")
    assert published == [("busy", 2)] and record is not None and record.token == 2 and record.published


def test_a_runner_holding_the_spec_of_a_removed_request_runs_nothing(tmp_path: Path) -> None:
    """The window between a runner reading the spec and taking the claim: remove, then a new submit."""
    sent: list[str] = []
    transport = httpx.MockTransport(lambda request: sent.append(str(request.url)) or httpx.Response(200))
    store = FileStore(tmp_path / "store", fsync=False)
    runner = RequestRunner(
        store, RunnerSettings(store_dir=store.root), httpx.Client(transport=transport), lambda *args: None
    )
    assert store.create_request(prepare_request("GET", "http://old.test/", request_id="r").spec) is not None
    old_spec = store.load_request("r")
    store.delete("r")
    assert store.create_request(prepare_request("GET", "http://new.test/", request_id="r").spec) is not None

    real_load = store.load_request
    store.load_request = lambda request_id: old_spec  # type: ignore[method-assign]
    runner.run("r", 1)
    store.load_request = real_load  # type: ignore[method-assign]

    assert sent == []
    record = store.read_status("r")
    assert record is not None and record.phase is Phase.QUEUED and record.attempts == ()
    runner.run("r", 1)  # the new request's own message runs the new request
    assert sent == ["http://new.test/"]


def test_cancel_racing_the_final_status_write_leaves_one_answer(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store", fsync=False)
    rounds = 300
    for index in range(rounds):
        _store_unpublished(store, f"c{index}")
    answers: dict[str, dict[str, RequestStatus]] = {}
    barrier = threading.Barrier(2)

    def finish(request_id: str) -> StatusRecord:
        return store.update_status(
            request_id, lambda r: r.evolve(status=RequestStatus.COMPLETED, phase=Phase.DONE, completed_at=time.time())
        )

    def cancel(request_id: str) -> StatusRecord:
        return store.update_status(
            request_id, lambda r: r.evolve(status=RequestStatus.CANCELLED, phase=Phase.DONE, completed_at=time.time())
        )

    def hammer(name: str, change: Callable[[str], StatusRecord]) -> None:
        for index in range(rounds):
            barrier.wait()
            answers.setdefault(f"c{index}", {})[name] = change(f"c{index}").status

    writers: dict[str, Callable[[str], StatusRecord]] = {"finish": finish, "cancel": cancel}
    threads = [threading.Thread(target=hammer, args=item) for item in writers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for index in range(rounds):
        final = store.read_status(f"c{index}")
        assert final is not None and final.is_terminal
        # Both writers were told the one final status that the record keeps.
        assert set(answers[f"c{index}"].values()) == {final.status}
