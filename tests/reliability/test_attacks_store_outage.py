"""The store is unwritable (read-only remount, NFS outage) for longer than half a minute.

A worker that cannot write the store raises ``StoreError``; Dramatiq's
``Retries`` runs the message again, without limit for an outage of the store or
the broker (at most 60 s apart), where any other internal failure gives up after
5 tries. (It used to give up after 5 for all, ~31-62 s: every request whose
message arrived during a longer outage stayed ``queued``, and ``wait()`` hung.)
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.reliability.server import CountingServer
from tests.support import IN_CI, WorkerProcess, wait_until

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def store_mount(tmp_path: Path) -> Iterator[Path]:
    """A bind mount of an empty store directory; the test remounts it read-only and back."""
    source, mounted = tmp_path / "store-source", tmp_path / "store"
    source.mkdir()
    mounted.mkdir()
    bind = _mount("--bind", str(source), str(mounted))
    if bind.returncode != 0:
        if IN_CI:
            pytest.fail(f"cannot bind-mount in CI: {bind.stderr}")
        pytest.skip(f"cannot bind-mount here: {bind.stderr.strip()}")
    try:
        yield mounted
    finally:
        subprocess.run(["umount", "-l", str(mounted)], check=False)


def test_a_request_whose_message_came_during_a_long_store_outage_runs_when_the_store_is_back(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
    store_mount: Path,
) -> None:
    settings = dataclasses.replace(rabbitmq_settings, store_dir=store_mount)
    with BackgroundHttpClient(settings) as client:
        info = client.get(counting_server.url("/ok?id=outage"), request_id="outage")
        assert _mount("-o", "remount,ro,bind", str(store_mount)).returncode == 0
        worker = start_worker(settings, threads=1)
        try:
            # Past the 5 tries other internal failures get (the old limit for every failure).
            wait_until(lambda: worker.log_path.read_text(errors="replace").count("Retrying message") >= 6, timeout=150)
            assert "Retries exceeded" not in worker.log_path.read_text(errors="replace")
        finally:
            assert _mount("-o", "remount,rw,bind", str(store_mount)).returncode == 0
        record = client.wait(info.request_id, timeout=90)  # the next try is at most 60 s away
    assert record.status is RequestStatus.COMPLETED
    assert counting_server.hits["outage"] == 1
