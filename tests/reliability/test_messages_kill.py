"""Messages in, events out, across a SIGKILLed worker, with producer and consumer in other languages' shoes.

The producer and the consumer are the documented examples (docs/examples/), run as
their own processes that never import bghttp: pika and the standard library only.
"""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from bghttp import BackgroundHttpClient, Settings
from tests.messaging import EVENT_SCHEMA, remove_message_queues, with_own_exchange
from tests.reliability.server import CountingServer
from tests.support import PROJECT_ROOT, RABBITMQ_URL, WorkerProcess, delete_queues, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

EXAMPLES = PROJECT_ROOT / "docs" / "examples"
PRODUCER, CONSUMER = EXAMPLES / "submit_by_message.py", EXAMPLES / "consume_events.py"
COUNT = 100
#: Runs an example as ``__main__``, then fails if anything of bghttp was imported on the way.
WITHOUT_BGHTTP = """
import runpy, sys
runpy.run_path(sys.argv[1], run_name="__main__")
leaked = sorted(name for name in sys.modules if name.split(".")[0] == "bghttp")
assert not leaked, leaked
print("imported no bghttp module", file=sys.stderr)
"""


@pytest.fixture
def settings(rabbitmq_settings: Settings) -> Iterator[Settings]:
    settings = with_own_exchange(rabbitmq_settings)
    yield settings
    remove_message_queues(settings)
    delete_queues(f"{settings.queue_name}.consumer")


def example_process(
    script: Path, env: dict[str, str], tmp_path: Path, name: str, **kwargs: Any
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WITHOUT_BGHTTP, str(script)],
        env={"PATH": "/usr/bin:/bin", "AMQP_URL": RABBITMQ_URL, **env},  # no PYTHONPATH to the checkout
        cwd=tmp_path,
        stdout=open(tmp_path / f"{name}.out", "wb"),
        stderr=open(tmp_path / f"{name}.err", "wb"),
        **kwargs,
    )


def test_the_examples_import_only_pika_and_the_standard_library() -> None:
    for script in (PRODUCER, CONSUMER):
        imported = set()
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add((node.module or "").split(".")[0])
        assert imported <= {"json", "os", "sys", "time", "uuid", "pika"}, (script.name, imported)


def test_hundred_submits_by_message_each_one_final_event_across_killed_workers(
    settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer, tmp_path: Path
) -> None:
    consumer = example_process(
        CONSUMER,
        {
            "EVENTS_EXCHANGE": settings.events_exchange,
            "EVENTS_QUEUE": f"{settings.queue_name}.consumer",
            "STOP_AFTER": str(COUNT),
        },
        tmp_path,
        "consumer",
    )
    wait_until(lambda: "consuming" in (tmp_path / "consumer.err").read_text(), timeout=20)
    first = start_worker(settings, threads=4)

    # Half with a request_id of their own, half identified by their message_id; half with a retry.
    requests = [
        {
            "method": "GET",
            "url": counting_server.url("/wait"),
            "query_parameters": {"id": f"k{i}", "delay": "0.2"},
            "retries": i % 2,
            "metadata": {"key": f"k{i}", "order": i, "note": "é"},
            **({"request_id": f"order-{i}"} if i % 3 == 0 else {}),
        }
        for i in range(COUNT)
    ]
    producer = example_process(
        PRODUCER, {"SUBMIT_QUEUE": f"{settings.queue_name}.submit"}, tmp_path, "producer", stdin=subprocess.PIPE
    )
    assert producer.stdin is not None
    producer.stdin.write("".join(json.dumps(request) + "\n" for request in requests).encode())
    producer.stdin.close()
    assert producer.wait(timeout=60) == 0, (tmp_path / "producer.err").read_text()
    request_ids = (tmp_path / "producer.out").read_text().split()

    def events_so_far() -> list[dict[str, Any]]:
        return [json.loads(line) for line in (tmp_path / "consumer.out").read_text().splitlines() if line.strip()]

    # Killed twice: at the first event (submit messages still being taken in), and
    # mid-run (attempts in flight, final statuses written but their events not published).
    at_kills = []
    worker = first
    for events_before_kill in (1, 40):
        wait_until(lambda n=events_before_kill: len(events_so_far()) >= n, timeout=60)
        worker.kill(signal.SIGKILL)
        worker.process.wait(timeout=10)
        at_kills.append(len(events_so_far()))
        worker = start_worker(settings, threads=4)

    assert consumer.wait(timeout=180) == 0, (tmp_path / "consumer.err").read_text()
    for name in ("producer", "consumer"):
        assert "imported no bghttp module" in (tmp_path / f"{name}.err").read_text(), name
    events = events_so_far()
    time.sleep(2)  # anything published late stays in the consumer's queue: read it
    late = drain(f"{settings.queue_name}.consumer")

    assert at_kills[-1] < COUNT
    assert len(request_ids) == COUNT
    for event in events:
        EVENT_SCHEMA.validate(event)
    by_key = {event["metadata"]["key"]: event for event in events}
    assert len(events) == len(by_key) == COUNT  # one distinct event per request
    # Duplicates after the consumer stopped: allowed, but with an event_id already seen.
    assert {event["event_id"] for event in late} <= {event["event_id"] for event in events}
    with BackgroundHttpClient(settings) as client:
        for i, (request, request_id) in enumerate(zip(requests, request_ids, strict=True)):
            key = f"k{i}"
            event = by_key[key]
            assert event["request_id"] == request_id == request.get("request_id", request_id)
            assert event["metadata"] == request["metadata"]
            # No request sent beyond its attempts: an attempt the kill interrupted after
            # sending spends a retry (none left: failed), it is not sent again for free.
            assert counting_server.hits[key] <= 1 + request["retries"], (key, event)
            if event["status"] == "completed":
                assert event["status_code"] == 200 and counting_server.hits[key] >= 1
            else:
                assert event["status"] == "failed" and "worker stopped" in event["last_error"], event
            record = client.get_request_status(request_id)
            assert record is not None and record.status.value == event["status"]


def drain(queue: str) -> list[dict[str, Any]]:
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        bodies = []
        while True:
            method, _properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return bodies
            bodies.append(json.loads(body))
    finally:
        connection.close()
