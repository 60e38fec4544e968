"""Where a worker runs must not matter: its current directory, and what else lives there.

* With no ``BGHTTP_STORE_DIR``, a client and a worker started in different
  directories share the per-user default store, and requests complete.
* A message for a request the worker cannot find is logged as an error that
  names the store it looked in and its queue (and dead-lettered).
* A directory with its own ``actors.py`` (common in Dramatiq projects) does not
  replace bghttp's actors: ``bghttp worker`` loads ``bghttp.actors``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from bghttp import BackgroundHttpClient, Settings
from bghttp.broker import create_broker, publish_request
from tests.cli.helpers import BghttpWorker, bghttp_command
from tests.support import RABBITMQ_URL, delete_queues, require_rabbitmq, unique_queue, wait_until

pytestmark = pytest.mark.rabbitmq


def _user_env(home: Path, queue: str) -> dict[str, str]:
    """A user's environment: a home of its own, no BGHTTP_STORE_DIR, no checkout on the path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("BGHTTP_", "XDG_"))}
    env.pop("PYTHONPATH", None)
    env.update(HOME=str(home), BGHTTP_BROKER_URL=RABBITMQ_URL, BGHTTP_QUEUE=queue, BGHTTP_LOG_FORMAT="json")
    return env


@pytest.fixture
def queue() -> str:
    require_rabbitmq()
    name = unique_queue()
    yield name
    delete_queues(name)


def test_client_and_worker_in_different_directories_share_the_default_store(
    tmp_path: Path, httpserver: HTTPServer, queue: str
) -> None:
    httpserver.expect_request("/placed").respond_with_data("ok")
    home, worker_dir, client_dir = tmp_path / "home", tmp_path / "w", tmp_path / "c"
    for directory in (home, worker_dir, client_dir):
        directory.mkdir()
    env = _user_env(home, queue)
    log_path = tmp_path / "worker.log"
    worker = BghttpWorker(
        Settings(), "--processes", "1", "--threads", "2", log_path=log_path, cwd=worker_dir, full_env=env
    )
    try:
        worker.wait_ready()
        result = subprocess.run(
            [*bghttp_command(), "get", httpserver.url_for("/placed"), "--wait", "--wait-timeout", "20"],
            cwd=client_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (result.stdout, result.stderr, log_path.read_text()[-3000:])
        assert "completed" in result.stderr  # --wait: the ID on stdout, the outcome on stderr
        default_store = home / ".local" / "share" / "bghttp"
        assert (default_store / "requests").is_dir()
        assert not (worker_dir / "bghttp-store").exists() and not (client_dir / "bghttp-store").exists()

        # A message for a request that is not in the store: the worker says which store it looked in.
        settings = Settings(broker_url=RABBITMQ_URL, queue_name=queue, store_dir=tmp_path / "unused")
        broker = create_broker(settings)
        try:
            publish_request(broker, queue, "ghost-request", 1)
        finally:
            broker.close()

        def missing_event() -> dict[str, object] | None:
            for line in log_path.read_text().splitlines():
                if '"request_not_in_store"' in line:
                    return dict(json.loads(line))
            return None

        event = wait_until(missing_event, timeout=20)
        assert event["request_id"] == "ghost-request"
        assert event["level"] == "error"
        assert event["store"] == str(default_store) and event["queue"] == queue
    finally:
        worker.stop()


def test_a_users_own_actors_module_does_not_hijack_the_worker(
    tmp_path: Path, httpserver: HTTPServer, queue: str
) -> None:
    httpserver.expect_request("/mine").respond_with_data("ok")
    project = tmp_path / "project"
    project.mkdir()
    (project / "actors.py").write_text('raise SystemExit("the project\'s own actors.py was imported")\n')
    (project / "actors").mkdir()  # a package of that name too: neither may be picked
    (project / "actors" / "__init__.py").write_text('raise SystemExit("the project\'s actors package was imported")\n')
    store_dir = tmp_path / "store"
    env = {**_user_env(tmp_path, queue), "BGHTTP_STORE_DIR": str(store_dir)}
    log_path = tmp_path / "worker.log"
    worker = BghttpWorker(
        Settings(), "--processes", "1", "--threads", "2", log_path=log_path, cwd=project, full_env=env
    )
    try:
        worker.wait_ready()
        settings = Settings(broker_url=RABBITMQ_URL, queue_name=queue, store_dir=store_dir)
        with BackgroundHttpClient(settings) as client:
            info = client.get(httpserver.url_for("/mine"))
            record = client.wait(info.request_id, timeout=20)
        assert record.status.value == "completed"
        assert "own actors" not in log_path.read_text()
    finally:
        worker.stop()
