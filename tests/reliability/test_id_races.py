"""Creation and removal of one request ID racing each other (issue 11, item 7).

Every interleaving of a submit and a remove of the same ID must leave either
nothing or a whole request (request file *and* status record); a request file
left without a status (a submitter killed half-way) must not block the ID.
Shown with real threads and real processes hammering the same IDs.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.errors import BghttpError

RACES = 3000
URL = "http://127.0.0.1:9/never-sent"  # a StubBroker has no worker: nothing is sent


def _settings(store_dir: Path) -> Settings:
    return Settings(broker_url="amqp://unused/", store_dir=store_dir, fsync=False)


def _client(store_dir: Path, on_conflict: Any = "return") -> BackgroundHttpClient:
    return BackgroundHttpClient(_settings(store_dir), broker=StubBroker(), on_conflict=on_conflict)


def _prepare(store_dir: Path, count: int) -> None:
    with _client(store_dir) as client:
        for index in range(count):
            client.get(URL, request_id=f"race-{index}")


def _torn_ids(store_dir: Path, count: int) -> list[str]:
    """IDs left as a request file without a status record, or a status record without a request file."""
    torn = []
    for index in range(count):
        request_id = f"race-{index}"
        has_request = (store_dir / "requests" / f"{request_id}.json").exists()
        has_status = (store_dir / "status" / f"{request_id}.log").exists()
        if has_request != has_status:
            torn.append(request_id)
    return torn


def _race_role(role: str, store_dir: Path, count: int, wait: Callable[[], Any]) -> int:
    """Submit (``submit``) or remove (``remove``) every race ID in step with the other role; return errors."""
    errors = 0
    with _client(store_dir) as client:
        for index in range(count):
            request_id = f"race-{index}"
            wait()
            try:
                if role == "submit":
                    client.get(URL, request_id=request_id)
                else:
                    client.remove(request_id)
            except BghttpError:
                errors += 1
    return errors


def _process_role(role: str, store_dir: str, count: int, barrier: Any, errors: Any) -> None:
    errors.value = _race_role(role, Path(store_dir), count, barrier.wait)


@pytest.mark.slow
def test_remove_racing_submit_in_threads_leaves_whole_requests_or_nothing(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    _prepare(store_dir, RACES)
    barrier = threading.Barrier(2)
    errors: dict[str, int] = {}

    def run(role: str) -> None:
        errors[role] = _race_role(role, store_dir, RACES, barrier.wait)

    threads = [threading.Thread(target=run, args=(role,)) for role in ("submit", "remove")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    torn = _torn_ids(store_dir, RACES)
    assert len(torn) == 0, f"{len(torn)} of {RACES} races left a torn request: {torn[:5]}"
    assert errors == {"submit": 0, "remove": 0}


@pytest.mark.slow
def test_remove_racing_submit_in_processes_leaves_whole_requests_or_nothing(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    _prepare(store_dir, RACES)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    errors = {role: context.Value("i", -1) for role in ("submit", "remove")}
    processes = [
        context.Process(target=_process_role, args=(role, str(store_dir), RACES, barrier, errors[role]))
        for role in ("submit", "remove")
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    assert [process.exitcode for process in processes] == [0, 0]
    torn = _torn_ids(store_dir, RACES)
    assert len(torn) == 0, f"{len(torn)} of {RACES} races left a torn request: {torn[:5]}"
    assert {role: value.value for role, value in errors.items()} == {"submit": 0, "remove": 0}


def test_a_request_file_left_without_status_does_not_block_its_id(tmp_path: Path) -> None:
    """A submitter killed between the request file and the status record leaves this behind."""
    store_dir = tmp_path / "store"
    with _client(store_dir, on_conflict="reject") as client:
        client.get(URL, request_id="other")  # creates the store layout
        leftover = store_dir / "requests" / "left.json"
        leftover.write_text((store_dir / "requests" / "other.json").read_text().replace('"other"', '"left"'))

        info = client.get(URL, request_id="left")

        assert info.status is RequestStatus.IN_PROGRESS
        record = client.get_request_status("left")
        assert record is not None and record.status is RequestStatus.IN_PROGRESS
        assert "left" in {record.request_id for record in client.list()}
