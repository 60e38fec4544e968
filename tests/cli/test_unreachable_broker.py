"""A broker that cannot be reached: the client and the worker say where (password hidden) and why.

A submit that never got a connection says so (it was not submitted), not "the
broker did not confirm request <id>"; a worker logs one line per reconnect
attempt with the URL, the reason and when it tries next.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, BrokerUnavailable, Settings
from bghttp.store import FileStore
from tests.cli.helpers import BghttpWorker, assert_one_line_error, run_cli
from tests.support import RABBITMQ_URL, delete_queues, free_port, require_rabbitmq, unique_queue, wait_until

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


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"])
def test_a_port_that_does_not_speak_amqp_is_named_so(settings: Settings, answer: bytes) -> None:
    """A first-time user's typo: the management UI's port (HTTP), or another service; it closes or answers HTTP."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                with connection:
                    connection.recv(64)
                    connection.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        result = run_cli(settings, "--broker", f"amqp://guest:{SECRET}@127.0.0.1:{port}/", "get", URL)
    finally:
        listener.close()

    assert_one_line_error(result, 4)
    assert SECRET not in result.stderr, result.stderr
    assert f"amqp://guest:[REDACTED]@127.0.0.1:{port}/" in result.stderr, result.stderr
    assert "does not speak AMQP" in result.stderr and "StreamLostError" not in result.stderr, result.stderr
    assert "not submitted" in result.stderr, result.stderr


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


@pytest.fixture
def refusing_queue(settings: Settings) -> Iterator[str]:
    """A RabbitMQ policy that makes this test's work queue refuse every publish (max-length 0, reject-publish)."""
    require_rabbitmq()
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("needs rabbitmqctl to set a policy")
    name = f"bghttp-test-refuse-{settings.queue_name}"
    policy = json.dumps({"max-length": 0, "overflow": "reject-publish"})
    pattern = f"^{re.escape(settings.queue_name)}$"
    subprocess.run(["rabbitmqctl", "-q", "set_policy", name, pattern, policy, "--apply-to", "queues"], check=True)
    try:
        yield settings.queue_name
    finally:
        subprocess.run(["rabbitmqctl", "-q", "clear_policy", name], check=False)
        delete_queues(settings.queue_name)


def test_a_refused_publish_says_the_request_was_not_submitted(settings: Settings, refusing_queue: str) -> None:
    """The broker answered and said no (a nack): not "did not confirm", and nothing is stored."""
    result = run_cli(settings, "get", URL, "--id", "refused-1")

    assert_one_line_error(result, 4)
    assert "did not confirm" not in result.stderr, result.stderr
    assert "request refused-1 was not submitted" in result.stderr and "refused" in result.stderr, result.stderr
    assert "NACKed" not in result.stderr, result.stderr
    assert list(FileStore(settings.store_dir).request_ids()) == []

    with BackgroundHttpClient(settings) as client, pytest.raises(BrokerUnavailable) as raised:
        client.submit_many([{"method": "GET", "url": URL, "request_id": "refused-2"}])
    assert "none of the 1 requests was submitted" in str(raised.value), raised.value
    assert list(FileStore(settings.store_dir).request_ids()) == []
