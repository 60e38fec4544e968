"""Helpers shared by the tests: RabbitMQ checks, worker processes, waiting."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

import bghttp.broker
from bghttp.broker import rabbitmq_reachable

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RABBITMQ_URL = os.environ.get("BGHTTP_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
IN_CI = os.environ.get("CI", "").lower() == "true"


def rabbitmq_available(url: str = RABBITMQ_URL) -> bool:
    return rabbitmq_reachable(url)


def require_rabbitmq() -> None:
    """Skip without RabbitMQ on a laptop; fail in CI, where it must be there."""
    if rabbitmq_available():
        return
    if IN_CI:
        pytest.fail(f"RabbitMQ is not reachable at {RABBITMQ_URL} and CI=true")
    pytest.skip(f"RabbitMQ is not reachable at {RABBITMQ_URL}")


def unique_queue() -> str:
    return f"bghttp-test-{uuid.uuid4().hex[:10]}"


def delete_queues(queue_name: str, url: str = RABBITMQ_URL) -> None:
    """Delete bghttp's queues of ``queue_name``: the work queue and the workers' intake queue, each with .DQ, .XQ."""
    bghttp.broker.delete_queues(url, queue_name)


def queue_counts(queue_name: str, url: str = RABBITMQ_URL) -> tuple[int, int]:
    """(ready messages, consumers) of a queue, read with a passive declare."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        method = connection.channel().queue_declare(queue_name, passive=True).method
        return int(method.message_count), int(method.consumer_count)
    finally:
        connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_env(env: dict[str, str]) -> dict[str, str]:
    merged = {**os.environ, **env}
    merged["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), merged.get("PYTHONPATH", "")]))
    merged.setdefault("BGHTTP_LOG_FORMAT", "json")
    return merged


class WorkerProcess:
    """A real ``dramatiq bghttp.actors`` worker group in a subprocess."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        processes: int = 1,
        threads: int = 4,
        log_path: Path,
        modules: tuple[str, ...] = (),
    ) -> None:
        """``modules``: more modules each worker process imports (Dramatiq's CLI), e.g. a test's fault injection."""
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "dramatiq", "bghttp.actors", *modules),
                *("--processes", str(processes), "--threads", str(threads)),
            ],
            cwd=PROJECT_ROOT,
            # Each process runs BGHTTP_MAX_IN_FLIGHT attempts at once, whatever --threads says.
            env=worker_env({**env, "BGHTTP_MAX_IN_FLIGHT": str(threads)}),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()}")
            if "Worker process is ready" in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log_path.read_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group (the dramatiq master and its workers)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@contextlib.contextmanager
def capture_logs() -> Iterator[list[dict[str, Any]]]:
    """bghttp's log events as dicts, like ``structlog.testing.capture_logs`` (which bghttp's loggers ignore:
    they log through the stdlib logger ``bghttp``, never structlog's global configuration)."""
    from bghttp.logs import LOGGER_NAME

    events: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            fields = getattr(record, "bghttp_event", None)
            if fields is not None:
                events.append({**fields, "log_level": fields.get("level")})

    logger = logging.getLogger(LOGGER_NAME)
    handler, level = Collect(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield events
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class SilentBroker:
    """A TCP listener on loopback that accepts connections and never says a word."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def url(self, **params: str) -> str:
        """An AMQP URL pointing here, with ``params`` (pika's URL options) as its query."""
        query = "&".join(f"{key}={value}" for key, value in params.items())
        return f"amqp://guest:guest@127.0.0.1:{self.port}/" + (f"?{query}" if query else "")

    def close(self) -> None:
        self.sock.close()
        for connection in self.accepted:
            connection.close()
