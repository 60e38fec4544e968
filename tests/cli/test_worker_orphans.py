"""``kill -9`` of the ``bghttp worker`` master: its children end within 5 s, and a restart binds the metrics port.

Before, the worker processes (and Dramatiq's metrics exposition process) kept
running without their master: they kept taking work, and the next ``bghttp
worker`` failed on the metrics port the orphan still held.
"""

from __future__ import annotations

import contextlib
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from bghttp import Settings
from bghttp.store import FileStore
from tests.cli.helpers import BghttpWorker
from tests.support import RABBITMQ_URL, delete_queues, free_port, require_rabbitmq, unique_queue, wait_until

#: What the issue allows between the master's death and its children's.
CHILDREN_END_WITHIN = 5.0


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    require_rabbitmq()
    settings = Settings(broker_url=RABBITMQ_URL, store_dir=tmp_path / "store", queue_name=unique_queue(), fsync=False)
    FileStore(settings.store_dir)
    yield settings
    delete_queues(settings.queue_name)
    delete_queues(f"{settings.queue_name}.submit")


def _wait_ready(worker: BghttpWorker, processes: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while worker.log_path.read_text(errors="replace").count("Worker process is ready") < processes:
        if worker.process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the worker did not start:\n{worker.log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)


def _running(process: psutil.Process) -> bool:
    """Not ended: a zombie (ended, waiting for whoever adopted it to reap it) runs nothing and holds no port."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _metrics(port: int) -> str:
    """The group's metrics page, once its exposition process (started after the workers) serves it."""

    def read() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            return None

    return str(wait_until(read, timeout=30, interval=0.2))


def test_children_end_with_a_killed_master_and_a_restart_binds_the_metrics_port(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    flags = ("--processes", "2", "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
    first = BghttpWorker(settings, *flags, log_path=tmp_path / "first.log")
    children: list[psutil.Process] = []
    second: BghttpWorker | None = None
    try:
        _wait_ready(first, 2)
        children = psutil.Process(first.process.pid).children(recursive=True)
        assert len(children) >= 3, children  # 2 worker processes and the metrics exposition process
        assert "bghttp_network_online" in _metrics(port)

        first.process.send_signal(signal.SIGKILL)  # the master alone, as the OOM killer would
        first.process.wait(timeout=5)
        deadline = time.monotonic() + CHILDREN_END_WITHIN
        while (running := [child for child in children if _running(child)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running == [], f"still running {CHILDREN_END_WITHIN} s after the master's death: {running}"

        second = BghttpWorker(settings, *flags, log_path=tmp_path / "second.log")
        _wait_ready(second, 2)
        assert "bghttp_network_online" in _metrics(port)
    finally:
        for child in children:  # what this test started, by pid
            with contextlib.suppress(psutil.Error):
                child.kill()
        first.stop()
        if second is not None:
            second.stop()
