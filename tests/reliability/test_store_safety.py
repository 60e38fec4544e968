"""Broker down at submit, file permissions of a whole store, secrets kept out of logs."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, BrokerUnavailable, MultipartFile, RequestStatus, Settings
from bghttp.logs import REDACTED, _redact
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess, free_port

SECRET = "s3cret-token-value-42"


def _store_files(root: Path) -> list[Path]:
    """Files of requests (the store's ID lock files and removal marks are no part of any request)."""
    return [path for path in root.rglob("*") if path.is_file() and path.parent.name not in ("locks", "removed")]


def test_broker_unreachable_at_submit_leaves_nothing(tmp_path: Path) -> None:
    """A closed port instead of RabbitMQ: the submit raises and the store keeps nothing."""
    settings = Settings(
        broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        store_dir=tmp_path / "store",
        queue_name="bghttp-unreachable",
        fsync=False,
    )
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"file content")
    with BackgroundHttpClient(settings) as client:
        with pytest.raises(BrokerUnavailable):
            client.post("http://127.0.0.1:9/x", data={"a": 1}, request_id="with-body")
        with pytest.raises(BrokerUnavailable):
            client.post_multipart("http://127.0.0.1:9/x", fields={"f": "v"}, files={"file": upload})
        with pytest.raises(BrokerUnavailable):
            client.get("http://127.0.0.1:9/x")
        assert client.get_request_status("with-body") is None
        assert client.list() == []
    assert _store_files(settings.store_dir) == []


@pytest.fixture
def open_umask() -> Iterator[None]:
    """Umask 0 for the client and the worker it starts: modes must not depend on it."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.rabbitmq
def test_every_store_file_is_private_and_secrets_stay_out_of_logs(
    open_umask: None,
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
    tmp_path: Path,
) -> None:
    worker = start_worker(rabbitmq_settings, threads=2, extra_env={"BGHTTP_LOG_LEVEL": "DEBUG"})
    upload = tmp_path / "upload.txt"
    upload.write_text("multipart file")
    secret_headers = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET}
    with BackgroundHttpClient(rabbitmq_settings) as client:
        ids = [
            client.post(counting_server.url("/ok?id=body"), data={"k": "v"}, headers=secret_headers).request_id,
            client.post_multipart(
                counting_server.url("/ok?id=multi"),
                fields={"a": "b"},
                files={"f": MultipartFile(upload, content_type="text/plain")},
                headers=secret_headers,
            ).request_id,
            # A failing request logs its error and retries: more log lines to check.
            client.get(counting_server.url("/flaky?id=flaky&fail=1"), headers=secret_headers, retries=1).request_id,
        ]
        for request_id in ids:
            assert client.wait(request_id, timeout=60).status is RequestStatus.COMPLETED

    root = rabbitmq_settings.store_dir
    entries = [root, *root.rglob("*")]
    for request_id in ids:  # each request left its request, status, response body and metadata files
        for path in (f"requests/{request_id}.json", f"status/{request_id}.log", f"responses/{request_id}.body",
                     f"responses/{request_id}.meta.log"):
            assert (root / path).is_file(), path
    assert len(entries) >= 20  # plus the store's directories, a request body and the multipart copies
    wrong = {
        str(path): oct(stat.S_IMODE(path.stat().st_mode))
        for path in entries
        if stat.S_IMODE(path.stat().st_mode) != (0o700 if path.is_dir() else 0o600)
    }
    assert wrong == {}
    # The secret is at rest in the (private) request file, but in no log line.
    assert any(SECRET in path.read_text(errors="replace") for path in (root / "requests").iterdir())
    log = worker.log_path.read_text(errors="replace")
    assert "attempt_failed" in log and "request_completed" in log
    assert SECRET not in log


def test_log_processor_redacts_secret_headers_and_fields() -> None:
    event = _redact(
        None,
        "info",
        {
            "event": "x",
            "headers": [("Authorization", SECRET), ("X-Auth-Token", SECRET), ("Accept", "text/plain")],
            "authorization": SECRET,
            "cookie": SECRET,
        },
    )
    assert SECRET not in json.dumps(dict(event))
    assert ("Accept", "text/plain") in event["headers"]
    assert event["authorization"] == REDACTED
