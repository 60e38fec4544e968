"""Local mode across processes: SIGKILL and restart, two processes on one store, the demo.

The HTTP server (``tests.reliability.server.CountingServer``) is the witness: it
counts what it received per request ID, and the store must account for every
hit with a recorded attempt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.store import FileStore
from tests.reliability.server import CountingServer, slow_body
from tests.support import PROJECT_ROOT, RABBITMQ_URL, free_port, require_rabbitmq, wait_until, worker_env

WAIT = 90.0


class LocalProcess:
    """``python -m tests.local.local_app ...`` in its own session, output to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.local.local_app", *args],
            cwd=PROJECT_ROOT,
            env=worker_env(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        def seen() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"local process exited early:\n{self.log()}")
            return text in self.log()

        wait_until(seen, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, object]]:
        found = []
        for line in self.log().splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                event = json.loads(line)
                if event.get("event") == name:
                    found.append(event)
        return found

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        return self.process.returncode


@pytest.fixture
def processes() -> Iterator[list[LocalProcess]]:
    started: list[LocalProcess] = []
    yield started
    for process in started:
        process.stop()


def local_env(store_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "BGHTTP_BROKER_URL": "local",
        "BGHTTP_STORE_DIR": str(store_dir),
        "BGHTTP_FSYNC": "0",
        "BGHTTP_LOG_FORMAT": "json",
        **extra,
    }


def statuses(store: FileStore, ids: list[str]) -> dict[str, RequestStatus | None]:
    return {i: (r.status if (r := store.read_status(i)) else None) for i in ids}


@pytest.mark.slow
def test_sigkill_and_restart_lose_nothing_and_send_nothing_twice(
    tmp_path: Path, counting_server: CountingServer, processes: list[LocalProcess]
) -> None:
    store_dir = tmp_path / "store"
    # Slow responses (1 s of body) so that the kills land mid-attempt; flaky ones
    # so that some requests wait for a retry when a process dies.
    urls = []
    for n in range(12):
        request_id = f"req-{n}"
        if n % 2 == 0:
            urls.append(counting_server.url(f"/slow?id={request_id}&chunks=10&size=1000&delay=0.1"))
        else:
            urls.append(counting_server.url(f"/flaky?id={request_id}&fail=1"))
    ids = [f"req-{n}" for n in range(len(urls))]
    env = local_env(store_dir, BGHTTP_LOCAL_THREADS="2", BGHTTP_BACKOFF_SCALE="0.5")
    store = FileStore(store_dir, fsync=False)

    def total_hits() -> int:
        return sum(counting_server.hits.values())

    # 1. A process that submits and runs the requests itself is killed mid-way.
    app = LocalProcess(["submit", *urls], env, tmp_path / "app.log")
    processes.append(app)
    # Every request is accepted before the kill (its worker threads start on the
    # first ones while the rest are still being submitted).
    app.wait_for("submitted", WAIT)
    wait_until(lambda: total_hits() >= 3, WAIT)
    app.kill()
    after_first_kill = statuses(store, ids)
    assert None not in after_first_kill.values()  # every accepted request is in the store
    assert any(s is RequestStatus.IN_PROGRESS for s in after_first_kill.values())

    # 2. `bghttp worker --local` takes over, and is killed mid-way too.
    hits_before = total_hits()
    first_worker = LocalProcess(["worker"], env, tmp_path / "worker-1.log")
    processes.append(first_worker)
    wait_until(lambda: total_hits() >= hits_before + 3, WAIT)
    first_worker.kill()

    # 3. Started again, it finishes everything.
    second_worker = LocalProcess(["worker"], env, tmp_path / "worker-2.log")
    processes.append(second_worker)
    wait_until(lambda: all(s is not None and s.is_terminal for s in statuses(store, ids).values()), WAIT)
    assert second_worker.stop() == 0  # SIGTERM ends run_local_worker cleanly
    assert second_worker.events("local_worker_stopped")

    interrupted = 0
    for n, request_id in enumerate(ids):
        record = store.read_status(request_id)
        assert record is not None and record.status is RequestStatus.COMPLETED, record
        # The server never saw a request more often than the store recorded attempts.
        assert 1 <= counting_server.hits[request_id] <= record.attempt_count, (request_id, record)
        interrupted += sum(1 for attempt in record.attempts if attempt.outcome == "interrupted")
        body = store.response_body_path(request_id).read_bytes()
        if n % 2 == 0:
            assert body == slow_body(request_id, 10, 1000)  # whole, not a killed attempt's part
        else:
            # The first hit always fails: a retry (or a run after a kill) got the answer.
            hits = counting_server.hits[request_id]
            assert hits >= 2 and body == f"ok {request_id} after {hits}".encode()
    assert interrupted >= 1  # the kills did land mid-attempt, and those were run again
    assert not list((store_dir / "responses").glob("*.part"))


