"""Fixtures named by role: ``rabbitmq_settings``, ``worker``, ``client``, ``httpserver``,
``counting_server``, ``silent_broker``.

``client`` and ``worker`` are parametrized by ``mode`` (``rabbitmq``, ``local``):
see the "modes" section below. Every test that needs RabbitMQ gets the
``rabbitmq`` marker by itself: see "markers" at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, Settings
from tests.reliability.server import CountingServer
from tests.support import RABBITMQ_URL, SilentBroker, WorkerProcess, delete_queues, require_rabbitmq, unique_queue


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def counting_server() -> Iterator[CountingServer]:
    """A loopback HTTP server that counts what it receives per request ID (``tests/reliability/server.py``)."""
    server = CountingServer().start()
    yield server
    server.stop()


@pytest.fixture
def silent_broker() -> Iterator[SilentBroker]:
    """A loopback "broker" that accepts connections and never answers."""
    broker = SilentBroker()
    yield broker
    broker.close()


@pytest.fixture
def rabbitmq_settings(store_dir: Path) -> Iterator[Settings]:
    """Settings for a real RabbitMQ with a queue of this test's own, deleted afterwards."""
    require_rabbitmq()
    settings = Settings(
        broker_url=RABBITMQ_URL,
        store_dir=store_dir,
        queue_name=unique_queue(),
        backoff_scale=0.01,
        fsync=True,  # the default users get: exercises the group commit
    )
    yield settings
    delete_queues(settings.queue_name)


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``BGHTTP_*`` variables that give a worker process the same settings."""
    return settings.to_env()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real ``dramatiq bghttp.actors`` worker groups; all are stopped at teardown."""
    started: list[WorkerProcess] = []

    def start(
        settings: Settings,
        *,
        processes: int = 1,
        threads: int = 4,
        extra_env: dict[str, str] | None = None,
        modules: tuple[str, ...] = (),
    ) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(
            {**settings_env(settings), **(extra_env or {})},
            processes=processes,
            threads=threads,
            log_path=log,
            modules=modules,
        )
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


# ----------------------------------------------------------------------------- modes
# Tests that use ``client``/``worker`` (or ``mode``/``mode_settings``) run once per
# mode: against RabbitMQ with a real worker process, and in local mode with the
# client's in-process worker. A test that itself asks for ``rabbitmq_settings``
# runs in RabbitMQ mode only; ``@pytest.mark.modes("rabbitmq")`` pins one explicitly.
MODES = ("rabbitmq", "local")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "modes(*names): run a mode-parametrized test only in these modes")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mode" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("modes")
    modes = [m for m in MODES if marker is None or m in marker.args]
    if "rabbitmq_settings" in metafunc.fixturenames:
        return  # the ``mode`` fixture's default, rabbitmq; the test ID stays as it was
    metafunc.parametrize(
        "mode", [pytest.param(m, marks=[pytest.mark.rabbitmq] if m == "rabbitmq" else []) for m in modes]
    )


@pytest.fixture
def mode() -> str:
    """``rabbitmq`` or ``local``; parametrized by ``pytest_generate_tests``."""
    return "rabbitmq"


def local_settings(store_dir: Path) -> Settings:
    """Local-mode settings matching ``rabbitmq_settings`` (same backoff scale, no fsync)."""
    return Settings(broker_url="local", store_dir=store_dir, queue_name=unique_queue(), backoff_scale=0.01, fsync=False)


@pytest.fixture
def mode_settings(mode: str, store_dir: Path, request: pytest.FixtureRequest) -> Settings:
    if mode == "local":
        return local_settings(store_dir)
    settings: Settings = request.getfixturevalue("rabbitmq_settings")
    return settings


@pytest.fixture
def worker(mode: str, mode_settings: Settings, request: pytest.FixtureRequest) -> WorkerProcess | None:
    """A real worker process in RabbitMQ mode; None in local mode, where the client runs one in-process."""
    if mode == "local":
        return None
    start: Callable[..., WorkerProcess] = request.getfixturevalue("start_worker")
    return start(mode_settings)


@pytest.fixture
def client(mode_settings: Settings) -> Iterator[BackgroundHttpClient]:
    with BackgroundHttpClient(mode_settings) as bg_client:
        yield bg_client


# ----------------------------------------------------------------------------- markers
# A test needs RabbitMQ when it asks for one of these fixtures (directly or through
# another fixture), runs in the ``rabbitmq`` mode, or lives in tests/cluster/.
# ``-m "not rabbitmq"`` then deselects all of them without a marker on each;
# an explicit ``@pytest.mark.rabbitmq`` keeps working.
RABBITMQ_FIXTURES = frozenset({"rabbitmq_settings", "start_worker", "rabbitmq_cluster"})
CLUSTER_TESTS = Path(__file__).resolve().parent / "cluster"


def needs_rabbitmq(item: pytest.Item) -> bool:
    if RABBITMQ_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("mode") == "rabbitmq":
        return True
    return CLUSTER_TESTS in Path(str(item.path)).resolve().parents


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("rabbitmq") is None and needs_rabbitmq(item):
            item.add_marker(pytest.mark.rabbitmq)
