"""``metadata`` on every submit path: kept with the request, shown in status and listings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bghttp import AsyncBackgroundHttpClient, BackgroundHttpClient, BulkRequest, Settings
from bghttp.errors import InvalidRequest
from tests.cli.helpers import json_output, run_cli
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess

ORDER = {"order_id": "7", "tenant": "acme", "tags": ["a", "b"], "priority": 2}


def test_metadata_round_trips_on_every_submit_path(
    client: BackgroundHttpClient, worker: WorkerProcess | None, counting_server: CountingServer
) -> None:
    url = counting_server.url("/ok")
    single = client.post(url, data={"x": 1}, metadata=ORDER)
    listed = client.submit_many(
        [BulkRequest("GET", url, metadata={"n": 1}), {"method": "GET", "url": url, "metadata": {"n": 2}}]
    )

    async def submit_async() -> str:
        aio = AsyncBackgroundHttpClient(client=client)
        info = await aio.get(url, metadata={"via": "async"})
        return info.request_id

    async_id = asyncio.run(submit_async())

    expected = {single.request_id: ORDER, listed[0].request_id: {"n": 1}, listed[1].request_id: {"n": 2},
                async_id: {"via": "async"}}  # fmt: skip
    for request_id, metadata in expected.items():
        assert client.wait(request_id, timeout=30).metadata == metadata
    assert {record.request_id: record.metadata for record in client.list()} == expected


def test_metadata_is_a_small_json_object(client: BackgroundHttpClient, store_dir: Path) -> None:
    for bad, reason in [
        ("order-7", "must be a JSON object"),
        ({1: "x"}, "keys must be strings"),
        ({"when": object()}, "cannot be encoded as JSON"),
        ({"big": "x" * 4096}, "at most 4096"),
    ]:
        with pytest.raises(InvalidRequest, match=reason):
            client.get("http://127.0.0.1:9/", metadata=bad, request_id="never-stored")
    assert client.get_request_status("never-stored") is None
    with pytest.raises(InvalidRequest, match="metadata cannot be encoded as JSON"):
        client.submit_many(
            [BulkRequest("GET", "http://127.0.0.1:9/", request_id="bulk-never-stored"),
             BulkRequest("GET", "http://127.0.0.1:9/", metadata={"x": float("inf")})]
        )  # fmt: skip
    assert client.get_request_status("bulk-never-stored") is None


def test_cli_meta_is_shown_by_status_and_ls(
    rabbitmq_settings: Settings, worker_for_cli: WorkerProcess, counting_server: CountingServer
) -> None:
    submitted = run_cli(
        rabbitmq_settings, "get", counting_server.url("/ok"), "--meta", "order_id=7", "--meta", "note=a=b", "--wait"
    )
    assert submitted.returncode == 0, submitted.stderr
    request_id = submitted.stdout.strip()

    status = json_output(run_cli(rabbitmq_settings, "status", request_id, "--json"))
    listing = json_output(run_cli(rabbitmq_settings, "ls", "--json"))
    text = run_cli(rabbitmq_settings, "status", request_id).stdout

    assert status["metadata"] == {"order_id": "7", "note": "a=b"}
    assert [row["metadata"] for row in listing] == [{"order_id": "7", "note": "a=b"}]
    assert 'metadata          {"note": "a=b", "order_id": "7"}' in text
    refused = run_cli(rabbitmq_settings, "get", counting_server.url("/ok"), "--meta", "no-equals-sign")
    assert refused.returncode == 2 and "--meta needs KEY=VALUE" in refused.stderr


@pytest.fixture
def worker_for_cli(rabbitmq_settings: Settings, start_worker: object) -> WorkerProcess:
    worker: WorkerProcess = start_worker(rabbitmq_settings)  # type: ignore[operator]
    return worker
