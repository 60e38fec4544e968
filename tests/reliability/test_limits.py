"""Response size limit and a full disk while a response is written."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings, record_log
from tests.reliability.server import CountingServer
from tests.support import IN_CI, WorkerProcess

LIMIT = 100_000


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.endswith((".part", ".tmp")))


def _check_store_readable(root: Path) -> None:
    for path in root.rglob("*.json"):
        assert isinstance(json.loads(path.read_bytes()), dict), path
    for path in root.rglob("*.log"):
        assert record_log.last_valid(path.read_bytes()) is not None, path


@pytest.mark.rabbitmq
def test_response_over_the_limit_fails_once_and_leaves_no_partial_file(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    settings = dataclasses.replace(rabbitmq_settings, max_response_bytes=LIMIT)
    start_worker(settings, threads=2)
    with BackgroundHttpClient(settings) as client:
        big = client.get(counting_server.url(f"/big?id=big&size={3 * LIMIT}"), request_id="big", retries=3)
        fits = client.get(counting_server.url(f"/big?id=fits&size={LIMIT}"), request_id="fits")
        record = client.wait(big.request_id, timeout=60)
        assert record.status is RequestStatus.FAILED
        assert [a.outcome for a in record.attempts] == ["too_large"]  # not retried
        assert record.last_error and "BGHTTP_MAX_RESPONSE_BYTES" in record.last_error
        assert client.get_response(big.request_id) is None
        assert client.wait(fits.request_id, timeout=60).status is RequestStatus.COMPLETED
        response = client.get_response(fits.request_id)
        assert response is not None and response.read_bytes() == b"x" * LIMIT
    assert counting_server.hits["big"] == 1
    assert _leftovers(settings.store_dir) == []


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for this test (skipped where mounting is not allowed, except in CI)."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        if IN_CI:
            pytest.fail(f"cannot mount a tmpfs in CI: {mounted.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_full_disk_fails_the_attempt_cleanly_and_is_retried(
    small_tmpfs: Path,
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    settings = dataclasses.replace(rabbitmq_settings, store_dir=small_tmpfs / "store")
    start_worker(settings, threads=2)
    with BackgroundHttpClient(settings) as client:
        full = client.get(counting_server.url("/big?id=full&size=3000000"), request_id="full", retries=2)
        record = client.wait(full.request_id, timeout=60)
        assert record.status is RequestStatus.FAILED
        # Each attempt failed on the disk and the normal retries ran.
        assert [a.outcome for a in record.attempts] == ["disk_full"] * 3
        assert record.retries_used == 2
        assert record.last_error and "no space left" in record.last_error
        assert _leftovers(settings.store_dir) == []
        _check_store_readable(settings.store_dir)
        # The store still works: the next request that fits completes.
        small = client.get(counting_server.url("/big?id=small&size=1000"), request_id="small")
        assert client.wait(small.request_id, timeout=60).status is RequestStatus.COMPLETED
    assert counting_server.hits["full"] == 3


@pytest.fixture
def full_responses_dir(tmp_path: Path) -> Iterator[Path]:
    """A store whose ``responses/`` is a small tmpfs filled to the last page (unmounted at teardown).

    Only ``responses/`` is full: the status logs stay writable, so each attempt's
    outcome can be recorded. (A store whose status log cannot be written either
    is a store outage: ``test_attacks_store_outage.py``.)
    """
    store = tmp_path / "store"
    responses = store / "responses"
    responses.mkdir(parents=True, mode=0o700)
    store.chmod(0o700)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(responses)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        if IN_CI:
            pytest.fail(f"cannot mount a tmpfs in CI: {mounted.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        with open(responses / "filler", "wb", buffering=0) as filler, pytest.raises(OSError):  # ENOSPC
            while True:  # to the last page
                filler.write(b"\0" * 4096)
        yield store
    finally:
        subprocess.run(["umount", "-l", str(responses)], check=False)


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_a_small_response_on_a_full_disk_is_disk_full_and_retried(
    full_responses_dir: Path,
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    # A body this small fits the file's write buffer: the disk says no at the
    # flush, and again when the file is closed (that second error was an
    # unexpected OSError: `invalid`, not retried).
    settings = dataclasses.replace(rabbitmq_settings, store_dir=full_responses_dir)
    start_worker(settings, threads=2)
    with BackgroundHttpClient(settings) as client:
        info = client.get(counting_server.url("/ok?id=small"), request_id="small", retries=3)
        record = client.wait(info.request_id, timeout=60)
    assert record.status is RequestStatus.FAILED, record
    assert [a.outcome for a in record.attempts] == ["disk_full"] * 4, record.attempts
    assert record.retries_used == 3
    assert record.last_error and "no space left" in record.last_error, record.last_error
    assert counting_server.hits["small"] == 4
    assert _leftovers(settings.store_dir) == []
