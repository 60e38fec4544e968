"""The one submit path: ``on_conflict`` for single and bulk submits, async ``submit_many``, ``gc`` and ``recover``.

A StubBroker stands in for RabbitMQ: what a submit published is the queue's content.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from bghttp import (
    AsyncBackgroundHttpClient,
    BackgroundHttpClient,
    BulkRequest,
    InvalidArgument,
    RequestExists,
    RequestStatus,
    Settings,
)
from bghttp.lifecycle import parse_message_args
from bghttp.models import Phase

QUEUE = "unit"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(store_dir=tmp_path / "store", queue_name=QUEUE, fsync=False)


@pytest.fixture
def broker() -> StubBroker:
    return StubBroker()


def published(broker: StubBroker) -> list[tuple[str, int]]:
    """(request ID, token) of every message on the queue, in order."""
    queue = broker.queues.get(QUEUE)
    if queue is None:
        return []
    messages = [dramatiq.Message.decode(body) for body in list(queue.queue)]
    return [args for args in (parse_message_args(message.args) for message in messages) if args is not None]


def make_client(settings: Settings, broker: StubBroker, on_conflict: str) -> BackgroundHttpClient:
    return BackgroundHttpClient(settings, broker=broker, on_conflict=on_conflict)  # type: ignore[arg-type]


@pytest.fixture
def clients(settings: Settings, broker: StubBroker) -> Iterator[dict[str, BackgroundHttpClient]]:
    made = {policy: make_client(settings, broker, policy) for policy in ("return", "reject", "replace")}
    yield made
    for client in made.values():
        client.close()


def test_return_gives_the_existing_request_and_publishes_nothing_more(
    clients: dict[str, BackgroundHttpClient], broker: StubBroker
) -> None:
    first = clients["return"].post("http://service.test/a", data=b"first", request_id="x")
    again = clients["return"].post("http://service.test/b", data=b"second", request_id="x")
    assert again == first
    assert published(broker) == [("x", 1)]
    assert clients["return"].store.load_request("x").url == "http://service.test/a"  # type: ignore[union-attr]


def test_reject_raises_and_leaves_the_existing_request_alone(
    clients: dict[str, BackgroundHttpClient], broker: StubBroker
) -> None:
    clients["return"].post("http://service.test/a", request_id="x")
    with pytest.raises(RequestExists, match="'x' exists already"):
        clients["reject"].post("http://service.test/b", request_id="x")
    with pytest.raises(RequestExists, match="'x' exists already"):
        clients["reject"].submit_many([BulkRequest("POST", "http://service.test/b", request_id="x")])
    spec = clients["reject"].store.load_request("x")
    assert spec is not None and spec.url == "http://service.test/a"
    assert published(broker) == [("x", 1)]


def test_replace_removes_the_old_request_and_stores_a_new_generation(
    clients: dict[str, BackgroundHttpClient], broker: StubBroker
) -> None:
    clients["return"].post("http://service.test/a", request_id="x")
    old = clients["return"].get_request_status("x")
    clients["replace"].post("http://service.test/b", request_id="x")
    new = clients["replace"].get_request_status("x")
    assert old is not None and new is not None and new.generation != old.generation
    spec = clients["replace"].store.load_request("x")
    assert spec is not None and spec.url == "http://service.test/b"
    # Bulk goes through the same path: replaced again.
    clients["replace"].submit_many([{"method": "PUT", "url": "http://service.test/c", "request_id": "x"}])
    spec = clients["replace"].store.load_request("x")
    assert spec is not None and (spec.method, spec.url) == ("PUT", "http://service.test/c")
    assert [request_id for request_id, _ in published(broker)] == ["x", "x", "x"]


def test_replace_refuses_a_running_request(clients: dict[str, BackgroundHttpClient]) -> None:
    clients["return"].post("http://service.test/a", request_id="x")
    store = clients["return"].store
    with store.claim("x") as claimed:  # as a worker running it does
        assert claimed
        with pytest.raises(RequestExists, match="running"):
            clients["replace"].post("http://service.test/b", request_id="x")
    spec = store.load_request("x")
    assert spec is not None and spec.url == "http://service.test/a"


def test_a_bad_on_conflict_is_refused(settings: Settings, broker: StubBroker) -> None:
    with pytest.raises(InvalidArgument, match="on_conflict"):
        make_client(settings, broker, "overwrite")


def test_async_submit_many_stores_and_publishes_every_request(settings: Settings, broker: StubBroker) -> None:
    async def scenario() -> list[str]:
        async with AsyncBackgroundHttpClient(settings, broker=broker) as client:
            infos = await client.submit_many(
                [BulkRequest("GET", "http://service.test/1", request_id="a1"),
                 {"method": "POST", "url": "http://service.test/2", "data": {"n": 2}, "request_id": "a2"}]
            )
            records = [await client.get_request_status(info.request_id) for info in infos]
            assert all(r is not None and r.status is RequestStatus.IN_PROGRESS and r.published for r in records)
            return [info.request_id for info in infos]

    assert asyncio.run(scenario()) == ["a1", "a2"]
    assert sorted(published(broker)) == [("a1", 1), ("a2", 1)]


def test_gc_removes_only_requests_finished_before_the_cutoff(
    clients: dict[str, BackgroundHttpClient], settings: Settings, broker: StubBroker
) -> None:
    client = clients["return"]
    for request_id in ("old", "recent", "pending"):
        client.get("http://service.test/", request_id=request_id)
    client.cancel("old")
    client.cancel("recent")
    long_ago = time.time() - 3600
    client.store.update_status("old", lambda r: r.evolve(completed_at=long_ago), amend_terminal=True)

    assert client.gc(600, dry_run=True) == ["old"]
    assert client.get_request_status("old") is not None  # a dry run removes nothing
    assert client.gc(600) == ["old"]
    assert client.get_request_status("old") is None
    assert {r.request_id for r in client.list()} == {"recent", "pending"}
    with pytest.raises(InvalidArgument, match="older_than"):
        client.gc(-1)

    async def async_gc() -> list[str]:
        async with AsyncBackgroundHttpClient(client=make_client(settings, broker, "return")) as aclient:
            return await aclient.gc(0)

    assert sorted(asyncio.run(async_gc())) == ["recent"]


def test_recover_publishes_a_newer_token_for_every_unfinished_request(
    clients: dict[str, BackgroundHttpClient], settings: Settings, broker: StubBroker
) -> None:
    client = clients["return"]
    client.get("http://service.test/", request_id="lost")
    client.get("http://service.test/", request_id="done")
    client.cancel("done")
    broker.flush_all()  # the queue was purged: the message of "lost" is gone

    assert client.recover() == 1
    assert published(broker) == [("lost", 2)]
    record = client.get_request_status("lost")
    assert record is not None and record.token == 2 and record.phase is Phase.QUEUED

    async def async_recover() -> int:
        async with AsyncBackgroundHttpClient(client=make_client(settings, broker, "return")) as aclient:
            return await aclient.recover()

    assert asyncio.run(async_recover()) == 1  # safe to repeat: the older message is stale now
    assert published(broker) == [("lost", 2), ("lost", 3)]
