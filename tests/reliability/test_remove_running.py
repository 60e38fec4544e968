"""Removing a request while a worker runs it (issue 11, item 4).

A removed request's attempt must never write into the store afterwards: not
into a new request that took the same ID, and not as response files of a
request that is gone. A real slow server, and one worker thread (a worker
process, or the client's in-process worker in local mode), so that the next
request's message waits behind the old attempt.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, Phase, RequestStatus, Settings
from tests.reliability.server import CountingServer
from tests.support import wait_until

pytestmark = pytest.mark.slow

# The old attempt is removed while it waits 3 s for the response headers, or
# while it streams a body for about 4 s (40 chunks, 0.1 s apart).
SLOW_PATHS = {
    "headers": "/wait?id={tag}&delay=3",
    "body": "/slow?id={tag}&chunks=40&size=1024&delay=0.1",
}


def _running(client: BackgroundHttpClient, request_id: str) -> bool:
    record = client.get_request_status(request_id)
    return record is not None and record.phase is Phase.RUNNING


@pytest.fixture
def one_thread_client(
    mode: str, mode_settings: Settings, request: pytest.FixtureRequest
) -> Iterator[BackgroundHttpClient]:
    """A client whose requests run on one worker thread."""
    settings = dataclasses.replace(mode_settings, local_threads=1)
    if mode == "rabbitmq":
        request.getfixturevalue("start_worker")(settings, threads=1)
    with BackgroundHttpClient(settings) as client:
        yield client


def _response_files(store_dir: Path, request_id: str) -> list[str]:
    return sorted(path.name for path in (store_dir / "responses").glob(f"{request_id}.*"))


@pytest.mark.parametrize("phase", sorted(SLOW_PATHS))
def test_remove_during_an_attempt_then_resubmit_sends_the_new_request(
    one_thread_client: BackgroundHttpClient, counting_server: CountingServer, phase: str
) -> None:
    client = one_thread_client
    client.get(counting_server.url(SLOW_PATHS[phase].format(tag="old")), request_id="same")
    wait_until(lambda: _running(client, "same") and counting_server.hits["old"] == 1, timeout=30)

    assert client.remove("same") is True
    info = client.get(counting_server.url("/ok?id=new"), request_id="same")
    record = client.wait(info.request_id, timeout=60)

    assert counting_server.hits["new"] == 1, "the new request was never sent"
    assert record.status is RequestStatus.COMPLETED
    assert record.attempt_count == 1
    response = client.get_response("same")
    assert response is not None
    assert response.read_bytes() == b"ok new", "the new request holds the old request's response"


@pytest.mark.parametrize("phase", sorted(SLOW_PATHS))
def test_remove_during_an_attempt_leaves_no_response_files(
    one_thread_client: BackgroundHttpClient, counting_server: CountingServer, phase: str
) -> None:
    client = one_thread_client
    client.get(counting_server.url(SLOW_PATHS[phase].format(tag="gone")), request_id="gone")
    wait_until(lambda: _running(client, "gone") and counting_server.hits["gone"] == 1, timeout=30)

    assert client.remove("gone") is True
    # The only worker thread runs this one once the old attempt has ended.
    after = client.get(counting_server.url("/ok?id=after"), request_id="after")
    assert client.wait(after.request_id, timeout=60).status is RequestStatus.COMPLETED

    assert _response_files(client.store.root, "gone") == []
    assert client.get_request_status("gone") is None
