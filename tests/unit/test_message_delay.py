"""A delayed message is never held longer than ``MAX_MESSAGE_DELAY_SECONDS`` (RabbitMQ's consumer_timeout
would close the channel holding it); a longer wait comes early and is handed back by the runner."""

from __future__ import annotations

import time

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import dq_name

from bghttp.broker import MAX_MESSAGE_DELAY_SECONDS, publish_request


@pytest.mark.parametrize(("asked", "held"), [(3600.0, MAX_MESSAGE_DELAY_SECONDS), (512.0, 512.0)])
def test_a_delay_is_held_at_most_the_maximum(asked: float, held: float) -> None:
    broker = StubBroker()
    before = time.time()
    publish_request(broker, "q", "r1", 2, asked)
    (body,) = list(broker.queues[dq_name("q")].queue)
    eta_seconds = dramatiq.Message.decode(body).options["eta"] / 1000
    assert before + held - 1 <= eta_seconds <= time.time() + held
    assert MAX_MESSAGE_DELAY_SECONDS <= 30 * 60 / 2  # well below RabbitMQ's default consumer_timeout
