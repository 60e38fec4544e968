"""A broker that cannot be reached: the client and the worker say where (password hidden) and why.

A submit that never got a connection says so (it was not submitted), not "the
broker did not confirm request <id>"; a worker logs one line per reconnect
attempt with the URL, the reason and when it tries next.
"""

from __future__ import annotations

import datetime
import itertools
import json
import time
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, BrokerUnavailable, Settings
from bghttp.store import FileStore
from tests.cli.helpers import BghttpWorker, assert_one_line_error, run_cli
from tests.support import RABBITMQ_URL, free_port, require_rabbitmq, unique_queue, wait_until

SECRET = "Wr0ng-s3cret"
URL = "http://127.0.0.1:9/x"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(broker_url=RABBITMQ_URL, store_dir=tmp_path / "store", queue_name=unique_queue(), fsync=False)
    FileStore(settings.store_dir)
    return settings


def test_closed_port_names_the_url_and_the_reason(settings: Settings) -> None:
    port = free_port()
    broker = f"amqp://guest:{SECRET}@127.0.0.1:{port}/"

    result = run_cli(settings, "--broker", broker, "post", URL, "-d", "x")

    assert_one_line_error(result, 4)
    assert SECRET not in result.stderr, result.stderr
    assert f"amqp://guest:[REDACTED]@127.0.0.1:{port}/" in result.stderr, result.stderr
    assert "refused" in result.stderr.lower(), result.stderr
    assert "did not confirm" not in result.stderr, result.stderr
    assert "not submitted" in result.stderr, result.stderr
    assert list(FileStore(settings.store_dir).request_ids()) == []


def test_wrong_password_names_the_url_and_the_reason(settings: Settings) -> None:
    require_rabbitmq()
    broker = RABBITMQ_URL.replace("guest:guest@", f"guest:{SECRET}@")
    assert SECRET in broker

    result = run_cli(settings, "--broker", broker, "get", URL)

    assert_one_line_error(result, 4)
    assert SECRET not in result.stderr, result.stderr
    assert "guest:[REDACTED]@" in result.stderr, result.stderr
    assert "password" in result.stderr.lower() and "ACCESS_REFUSED" in result.stderr, result.stderr
    assert "did not confirm" not in result.stderr, result.stderr


def test_bulk_submit_to_a_closed_port_says_nothing_was_submitted(settings: Settings) -> None:
    broker = f"amqp://guest:{SECRET}@127.0.0.1:{free_port()}/"
    with BackgroundHttpClient(settings, broker=broker) as client, pytest.raises(BrokerUnavailable) as raised:
        client.submit_many([{"method": "GET", "url": URL}, {"method": "GET", "url": URL}])

    message = str(raised.value)
    assert SECRET not in message and "[REDACTED]" in message and "refused" in message.lower(), message
    assert "none of the 2 requests was submitted" in message, message


def test_worker_logs_one_line_per_reconnect_attempt(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    broker = f"amqp://guest:{SECRET}@127.0.0.1:{port}/"
    worker = BghttpWorker(
        settings,
        "--processes",
        "1",
        log_path=tmp_path / "worker.log",
        env={"BGHTTP_BROKER_URL": broker, "BGHTTP_LOG_FORMAT": "json"},
    )
    try:

        def attempts() -> list[dict[str, object]]:
            lines = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
            return [line for line in lines if line.get("event") == "broker_unreachable"]

        wait_until(lambda: len(attempts()) >= 3, timeout=30)
        time.sleep(0.5)  # let any line of the same round arrive
    finally:
        worker.stop()
    text = worker.log_path.read_text()
    logged = attempts()

    assert SECRET not in text
    assert "Consumer encountered a connection error" not in text, text
    assert "Restarting consumer" not in text, text
    for line in logged:
        assert line["url"] == f"amqp://guest:[REDACTED]@127.0.0.1:{port}/", line
        assert "refused" in str(line["reason"]).lower(), line
        assert float(str(line["retry_in_s"])) > 0, line
    # One line per attempt, not one per consumer (the worker has four): the rounds are seconds apart.
    times = [datetime.datetime.fromisoformat(str(line["timestamp"]).replace("Z", "+00:00")) for line in logged]
    assert all((later - earlier).total_seconds() >= 1.5 for earlier, later in itertools.pairwise(times)), logged
