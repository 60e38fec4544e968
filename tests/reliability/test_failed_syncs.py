"""A sync that fails (issue 21, item 6): nothing is acked or accepted on a commit that is not durable.

The failures are injected at the syscall boundary: ``tests.syscall_faults``
runs the worker group or the submitting process under a seccomp filter that
makes ``syncfs``, ``fsync`` and ``fdatasync`` fail. The durability code used to
fall back from a failing ``syncfs`` (EIO included) to ``sync(2)``, which reports
nothing: a worker completed and acked 5 of 5 requests with nothing durable, and
a ``submit_many`` accepted all 20 requests.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pika.exceptions
import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.store import FileStore
from tests import syscall_faults
from tests.conftest import settings_env
from tests.reliability.server import CountingServer
from tests.support import PROJECT_ROOT, WorkerProcess, queue_counts, wait_until, worker_env

pytestmark = [pytest.mark.rabbitmq]

ALL_SYNCS_FAIL = {"syncfs": errno.EIO, "fsync": errno.EIO, "fdatasync": errno.EIO}


@pytest.fixture(autouse=True)
def _needs_seccomp() -> None:
    if not syscall_faults.available():
        pytest.fail("libseccomp is not installed (.ci/run installs libseccomp2)")


class FaultyWorker(WorkerProcess):
    """``dramatiq bghttp.actors`` under a seccomp filter (the whole group: master and workers)."""

    def __init__(self, settings: Settings, faults: dict[str, int], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        argv = [sys.executable, "-m", "dramatiq", "bghttp.actors", "--processes", "1", "--threads", "4"]
        self.process = subprocess.Popen(
            syscall_faults.command(faults, argv),
            cwd=PROJECT_ROOT,
            env=worker_env({**settings_env(settings), "BGHTTP_MAX_IN_FLIGHT": "4"}),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.fixture
def faulty_worker(tmp_path: Path) -> Iterator[Callable[[Settings, dict[str, int]], FaultyWorker]]:
    started: list[FaultyWorker] = []

    def start(settings: Settings, faults: dict[str, int]) -> FaultyWorker:
        worker = FaultyWorker(settings, faults, tmp_path / f"faulty-{len(started)}.log")
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


def _messages_held(queue_name: str) -> int:
    return sum(queue_counts(name)[0] for name in (queue_name, f"{queue_name}.DQ"))


def test_a_worker_whose_syncs_fail_acks_nothing_and_the_requests_complete_later(
    rabbitmq_settings: Settings,
    faulty_worker: Callable[[Settings, dict[str, int]], FaultyWorker],
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    ids = [f"eio-{n}" for n in range(5)]
    with BackgroundHttpClient(rabbitmq_settings) as client:
        for request_id in ids:
            client.get(counting_server.url(f"/ok?id={request_id}"), request_id=request_id)
        worker = faulty_worker(rabbitmq_settings, ALL_SYNCS_FAIL)
        wait_until(lambda: all(counting_server.hits[request_id] for request_id in ids), timeout=60)
        time.sleep(2)  # time for the worker to ack, if it (wrongly) does
        worker.stop()  # gives back what it holds unacked (its retries, delayed)
        # At least one per request (a retry copy and its original may both be held at a stop).
        assert _messages_held(rabbitmq_settings.queue_name) >= len(ids), "messages were acked with nothing durable"
        logged = [json.loads(line) for line in worker.log_path.read_text().splitlines() if line.startswith("{")]
        errors = [entry for entry in logged if entry.get("event") == "run_not_durable"]
        assert {entry["request_id"] for entry in errors} == set(ids)
        assert all(entry["level"] == "error" for entry in errors)
        # A healthy worker takes the retries: each request is completed, durably, and not sent again.
        start_worker(rabbitmq_settings)
        for request_id in ids:
            assert client.wait(request_id, timeout=90).status is RequestStatus.COMPLETED
        wait_until(lambda: _messages_held(rabbitmq_settings.queue_name) == 0, timeout=30)
    assert all(counting_server.hits[request_id] == 1 for request_id in ids), counting_server.hits


SUBMIT_MANY = textwrap.dedent(
    """
    import sys
    from bghttp import BackgroundHttpClient, Settings, StoreError
    with BackgroundHttpClient(Settings.from_env()) as client:
        try:
            infos = client.submit_many(
                [{"method": "POST", "url": "http://127.0.0.1:9/x", "data": b"x" * 100, "request_id": f"bulk-{n}"}
                 for n in range(20)]
            )
        except StoreError as error:
            print("refused:", error)
            sys.exit(3)
    print("accepted", len(infos))
    """
)


@pytest.mark.parametrize(
    ("faults", "durable"),
    [
        pytest.param(ALL_SYNCS_FAIL, False, id="every-sync-fails"),
        pytest.param(
            {"syncfs": errno.ENOSYS, "fsync": errno.EIO, "fdatasync": errno.EIO}, False, id="no-syncfs-fsync-fails"
        ),
        pytest.param({"syncfs": errno.ENOSYS}, True, id="no-syncfs"),
    ],
)
def test_submit_many_whose_commit_fails_accepts_nothing(
    rabbitmq_settings: Settings, faults: dict[str, int], durable: bool
) -> None:
    result = subprocess.run(
        syscall_faults.command(faults, [sys.executable, "-c", SUBMIT_MANY]),
        capture_output=True,
        text=True,
        timeout=60,
        env=worker_env(settings_env(rabbitmq_settings)),
        cwd=PROJECT_ROOT,
    )
    store = FileStore(rabbitmq_settings.store_dir)
    stored = [n for n in range(20) if store.read_status(f"bulk-{n}") is not None]
    if durable:  # syncfs is missing: each file is fsynced instead, and that works
        assert result.returncode == 0, result.stderr
        assert len(stored) == 20
        return
    assert result.returncode == 3, f"accepted under failing syncs: {result.stdout} {result.stderr[-2000:]}"
    assert stored == []
    try:
        published = queue_counts(rabbitmq_settings.queue_name)[0]
    except pika.exceptions.ChannelClosedByBroker:
        published = 0  # the queue was never declared: nothing was published
    assert published == 0
