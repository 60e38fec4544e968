"""The one submit path: ``on_conflict`` for single and bulk submits, async ``submit_many``, ``gc`` and ``recover``.

A StubBroker stands in for RabbitMQ: what a submit published is the queue's content.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from bghttp.models import AttemptRecord, Phase, StatusRecord

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


def test_an_identical_resubmit_returns_the_same_request_and_publishes_nothing_more(
    clients: dict[str, BackgroundHttpClient], broker: StubBroker, tmp_path: Path
) -> None:
    upload = tmp_path / "report.csv"
    upload.write_bytes(b"a,b\n1,2\n")
    options: dict[str, Any] = {"data": {"n": 1}, "headers": {"X-Trace": "1"}, "retries": 2, "metadata": {"o": "7"}}
    for policy in ("return", "replace"):  # replace asks for a different request; this one is the same
        client = clients[policy]
        first = client.post("http://service.test/a", request_id="x", **options)
        assert client.post("http://service.test/a", request_id="x", **options) == first
        [again] = client.submit_many([BulkRequest("POST", "http://service.test/a", request_id="x", **options)])
        assert again == first
        files = {"doc": str(upload)}
        form = client.post_multipart("http://service.test/f", fields={"a": "1"}, files=files, request_id="f")
        assert client.post_multipart("http://service.test/f", fields={"a": "1"}, files=files, request_id="f") == form
    assert published(broker) == [("x", 1), ("f", 1)]


def test_an_identical_resubmit_of_a_finished_request_returns_it_and_sends_nothing(
    clients: dict[str, BackgroundHttpClient], broker: StubBroker
) -> None:
    client = clients["replace"]
    client.get("http://service.test/a", request_id="x")
    client.cancel("x")
    info = client.get("http://service.test/a", request_id="x")
    assert info.status is RequestStatus.CANCELLED
    assert published(broker) == [("x", 1)]


DIFFERENT = [
    ({"method": "PUT"}, "method"),
    ({"url": "http://service.test/b"}, "URL"),
    ({"headers": {"X-Trace": "2"}}, "headers"),
    ({"data": {"n": 2}}, "body"),
    ({"data": None}, "body"),
    ({"timeout": 9.0}, "timeout"),
    ({"retries": 3}, "retries"),
    ({"metadata": {"o": "8"}}, "metadata"),
    ({"on_complete": {"queue": "q", "actor": "a"}}, "on_complete"),
]


@pytest.mark.parametrize(("change", "named"), DIFFERENT)
def test_a_different_request_under_an_existing_id_raises_request_exists_and_is_not_stored(
    clients: dict[str, BackgroundHttpClient], broker: StubBroker, change: dict[str, Any], named: str
) -> None:
    original: dict[str, Any] = {
        "method": "POST", "url": "http://service.test/a", "data": {"n": 1}, "headers": {"X-Trace": "1"},
        "timeout": 5.0, "retries": 2, "metadata": {"o": "7"}, "request_id": "x",
    }
    client = clients["return"]
    first = client.request(**original)
    different = {**original, **change}
    with pytest.raises(RequestExists, match=rf"'x' exists with a different request \(.*{named}") as raised:
        client.request(**different)
    assert raised.value.differences and named in raised.value.differences
    # Bulk: all or nothing, the new item beside it is not kept either.
    with pytest.raises(RequestExists, match="'x' exists with a different request"):
        client.submit_many([BulkRequest("GET", "http://service.test/new", request_id="new"), different])
    assert client.get_request_status("new") is None
    spec = client.store.load_request("x")
    assert spec is not None and spec.generation == client.get_request_status("x").generation  # type: ignore[union-attr]
    assert client.request(**original) == first
    assert published(broker) == [("x", 1)]


def test_a_different_multipart_file_is_a_different_request(
    clients: dict[str, BackgroundHttpClient], tmp_path: Path
) -> None:
    upload = tmp_path / "report.csv"
    upload.write_bytes(b"a,b\n1,2\n")
    client = clients["return"]
    client.post_multipart("http://service.test/f", files={"doc": str(upload)}, request_id="f")
    upload.write_bytes(b"a,b\n1,3\n")  # same name and size, other bytes
    with pytest.raises(RequestExists, match="files"):
        client.post_multipart("http://service.test/f", files={"doc": str(upload)}, request_id="f")
    with pytest.raises(RequestExists, match="fields"):
        client.post_multipart("http://service.test/f", fields={"a": "1"}, files={"doc": str(upload)}, request_id="f")


def test_the_async_client_resubmits_identically_and_refuses_a_different_request(
    settings: Settings, broker: StubBroker
) -> None:
    async def scenario() -> None:
        async with AsyncBackgroundHttpClient(settings, broker=broker) as client:
            first = await client.post("http://service.test/a", data=b"one", request_id="x")
            assert await client.post("http://service.test/a", data=b"one", request_id="x") == first
            with pytest.raises(RequestExists, match="body"):
                await client.post("http://service.test/a", data=b"two", request_id="x")
            with pytest.raises(RequestExists, match="URL"):
                await client.submit_many([{"method": "POST", "url": "http://service.test/b", "request_id": "x"}])

    asyncio.run(scenario())
    assert published(broker) == [("x", 1)]


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


def _attempted(record: StatusRecord) -> StatusRecord:
    return record.evolve(attempts=(AttemptRecord(number=1, started_at=1.0, finished_at=2.0, outcome="http_error"),))


#: How the existing request is left before the replace, and whether a different request may replace it.
REPLACEABLE = {
    "completed": (lambda r: _attempted(r).evolve(status=RequestStatus.COMPLETED, phase=Phase.DONE), True),
    "failed": (lambda r: _attempted(r).evolve(status=RequestStatus.FAILED, phase=Phase.DONE), True),
    "cancelled": (lambda r: r.evolve(status=RequestStatus.CANCELLED, phase=Phase.DONE), True),
    "queued, never attempted": (lambda r: r, True),
    "waiting_retry": (
        lambda r: _attempted(r).evolve(phase=Phase.WAITING_RETRY, next_attempt_at=time.time() + 60), False
    ),
    "waiting_network": (lambda r: _attempted(r).evolve(phase=Phase.WAITING_NETWORK), False),
    "queued after an attempt": (lambda r: _attempted(r), False),
    "running": (lambda r: _attempted(r).evolve(phase=Phase.RUNNING), False),
}


@pytest.mark.parametrize("state", sorted(REPLACEABLE))
def test_replace_takes_a_finished_or_untried_request_and_refuses_one_with_an_outcome_to_come(
    clients: dict[str, BackgroundHttpClient], broker: StubBroker, state: str
) -> None:
    leave, replaceable = REPLACEABLE[state]
    clients["return"].post("http://service.test/a", request_id="x")
    store = clients["return"].store
    store.update_status("x", leave, amend_terminal=True)
    if replaceable:
        info = clients["replace"].post("http://service.test/b", request_id="x")
        assert info.status is RequestStatus.IN_PROGRESS
        assert published(broker)[-1] == ("x", 1)  # a new generation, from its first token
    else:
        with pytest.raises(RequestExists, match="cancel it first"):
            clients["replace"].post("http://service.test/b", request_id="x")
        with pytest.raises(RequestExists, match="cancel it first"):
            clients["replace"].submit_many([BulkRequest("POST", "http://service.test/b", request_id="x")])
    spec = store.load_request("x")
    assert spec is not None and spec.url == ("http://service.test/b" if replaceable else "http://service.test/a")


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


def test_the_intake_refuses_with_the_same_comparison_and_words_as_the_client(
    clients: dict[str, BackgroundHttpClient], settings: Settings, broker: StubBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A message and a client call of the same two requests get the same answer, from one comparison."""
    from bghttp.worker.intake import Intake

    intake = Intake(settings, broker)
    charge = {"method": "POST", "url": "http://service.test/charge", "json": {"n": 5}, "request_id": "order-7"}
    refund = {**charge, "url": "http://service.test/refund"}
    with caplog.at_level(logging.INFO, logger="bghttp"):
        intake.take((charge,), {}, "charge-msg")
        intake.take((charge,), {}, "charge-again")  # the same request: one
        intake.take((refund,), {}, "refund-msg")
    events = [getattr(record, "bghttp_event", {}) for record in caplog.records]
    rejected = [event for event in events if event.get("event") == "submit_rejected"]
    assert [entry["rejected_request_id"] for entry in rejected] == ["order-7"]
    assert published(broker) == [("order-7", 1)]

    client = clients["return"]
    assert client.post("http://service.test/charge", data={"n": 5}, request_id="order-7").request_id == "order-7"
    with pytest.raises(RequestExists) as raised:
        client.post("http://service.test/refund", data={"n": 5}, request_id="order-7")
    assert rejected[0]["reason"] == str(raised.value)
    assert raised.value.differences == ("URL",)