@pytest.mark.slow
def test_two_local_processes_on_one_store_never_run_a_request_twice(
    tmp_path: Path, counting_server: CountingServer, processes: list[LocalProcess]
) -> None:
    store_dir = tmp_path / "store"
    settings = Settings(broker_url="local", store_dir=store_dir, fsync=False)
    # Requests whose messages are gone (as if their process had died): both
    # processes find all of them in the store at once.
    with BackgroundHttpClient(settings, broker=StubBroker()) as orphaned:
        slow = "/slow?id=r{n}&chunks=2&size=500&delay=0.05"
        ids = [orphaned.get(counting_server.url(slow.format(n=n)), request_id=f"r{n}").request_id for n in range(40)]
    # Scan every 0.1 s and treat everything not held as orphaned: the two
    # processes keep taking requests from each other, the worst case for duplicates.
    env = local_env(store_dir, BGHTTP_LOCAL_RESCAN_INTERVAL="0.1", BGHTTP_LOCAL_ORPHAN_AFTER="0")
    workers = [LocalProcess(["worker"], env, tmp_path / f"worker-{n}.log") for n in range(2)]
    processes.extend(workers)
    store = FileStore(store_dir, fsync=False)
    wait_until(lambda: all(s is RequestStatus.COMPLETED for s in statuses(store, ids).values()), WAIT)
    for worker in workers:
        assert worker.stop() == 0

    for request_id in ids:
        record = store.read_status(request_id)
        assert record is not None and record.attempt_count == 1, record
        assert counting_server.hits[request_id] == 1, request_id
    started = [len(worker.events("attempt_started")) for worker in workers]
    assert sum(started) == len(ids)
    # Both processes recovered requests: they really competed for them.
    assert all(worker.events("local_requests_taken_over") for worker in workers)


class DemoRun:
    """One ``python -m bghttp.demo`` run: its result and its wall-clock time as measured from outside."""

    def __init__(self, tmp_path: Path, broker_url: str, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BGHTTP_")}
        env["BGHTTP_BROKER_URL"] = broker_url
        env["PYTHONPATH"] = str(PROJECT_ROOT)
        began = time.monotonic()
        self.result = subprocess.run(
            [sys.executable, "-m", "bghttp.demo", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        self.wall_seconds = time.monotonic() - began
        self.stdout = self.result.stdout


def assert_demo_output(run: DemoRun) -> None:
    result = run.result
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert sum(" completed " in line for line in lines) == 4, result.stdout
    assert sum(" failed " in line for line in lines) == 1, result.stdout
    assert "UNEXPECTED" not in result.stdout
    assert "attempts=3" in next(line for line in lines if "/flaky" in line)
    # A request that failed as it should is not "ok": the demo says what happened.
    down = next(line for line in lines if "/down" in line)
    assert down.endswith("failed as expected") and not re.search(r"\bok\b", down), down
    assert all(line.endswith(" ok") for line in lines if " completed " in line), result.stdout
    # The elapsed time is the real one: start-up, worker and clean-up included.
    reported = float(re.fullmatch(r"Done in ([\d.]+)s\.", lines[-1]).group(1))  # type: ignore[union-attr]
    assert run.wall_seconds - 2.0 <= reported <= run.wall_seconds + 0.1, (reported, run.wall_seconds)


def shown_paths(stdout: str) -> list[Path]:
    """Every absolute path the demo printed."""
    return [Path(match) for match in re.findall(r"(/[^\s:;()]+)", stdout) if "/" in match[1:]]


def test_demo_runs_in_local_mode_when_rabbitmq_is_unreachable(tmp_path: Path) -> None:
    run = DemoRun(tmp_path, f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    result = run.result
    assert result.stdout.splitlines()[0].endswith("running in local mode (in-process worker, no broker needed).")
    assert "Traceback" not in result.stderr and "error" not in result.stderr.lower()
    assert_demo_output(run)
    assert list(tmp_path.iterdir()) == []  # nothing left behind in the working directory
    # Its temporary store is gone at the end, so no path into it may be shown.
    assert [path for path in shown_paths(result.stdout) if "bghttp-demo-" in str(path)] == [], result.stdout


def test_demo_keep_shows_paths_that_exist_when_it_ends(tmp_path: Path) -> None:
    run = DemoRun(tmp_path, f"amqp://guest:guest@127.0.0.1:{free_port()}/", "--keep")
    assert_demo_output(run)
    paths = [path for path in shown_paths(run.stdout) if "bghttp-demo-" in str(path)]
    try:
        assert sum("response file: " in line for line in run.stdout.splitlines()) == 5, run.stdout
        assert paths and all(path.exists() for path in paths), run.stdout
    finally:
        kept = next((path for path in paths if path.name == "store"), None)
        if kept is not None:
            shutil.rmtree(kept.parent, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.rabbitmq
def test_demo_uses_rabbitmq_when_reachable(tmp_path: Path) -> None:
    require_rabbitmq()
    run = DemoRun(tmp_path, RABBITMQ_URL)
    assert "RabbitMQ is reachable" in run.stdout.splitlines()[0]
    assert_demo_output(run)
