"""A full disk while a worker records an attempt: ``disk_full``, retried on the schedule, never "the worker stopped".

A real worker group on a store of its own small tmpfs. The disk is filled (a
file of the test's) at the moment the worker records something of an attempt:

* when it records the attempt's outcome (the server's answer has come): the
  outcome cannot be written, Dramatiq runs the message again, and the run that
  closes the attempt once there is room again must say that its outcome could not
  be saved, not that "the worker stopped during this attempt" (no worker stopped);
* when it marks the attempt sent, before its first byte (the server holds the
  TLS handshake until the disk is full): the attempt is ``disk_full``, not sent,
  not ``store_error``.

Every status line is longer than a tmpfs page (the request's ``metadata``
pads it), so every append to a status record needs a new page: on the full
disk each one fails, wherever the file ends.
"""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.reliability.full_disk import fill_leaving, mounted_tmpfs
from tests.reliability.scripted_server import Connection, ScriptedServer
from tests.support import PROJECT_ROOT, WorkerProcess, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.rabbitmq]

#: Makes each version of the status record longer than a page (4 KiB).
PADDING = {"pad": "x" * 3900}


@pytest.fixture
def tmpfs_store(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tmpfs", "4m") as mountpoint:
        yield mountpoint


def _store_settings(settings: Settings, mountpoint: Path) -> Settings:
    return dataclasses.replace(settings, store_dir=mountpoint / "store")


def _wait_for_failed_run(worker: WorkerProcess) -> None:
    """Until Dramatiq has taken the message back for another run (the run raised: a write failed)."""
    wait_until(lambda: "Retrying message" in worker.log_path.read_text(errors="replace"), timeout=60)


def _status_json(settings: Settings, request_id: str) -> dict[str, object]:
    """``bghttp status --json ID``, as a user reads it."""
    env = {**os.environ, "BGHTTP_STORE_DIR": str(settings.store_dir), "BGHTTP_QUEUE": settings.queue_name}
    env["BGHTTP_BROKER_URL"] = settings.broker_url
    done = subprocess.run(
        [sys.executable, "-m", "bghttp.cli", "status", "--json", request_id],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    parsed = json.loads(done.stdout)
    return parsed[0] if isinstance(parsed, list) else parsed  # type: ignore[no-any-return]


def test_an_attempt_whose_outcome_could_not_be_written_is_not_closed_as_a_stopped_worker(
    tmpfs_store: Path, rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = _store_settings(rabbitmq_settings, tmpfs_store)
    filler: list[Path] = []

    def fill_then_answer(conn: Connection) -> None:
        conn.read_request()
        if conn.server.hits == 1:  # the answer comes, and the disk is full when it is saved and recorded
            filler.append(fill_leaving(tmpfs_store, 0))
            conn.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno")
            return
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with ScriptedServer(fill_then_answer) as server:
        worker = start_worker(settings, threads=1)
        with BackgroundHttpClient(settings) as client:
            info = client.get(server.url("/item"), retries=2, metadata=PADDING, timeout=30)
            _wait_for_failed_run(worker)
            filler[0].unlink()  # room again: the next run closes the attempt
            record = client.wait(info.request_id, timeout=60)
        hits = server.hits
    shown = _status_json(settings, info.request_id)
    first = record.attempts[0]
    assert "worker stopped" not in (first.error or ""), (first, shown)
    assert first.outcome == "disk_full", first.error
    assert first.error and "could not be saved" in first.error, first
    assert first.counted and first.sent_at is not None
    assert [a.outcome for a in record.attempts] == ["disk_full", "success"], record.attempts
    assert record.status is RequestStatus.COMPLETED and record.retries_used == 1
    # On the schedule: the retry was due 2 s × scale after the attempt ended.
    assert record.attempts[1].due_at == pytest.approx(first.finished_at + 2 * settings.backoff_scale, abs=0.001)
    assert hits == 2
    attempts_shown = shown["attempts"]
    assert isinstance(attempts_shown, list) and attempts_shown[0]["outcome"] == "disk_full", shown


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_a_full_disk_when_the_attempt_is_marked_sent_is_disk_full_and_retried(
    tmp_path: Path, tmpfs_store: Path, rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = _store_settings(rabbitmq_settings, tmpfs_store)
    cert, key = _certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    filler: list[Path] = []

    def fill_during_handshake(conn: Connection) -> None:
        # The worker marked the attempt running before it connected; it marks it sent after
        # the handshake, just before its first byte. The disk fills in between.
        if not filler:
            filler.append(fill_leaving(tmpfs_store, 0))
        conn.sock = context.wrap_socket(conn.sock, server_side=True)
        try:
            conn.read_request()
        except (ConnectionError, ssl.SSLError, OSError):
            return  # the worker closed the connection without sending
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with ScriptedServer(fill_during_handshake) as server:
        worker = start_worker(settings, threads=1, extra_env={"SSL_CERT_FILE": str(cert)})
        with BackgroundHttpClient(settings) as client:
            url = f"https://127.0.0.1:{server.port}/item"
            info = client.get(url, retries=2, metadata=PADDING, timeout=30)
            _wait_for_failed_run(worker)
            filler[0].unlink()
            record = client.wait(info.request_id, timeout=60)
        hits = server.hits
    first = record.attempts[0]
    assert first.outcome == "disk_full", first.error
    assert first.error and first.error.startswith("not sent:") and "No space left" in first.error, first
    assert first.sent_at is None
    assert [a.outcome for a in record.attempts] == ["disk_full", "success"], record.attempts
    assert record.status is RequestStatus.COMPLETED and record.retries_used == 1
    assert record.attempts[1].due_at == pytest.approx(first.finished_at + 2 * settings.backoff_scale, abs=0.001)
    assert hits == 1  # the first attempt sent nothing
