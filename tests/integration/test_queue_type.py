"""``BGHTTP_QUEUE_TYPE``: quorum queues on the test RabbitMQ (one node), and a queue of the other type.

A single node can hold quorum queues (one member), so everything here that is
about declaring, typing and redelivering runs without a cluster; what a node's
death does is in ``tests/cluster``.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pika
import pika.exceptions
import pytest

from bghttp import BackgroundHttpClient, ConfigError, RequestStatus, Settings
from bghttp.broker import QUORUM_DELIVERY_LIMIT
from tests.reliability.server import CountingServer
from tests.support import (
    PROJECT_ROOT,
    RABBITMQ_URL,
    WorkerProcess,
    delete_queues,
    queue_counts,
    unique_queue,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def quorum_settings(rabbitmq_settings: Settings) -> Settings:
    return dataclasses.replace(rabbitmq_settings, queue_type="quorum")


def existing_queue_type(name: str) -> str:
    """``quorum`` or ``classic``, as ``rabbitmqctl list_queues`` says."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "type", "--formatter", "json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    types = {queue["name"]: queue["type"] for queue in json.loads(listing.stdout)}
    return str(types[name])


def test_queue_type_is_checked_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"BGHTTP_QUEUE_TYPE": "raft", "BGHTTP_STORE_DIR": str(tmp_path)})
    assert str(raised.value) == "BGHTTP_QUEUE_TYPE='raft': must be classic or quorum"
    assert Settings.from_env({"BGHTTP_QUEUE_TYPE": "Quorum", "BGHTTP_STORE_DIR": str(tmp_path)}).queue_type == "quorum"
    assert Settings(store_dir=tmp_path).queue_type == "classic"


@pytest.mark.slow
def test_quorum_queues_carry_requests_and_their_delayed_retries(
    quorum_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    start_worker(quorum_settings)
    with BackgroundHttpClient(quorum_settings) as client:
        plain = client.get(counting_server.url("/ok?id=plain"), request_id="plain")
        flaky = client.get(counting_server.url("/flaky?id=flaky&fail=1"), request_id="flaky", retries=2)
        assert client.wait(plain.request_id, timeout=30).status is RequestStatus.COMPLETED
        record = client.wait(flaky.request_id, timeout=30)

    assert record.status is RequestStatus.COMPLETED and record.attempt_count == 2
    assert counting_server.hits["flaky"] == 2
    name = quorum_settings.queue_name
    assert {existing_queue_type(q) for q in (name, f"{name}.DQ", f"{name}.XQ")} == {"quorum"}


@pytest.mark.parametrize(("first", "second"), [("classic", "quorum"), ("quorum", "classic")])
def test_a_client_refuses_a_queue_of_the_other_type_and_keeps_nothing(
    rabbitmq_settings: Settings, counting_server: CountingServer, first: str, second: str
) -> None:
    with BackgroundHttpClient(dataclasses.replace(rabbitmq_settings, queue_type=first)) as client:
        client.get(counting_server.url("/ok?id=a"), request_id="a")
    with BackgroundHttpClient(dataclasses.replace(rabbitmq_settings, queue_type=second)) as client:
        with pytest.raises(ConfigError) as raised:
            client.get(counting_server.url("/ok?id=b"), request_id="b")
        assert client.get_request_status("b") is None  # nothing half-written

    message = str(raised.value)
    assert "\n" not in message
    assert f"BGHTTP_QUEUE_TYPE={second}" in message and f"as a {first} queue" in message
    assert "drain" in message and "BGHTTP_QUEUE to a new queue name" in message
    assert existing_queue_type(rabbitmq_settings.queue_name) == first


@pytest.mark.slow
def test_a_worker_refuses_a_queue_of_the_other_type_in_one_line(rabbitmq_settings: Settings) -> None:
    with BackgroundHttpClient(rabbitmq_settings) as client:  # a classic queue, with a request on it
        client.get("http://127.0.0.1:9/", request_id="waiting")
    quorum = dataclasses.replace(rabbitmq_settings, queue_type="quorum")

    worker = subprocess.run(
        [sys.executable, "-m", "dramatiq", "bghttp.actors", "--processes", "1", "--threads", "1"],
        cwd=PROJECT_ROOT,
        env=worker_env(quorum.to_env()),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert worker.returncode != 0
    lines = [line for line in worker.stderr.splitlines() if line.startswith("bghttp: error:")]
    assert lines and "as a classic queue" in lines[0] and "BGHTTP_QUEUE" in lines[0], worker.stderr[-2000:]
    assert "Traceback" not in worker.stderr
    assert queue_counts(rabbitmq_settings.queue_name) == (1, 0)  # the waiting request's message is untouched


@pytest.mark.slow
def test_a_delayed_retry_outlives_many_more_returns_than_rabbitmq_4s_default_limit(
    quorum_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    """A retry waiting in ``.DQ`` goes back to the queue at every worker restart; 50 returns drop nothing."""
    returns = 50
    assert returns < QUORUM_DELIVERY_LIMIT
    settings = dataclasses.replace(quorum_settings, backoff_scale=4.0)  # the first retry is due 8 s later
    worker = start_worker(settings)
    with BackgroundHttpClient(settings) as client:
        client.get(counting_server.url("/flaky?id=late&fail=1"), request_id="late", retries=1)
        waiting = wait_until(lambda: (r := client.get_request_status("late")) and r.next_attempt_at and r, timeout=20)
        worker.stop()  # its held delayed message goes back: one return
        delay_queue = f"{settings.queue_name}.DQ"
        connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        try:
            for _ in range(returns):  # what a worker that restarts again and again does to it
                channel = connection.channel()
                method, properties, _ = channel.basic_get(delay_queue, auto_ack=False)
                assert method is not None, "the delayed message is gone"
                channel.close()  # unacked: RabbitMQ takes it back and counts a delivery
            channel = connection.channel()
            method, properties, _ = channel.basic_get(delay_queue, auto_ack=False)
            delivery_count = int((properties.headers or {}).get("x-delivery-count", 0))
            channel.close()
        finally:
            connection.close()
        assert delivery_count >= returns
        assert queue_counts(f"{settings.queue_name}.XQ")[0] == 0  # nothing dead-lettered

        start_worker(settings)
        record = client.wait("late", timeout=60)

    assert record.status is RequestStatus.COMPLETED and counting_server.hits["late"] == 2
    assert waiting.next_attempt_at is not None
    assert counting_server.times["late"][1] >= waiting.next_attempt_at - 0.05  # not early
    assert time.time() >= waiting.next_attempt_at


def test_the_longest_queue_name_allowed_leaves_room_for_all_six_queues() -> None:
    """BGHTTP_QUEUE's limit: RabbitMQ takes 255 bytes, and the intake's dead letters add ``.submit.XQ``."""
    from bghttp.config import MAX_QUEUE_NAME_BYTES
    from bghttp.worker.intake import submit_queue_name

    prefix = unique_queue()
    name = prefix + "q" * (MAX_QUEUE_NAME_BYTES - len(prefix))
    settings = Settings(broker_url=RABBITMQ_URL, queue_name=name, store_dir=Path("/nonexistent"))
    names = [f"{queue}{suffix}" for queue in (name, submit_queue_name(settings)) for suffix in ("", ".DQ", ".XQ")]
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    declared = []
    try:
        channel = connection.channel()
        for queue in names:
            channel.queue_declare(queue)
            declared.append(queue)
    finally:
        connection.close()
        delete_queues(name)  # all six
    assert len(declared) == 6
