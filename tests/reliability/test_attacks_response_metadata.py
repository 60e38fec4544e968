"""A response whose metadata cannot be saved (issue 21, items 1 and 3): never a body under another's metadata.

The worker runs under a file-size limit (``RLIMIT_FSIZE``) that a response's
metadata log passes on its second version (the server sends a large header),
while bodies and status records stay small. Attempt 1 saves a 500 answer;
attempt 2's 200 answer is moved into place, its metadata cannot be appended
(EFBIG: ``disk_full``, retried as scheduled), and the request ends ``failed``.
``get_response`` then gave attempt 1's status code and headers (500,
``Content-Length: 11``) with attempt 2's body: the saved response file's
metadata described another body.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.core.outcomes import Outcome
from tests.conftest import settings_env
from tests.reliability.scripted_server import Connection, ScriptedServer
from tests.support import PROJECT_ROOT, WorkerProcess, worker_env

pytestmark = [pytest.mark.rabbitmq]

PAD = 20_000  # bytes of one header: one metadata version fits under the limit, two do not
FILE_SIZE_LIMIT = 30_000


class LimitedWorker(WorkerProcess):
    """A worker group put under ``RLIMIT_FSIZE`` once ready (Dramatiq's start maps larger shared memory);
    its output goes through a pipe (a log file would hit the limit)."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")
        worker = [sys.executable, "-m", "dramatiq", "bghttp.actors", "--processes", "1", "--threads", "2"]
        command = f"{shlex.join(worker)} 2>&1 | cat >> {shlex.quote(str(log_path))}"
        self.process = subprocess.Popen(
            ["sh", "-c", command],
            cwd=PROJECT_ROOT,
            env=worker_env({**settings_env(settings), "BGHTTP_MAX_IN_FLIGHT": "2"}),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def limit_file_size(self) -> None:
        """Put every Python process of the group (master and workers) under the limit."""
        limited = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.getsid(int(entry)) != self.process.pid:
                    continue
                command = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"dramatiq" in command:
                subprocess.run(["prlimit", "--pid", entry, f"--fsize={FILE_SIZE_LIMIT}"], check=True)
                limited += 1
        assert limited >= 2, "no worker process found to limit"


def _answer(connection: Connection) -> None:
    connection.read_request()
    first = connection.server.hits == 1
    status, body = (b"500 Internal Server Error", b"first-body!") if first else (b"200 OK", b"the second answer's body")
    connection.send(
        b"HTTP/1.1 "
        + status
        + b"\r\nX-Pad: "
        + b"p" * PAD
        + b"\r\nContent-Length: %d\r\n" % len(body)
        + b"Connection: close\r\n\r\n"
        + body
    )


def test_a_body_is_never_left_under_another_answers_metadata(rabbitmq_settings: Settings, tmp_path: Path) -> None:
    with ScriptedServer(_answer) as server, BackgroundHttpClient(rabbitmq_settings) as client:
        worker = LimitedWorker(rabbitmq_settings, tmp_path / "worker.log")
        try:
            worker.wait_ready()
            worker.limit_file_size()
            client.get(server.url("/x"), request_id="padded", retries=1)
            record = client.wait("padded", timeout=60)
        finally:
            worker.stop()
        response = client.get_response("padded")
    assert server.hits == 2
    assert record.status is RequestStatus.FAILED
    assert [a.outcome for a in record.attempts] == [Outcome.HTTP_ERROR, Outcome.DISK_FULL], record.attempts
    if response is not None:  # a response is left only whole: its body is the one its metadata describes
        path = Path(response.response_file_path)
        body = path.read_bytes() if path.exists() else None
        described = (response.status_code, response.headers.get("content-length"))
        assert body is not None and str(len(body)) == described[1], (described, body)
