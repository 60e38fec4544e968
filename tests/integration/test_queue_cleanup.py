"""One function deletes every queue of a queue name, and the demo and the test helpers use it.

bghttp declares six queues per ``BGHTTP_QUEUE``: the work queue, the workers'
intake queue ``<name>.submit``, and the delay (``.DQ``) and dead-letter (``.XQ``)
queue of each. Queues are listed with ``rabbitmqctl list_queues name``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from bghttp import Settings
from bghttp.broker import check_queue, create_broker, delete_queues
from tests.support import PROJECT_ROOT, RABBITMQ_URL, require_rabbitmq, unique_queue

pytestmark = pytest.mark.rabbitmq


def queues_named(name: str) -> list[str]:
    """The queues on RabbitMQ whose name is ``name`` or starts with ``name.``."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        pytest.skip("rabbitmqctl is not installed")
    listed = subprocess.run(
        [rabbitmqctl, "list_queues", "name", "--quiet", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    return sorted(queue for queue in listed if queue == name or queue.startswith(f"{name}."))


def test_delete_queues_deletes_all_six_queues_of_a_name() -> None:
    require_rabbitmq()
    name = unique_queue()
    broker = create_broker(Settings(broker_url=RABBITMQ_URL, queue_name=name))
    try:
        check_queue(broker, name)  # as a worker does at start: the work queue and the intake queue
        check_queue(broker, f"{name}.submit")
    finally:
        broker.close()
    assert queues_named(name) == sorted(
        [name, f"{name}.DQ", f"{name}.XQ", f"{name}.submit", f"{name}.submit.DQ", f"{name}.submit.XQ"]
    )

    delete_queues(RABBITMQ_URL, name)

    assert queues_named(name) == []


@pytest.mark.slow
def test_the_demo_leaves_no_queue_behind(tmp_path: object) -> None:
    require_rabbitmq()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGHTTP_")}
    env.update(BGHTTP_BROKER_URL=RABBITMQ_URL, PYTHONPATH=str(PROJECT_ROOT))

    result = subprocess.run(
        [sys.executable, "-m", "bghttp.demo"], env=env, capture_output=True, text=True, timeout=180, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr
    found = re.search(r"on queue (bghttp-demo-[0-9a-f]+)", result.stdout)
    assert found, result.stdout
    assert queues_named(found.group(1)) == []
