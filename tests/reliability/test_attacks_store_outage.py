"""Attack: the store is unwritable (read-only remount, NFS outage) for longer than half a minute.

A worker that cannot write the store raises; Dramatiq's ``Retries`` runs the
message again 5 times (1, 2, 4, 8, 16 s, each × 1-2 jitter) and then gives it up.
Every request whose message arrived during an outage longer than that stays
``queued`` when the store is back: nothing sends it again until someone runs
``bghttp recover``, and ``wait()`` hangs.
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


@pytest.mark.xfail(
    strict=True,
    reason="design: Dramatiq's Retries gives up a message after 5 store failures (~31-62 s); proposed: retry "
    "StoreError (the store may come back) without limit, with a capped backoff (Retries(retry_when=...,"
    " max_backoff=60 s)); a message that fails for another reason stays bounded to 5",
)
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
            wait_until(lambda: "Retries exceeded" in worker.log_path.read_text(errors="replace"), timeout=90)
        finally:
            assert _mount("-o", "remount,rw,bind", str(store_mount)).returncode == 0
        record = client.wait(info.request_id, timeout=30)  # WaitTimeout today: nothing will send it
    assert record.status is RequestStatus.COMPLETED
    assert counting_server.hits["outage"] == 1
