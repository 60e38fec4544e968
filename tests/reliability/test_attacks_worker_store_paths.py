"""What a worker creates in a store it starts on (issue 21, item 7): private parents, whatever the umask.

A ``bghttp worker`` started under umask 000 on a store whose parents did not
exist yet made them 0777 (its heartbeat writer's ``Path.mkdir(parents=True)``
masks only the last directory's mode), so any local user could swap the store
away and plant a symlink; every client then refused the store
("writable by other users").
"""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, Settings
from tests.cli.helpers import BghttpWorker, bghttp_command, cli_env
from tests.support import PROJECT_ROOT, wait_until

pytestmark = [pytest.mark.rabbitmq]


class UmaskZeroWorker(BghttpWorker):
    """``bghttp worker`` started under umask 000."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [*bghttp_command(), "worker", "--processes", "1", "--max-in-flight", "2"],
            cwd=PROJECT_ROOT,
            env=cli_env(settings, {"BGHTTP_HEARTBEAT_INTERVAL": "1"}),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: os.umask(0),
        )


def test_a_worker_under_umask_000_creates_the_stores_parents_private(
    rabbitmq_settings: Settings, tmp_path: Path
) -> None:
    base = tmp_path / "base"
    base.mkdir(mode=0o700)
    root = base / "a" / "b" / "store"
    settings = dataclasses.replace(rabbitmq_settings, store_dir=root)
    worker = UmaskZeroWorker(settings, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        wait_until(lambda: any((root / "workers").glob("*.json")), timeout=30)
        modes = {path: stat.S_IMODE(path.stat().st_mode) for path in (base / "a", base / "a" / "b", root)}
        assert set(modes.values()) == {0o700}, {str(path): oct(mode) for path, mode in modes.items()}
        with BackgroundHttpClient(settings) as client:  # the store is usable: not refused as others'
            client.get("http://127.0.0.1:9/x", request_id="after-worker")
    finally:
        worker.stop()
