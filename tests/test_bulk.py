"""Bulk submit (``client.submit_many``) against real RabbitMQ, a real worker and a real HTTP server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pika
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from bghttp import (
    BackgroundHttpClient,
    BrokerUnavailable,
    BulkRequest,
    InvalidRequest,
    MultipartFile,
    RequestStatus,
    Settings,
)
from tests.support import RABBITMQ_URL, WorkerProcess, free_port, queue_counts, wait_until


def _echo(request: Request) -> Response:
    payload = {"method": request.method, "n": request.args.get("n"), "body": request.get_data(as_text=True)}
    return Response(json.dumps(payload), content_type="application/json")


def _stored_ids(store_dir: Path) -> set[str]:
    found: set[str] = set()
    for sub in ("requests", "status", "bodies"):
        directory = store_dir / sub
        if directory.exists():
            found |= {p.name.split(".")[0] for p in directory.iterdir()}
    return found


def _queue_depth(queue_name: str) -> int:
    return queue_counts(queue_name)[0]


@pytest.mark.rabbitmq
def test_every_request_of_a_bulk_submit_runs(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    client: BackgroundHttpClient,
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/echo").respond_with_handler(_echo)
    url = httpserver.url_for("/echo")
    requests: list[BulkRequest | dict[str, object]] = []
    for n in range(40):
        if n % 2:
            requests.append(BulkRequest("POST", url, data={"n": n}, query_parameters={"n": n}))
        else:
            requests.append({"method": "GET", "url": url, "query_parameters": {"n": n}, "request_id": f"bulk-{n}"})

    infos = client.submit_many(requests)

    assert len(infos) == 40
    assert [i.request_id for i in infos[::2]] == [f"bulk-{n}" for n in range(0, 40, 2)]
    assert all(info.request_file_path.exists() and info.status is RequestStatus.IN_PROGRESS for info in infos)
    start_worker(rabbitmq_settings, threads=4)
    for n, info in enumerate(infos):
        record = client.wait(info.request_id, timeout=60)
        assert record.status is RequestStatus.COMPLETED
        response = client.get_response(info.request_id)
        assert response is not None
        echoed = response.json()
        assert echoed["n"] == str(n)
        assert echoed["method"] == ("POST" if n % 2 else "GET")
        if n % 2:
            assert json.loads(echoed["body"]) == {"n": n}
    # One message per request: each ran exactly once.
    assert len(httpserver.log) == 40
    assert all(client.get_request_status(i.request_id).attempt_count == 1 for i in infos)  # type: ignore[union-attr]


@pytest.mark.rabbitmq
def test_an_invalid_item_stores_nothing(client: BackgroundHttpClient, rabbitmq_settings: Settings) -> None:
    good = {"method": "GET", "url": "http://127.0.0.1:9/ok"}
    with pytest.raises(InvalidRequest):
        client.submit_many([good, good, {"method": "GET", "url": "ftp://127.0.0.1/nope"}])
    with pytest.raises(InvalidRequest, match="twice"):
        client.submit_many([{**good, "request_id": "same"}, {**good, "request_id": "same"}])
    assert _stored_ids(rabbitmq_settings.store_dir) == set()


def test_an_unreachable_broker_accepts_nothing_and_leaves_nothing(tmp_path: Path) -> None:
    settings = Settings(broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/", store_dir=tmp_path / "store")
    with BackgroundHttpClient(settings) as client, pytest.raises(BrokerUnavailable):
        client.submit_many([{"method": "GET", "url": f"http://127.0.0.1:9/{n}"} for n in range(10)])
    assert _stored_ids(settings.store_dir) == set()


@pytest.mark.rabbitmq
def test_a_batch_rabbitmq_cannot_route_is_rolled_back(
    client: BackgroundHttpClient, rabbitmq_settings: Settings
) -> None:
    first = client.submit_many([{"method": "GET", "url": "http://127.0.0.1:9/first", "request_id": "kept"}])
    assert _queue_depth(rabbitmq_settings.queue_name) == 1
    # The queue vanishes behind the client's back: RabbitMQ returns every message.
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    connection.channel().queue_delete(rabbitmq_settings.queue_name)
    connection.close()

    with pytest.raises(BrokerUnavailable):
        lost = [{"method": "GET", "url": f"http://127.0.0.1:9/{n}", "request_id": f"lost-{n}"} for n in range(5)]
        client.submit_many(lost)

    assert _stored_ids(rabbitmq_settings.store_dir) == {first[0].request_id}


@pytest.mark.rabbitmq
def test_an_existing_id_is_returned_not_sent_again(
    client: BackgroundHttpClient, rabbitmq_settings: Settings
) -> None:
    client.submit_many([{"method": "GET", "url": "http://127.0.0.1:9/a", "request_id": "dup"}])
    client.cancel("dup")
    infos = client.submit_many(
        [{"method": "GET", "url": "http://127.0.0.1:9/a", "request_id": "dup"}, {"method": "GET", "url": "http://127.0.0.1:9/b"}],
    )
    assert infos[0].status is RequestStatus.CANCELLED
    assert infos[1].status is RequestStatus.IN_PROGRESS
    # Two messages in all: the first batch's one and the new request's; none for the existing ID.
    wait_until(lambda: _queue_depth(rabbitmq_settings.queue_name) == 2, timeout=10)


def test_local_mode_publishes_one_by_one_and_runs_everything(tmp_path: Path, httpserver: HTTPServer) -> None:
    """The embedded broker has no transactions: ``submit_many`` falls back to one publish per request."""
    httpserver.expect_request("/echo").respond_with_handler(_echo)
    settings = Settings(broker_url="local", store_dir=tmp_path / "store", fsync=False)
    with BackgroundHttpClient(settings) as client:
        url = httpserver.url_for("/echo")
        upload = tmp_path / "upload.txt"
        upload.write_text("file content 42")
        requests = [BulkRequest("GET", url, query_parameters={"n": n}) for n in range(5)]
        files = {"upload": MultipartFile(upload)}
        requests.append(BulkRequest("POST", url, query_parameters={"n": 5}, files=files, multipart=True))
        infos = client.submit_many(requests)
        for n, info in enumerate(infos):
            assert client.wait(info.request_id, timeout=60).status is RequestStatus.COMPLETED
            echoed = client.get_response(info.request_id).json()  # type: ignore[union-attr]
            assert echoed["n"] == str(n)
        assert "file content 42" in echoed["body"]


@pytest.mark.rabbitmq
def test_a_dead_connection_is_replaced_and_the_batch_committed(
    client: BackgroundHttpClient, rabbitmq_settings: Settings
) -> None:
    client.submit_many([{"method": "GET", "url": "http://127.0.0.1:9/warm-up"}])
    client.broker.connection.close()  # type: ignore[attr-defined]  # as a broker restart would leave it
    infos = client.submit_many([{"method": "GET", "url": f"http://127.0.0.1:9/{n}"} for n in range(3)])
    assert len(infos) == 3
    assert _queue_depth(rabbitmq_settings.queue_name) == 4
