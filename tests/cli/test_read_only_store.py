"""Reading a store on a read-only mount (issue 11, item 18): reading never creates or chmods.

Root ignores file modes, so the store is made read-only with a read-only bind
mount; the test skips where mounting is impossible, except in CI.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker

from bghttp import BackgroundHttpClient, Settings
from tests.cli.helpers import json_output, run_cli


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def read_only_store(tmp_path: Path) -> Iterator[Path]:
    """A store holding one request ``ro-1``, mounted read-only at the path returned."""
    source, mounted = tmp_path / "store", tmp_path / "ro-store"
    settings = Settings(broker_url="amqp://unused/", store_dir=source, fsync=False)
    with BackgroundHttpClient(settings, broker=StubBroker()) as client:
        client.get("http://127.0.0.1:9/x", request_id="ro-1")
    os.chmod(source, 0o755)  # a store shared for reading; the mount must not be "fixed" by a reader
    mounted.mkdir()
    bind = _mount("--bind", str(source), str(mounted))
    if bind.returncode != 0:
        message = f"cannot bind-mount here: {bind.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        remount = _mount("-o", "remount,ro,bind", str(mounted))
        assert remount.returncode == 0, remount.stderr
        with pytest.raises(OSError):
            (mounted / "probe").touch()
        yield mounted
    finally:
        subprocess.run(["umount", str(mounted)], check=False)


def test_ls_and_status_read_a_read_only_store(read_only_store: Path) -> None:
    settings = Settings(broker_url="amqp://unused/", store_dir=read_only_store)

    listed = json_output(run_cli(settings, "ls", "--json"))
    assert [item["request_id"] for item in listed] == ["ro-1"]
    status = json_output(run_cli(settings, "status", "ro-1", "--json"))
    assert status["request_id"] == "ro-1" and status["status"] == "in_progress"
    assert oct(read_only_store.stat().st_mode & 0o777) == oct(0o755)
