"""``retry`` (replay) on the client side, with a StubBroker standing in for RabbitMQ: what it publishes,
in which order with the record, and what a broker that does not confirm leaves."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from bghttp import (
    AsyncBackgroundHttpClient,
    BackgroundHttpClient,
    BrokerUnavailable,
    RequestRunning,
    RequestStatus,
    RetryRefused,
    Settings,
    UnknownRequest,
)
from bghttp.lifecycle import parse_message_args
from bghttp.models import Phase

QUEUE = "unit"


def published(broker: StubBroker) -> list[tuple[str, int]]:
    queue = broker.queues.get(QUEUE)
    messages = [dramatiq.Message.decode(body) for body in list(queue.queue)] if queue else []
    return [args for args in (parse_message_args(m.args) for m in messages) if args is not None]


class RefusingBroker(StubBroker):
    """Confirms nothing once ``refuse`` is set (as RabbitMQ nacking or gone)."""

    refuse = False

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        if self.refuse:
            raise dramatiq.errors.ConnectionClosed(OSError("connection reset"))
        return super().enqueue(message, delay=delay)


@pytest.fixture
def broker() -> RefusingBroker:
    return RefusingBroker()


@pytest.fixture
def client(tmp_path: Path, broker: RefusingBroker) -> Any:
    settings = Settings(store_dir=tmp_path / "store", queue_name=QUEUE, fsync=False)
    with BackgroundHttpClient(settings, broker=broker) as bg_client:
        yield bg_client


def test_retry_publishes_the_next_token_after_the_record_says_queued(
    client: BackgroundHttpClient, broker: RefusingBroker
) -> None:
    client.get("http://service.test/", request_id="r1")
    client.cancel("r1")
    seen_at_publish: list[Any] = []
    original = broker.enqueue

    def spy(message: Any, *, delay: int | None = None) -> Any:
        seen_at_publish.append(client.get_request_status("r1"))
        return original(message, delay=delay)

    broker.enqueue = spy  # type: ignore[method-assign]
    record = client.retry("r1")
    (at_publish,) = seen_at_publish
    assert at_publish.status is RequestStatus.IN_PROGRESS and not at_publish.published  # a message never finds it final
    assert (record.status, record.phase, record.published, record.token) == (
        RequestStatus.IN_PROGRESS, Phase.QUEUED, True, 2,
    )
    assert published(broker) == [("r1", 1), ("r1", 2)]


def test_a_broker_that_does_not_confirm_leaves_the_request_as_it_ended(
    client: BackgroundHttpClient, broker: RefusingBroker
) -> None:
    client.get("http://service.test/", request_id="r1")
    ended = client.cancel("r1")
    broker.refuse = True
    with pytest.raises(BrokerUnavailable):
        client.retry("r1")
    after = client.get_request_status("r1")
    assert after is not None
    assert (after.status, after.replays, after.attempts) == (RequestStatus.CANCELLED, 0, ended.attempts)
    broker.refuse = False
    assert client.retry("r1").replays == 1  # and it can be retried once the broker is back


def test_retry_refuses_what_is_not_failed_or_cancelled_and_unknown_ids(client: BackgroundHttpClient) -> None:
    client.get("http://service.test/", request_id="r1")
    with pytest.raises(RetryRefused, match="in_progress/queued"):
        client.retry("r1")
    with pytest.raises(UnknownRequest):
        client.retry("nope")


def test_retry_of_a_cancelled_request_whose_attempt_still_holds_its_claim_is_request_running(
    client: BackgroundHttpClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.get("http://service.test/", request_id="r1")
    client.cancel("r1")
    monkeypatch.setattr("bghttp.client.REPLAY_CLAIM_WAIT_SECONDS", 0.1)
    with client.store.claim("r1") as claimed:  # the stopping attempt's worker
        assert claimed
        with pytest.raises(RequestRunning, match="still stopping"):
            client.retry("r1")


def test_the_async_client_retries_too(client: BackgroundHttpClient, broker: RefusingBroker) -> None:
    client.get("http://service.test/", request_id="r1")
    client.cancel("r1")

    async def main() -> Any:
        aclient = AsyncBackgroundHttpClient(client=client)
        try:
            return await aclient.retry("r1")
        finally:
            aclient._pool.shutdown()

    assert asyncio.run(main()).status is RequestStatus.IN_PROGRESS
    assert published(broker)[-1] == ("r1", 2)
