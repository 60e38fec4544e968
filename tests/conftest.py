"""Fixtures named by role: ``rabbitmq_settings``, ``worker``, ``client``, ``httpserver``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, Settings
from tests.support import RABBITMQ_URL, WorkerProcess, delete_queues, require_rabbitmq, unique_queue


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def rabbitmq_settings(store_dir: Path) -> Iterator[Settings]:
    """Settings for a real RabbitMQ with a queue of this test's own, deleted afterwards."""
    require_rabbitmq()
    settings = Settings(
        broker_url=RABBITMQ_URL,
        store_dir=store_dir,
        queue_name=unique_queue(),
        backoff_scale=0.01,
        fsync=False,
    )
    yield settings
    delete_queues(settings.queue_name)


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``BGHTTP_*`` variables that give a worker process the same settings."""
    env = {
        "BGHTTP_BROKER_URL": settings.broker_url,
        "BGHTTP_STORE_DIR": str(settings.store_dir),
        "BGHTTP_QUEUE": settings.queue_name,
        "BGHTTP_BACKOFF_SCALE": repr(settings.backoff_scale),
        "BGHTTP_FSYNC": "1" if settings.fsync else "0",
        "BGHTTP_DEFAULT_TIMEOUT": repr(settings.default_timeout),
        "BGHTTP_CONNECTIVITY_INTERVAL": repr(settings.connectivity_interval),
        "BGHTTP_OFFLINE_HOLD_SECONDS": repr(settings.offline_hold_seconds),
        "BGHTTP_BLOCK_PRIVATE_ADDRESSES": "1" if settings.block_private_addresses else "0",
    }
    if settings.max_response_bytes is not None:
        env["BGHTTP_MAX_RESPONSE_BYTES"] = str(settings.max_response_bytes)
    if settings.egress_allow_networks:
        env["BGHTTP_EGRESS_ALLOW_NETWORKS"] = ",".join(settings.egress_allow_networks)
    if settings.metrics_port is not None:
        env["BGHTTP_METRICS_PORT"] = str(settings.metrics_port)
    if settings.connectivity_probes:
        env["BGHTTP_CONNECTIVITY_PROBES"] = ",".join(settings.connectivity_probes)
    if settings.network_interfaces:
        env["BGHTTP_NETWORK_INTERFACES"] = ",".join(settings.network_interfaces)
    return env


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real ``dramatiq actors`` worker groups; all are stopped at teardown."""
    started: list[WorkerProcess] = []

    def start(
        settings: Settings, *, processes: int = 1, threads: int = 4, extra_env: dict[str, str] | None = None
    ) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(
            {**settings_env(settings), **(extra_env or {})}, processes=processes, threads=threads, log_path=log
        )
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def worker(rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker(rabbitmq_settings)


@pytest.fixture
def client(rabbitmq_settings: Settings) -> Iterator[BackgroundHttpClient]:
    with BackgroundHttpClient(rabbitmq_settings) as bg_client:
        yield bg_client
