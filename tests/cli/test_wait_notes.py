"""``bghttp wait`` says what it waits for: on a terminal (a real pty) or with ``--progress``, one line per change."""

from __future__ import annotations

import dataclasses
import http.server
import io
import os
import pty
import select
import subprocess
import threading
import time
from collections.abc import Callable

import pytest

from bghttp import BackgroundHttpClient, Settings
from bghttp.cli.wait_notes import WaitNotes
from bghttp.cli.workers import visible
from bghttp.models import AttemptRecord, Phase, RequestStatus, StatusRecord
from bghttp.worker.retry_policy import Outcome
from tests.cli.helpers import bghttp_command, cli_env, run_cli
from tests.reliability.server import CountingServer
from tests.support import PROJECT_ROOT, WorkerProcess

pytestmark = pytest.mark.rabbitmq


def told(lines: list[str], prefix: str, *, at_most: float) -> bool:
    """Exactly one line is ``prefix`` + "N s", with N the seconds left (up to ``at_most``) when it was seen."""
    [line] = [line for line in lines if line.startswith(prefix)] or [""]
    left = line.removeprefix(prefix).removesuffix(" s")
    return bool(line) and 0 <= float(left) <= at_most


class TerminalWait:
    """``bghttp wait`` with stderr on a pseudo-terminal, started now, read to its end by ``finish``."""

    def __init__(self, settings: Settings, request_id: str) -> None:
        self.controller, terminal = pty.openpty()
        self.process = subprocess.Popen(
            [*bghttp_command(), "wait", request_id],
            stdout=subprocess.PIPE,
            stderr=terminal,
            env=cli_env(settings),
            cwd=PROJECT_ROOT,
        )
        os.close(terminal)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        """(exit code, stdout, what the terminal showed)."""
        shown = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.controller, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            elif self.process.poll() is not None:
                break
        os.close(self.controller)
        assert self.process.stdout is not None
        stdout = self.process.stdout.read().decode()
        code = self.process.wait(timeout=10)
        return code, stdout, shown.decode(errors="replace")


def test_on_a_terminal_wait_tells_each_failed_attempt_and_its_retry_once(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    settings = dataclasses.replace(rabbitmq_settings, backoff_scale=0.5)  # retries 1 s and 2 s after a failure
    with BackgroundHttpClient(settings) as client:
        request_id = client.get(counting_server.url("/flaky?id=a&fail=2"), retries=4).request_id
    waiting = TerminalWait(settings, request_id)  # before any worker: it sees every change
    start_worker(settings)
    code, stdout, shown = waiting.finish()
    assert (code, stdout) == (0, f"{request_id} completed (HTTP 200)\n"), shown
    lines = [line.split("\x1b[K")[-1] for line in shown.replace("\r\n", "\n").split("\n")]
    assert told(lines, "attempt 1 failed (HTTP 503); retry 1 of 4 in ", at_most=1), shown
    assert told(lines, "attempt 2 failed (HTTP 503); retry 2 of 4 in ", at_most=2), shown
    assert lines.count("attempt 3 running") <= 1, shown


def test_without_a_terminal_wait_is_quiet_unless_asked_with_progress(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    settings = dataclasses.replace(rabbitmq_settings, backoff_scale=0.5)
    with BackgroundHttpClient(settings) as client:
        request_id = client.get(counting_server.url("/flaky?id=q&fail=1"), retries=2).request_id

    def wait(*args: str) -> subprocess.Popen[str]:
        command = [*bghttp_command(), "wait", request_id, *args]
        pipe = subprocess.PIPE
        return subprocess.Popen(command, stdout=pipe, stderr=pipe, text=True, env=cli_env(settings))

    quiet, narrated = wait(), wait("--progress")
    start_worker(settings)
    _, quiet_err = quiet.communicate(timeout=60)
    _, told_err = narrated.communicate(timeout=60)
    assert quiet.returncode == narrated.returncode == 0
    assert "attempt" not in quiet_err, quiet_err
    assert told(told_err.splitlines(), "attempt 1 failed (HTTP 503); retry 1 of 2 in ", at_most=1), told_err


def test_wait_tells_since_when_it_waits_for_the_network(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    settings = rabbitmq_settings
    start_worker(
        settings,
        extra_env={
            "BGHTTP_NETWORK_INTERFACES": "bghttp-none0",  # no machine has it: the worker is offline
            "BGHTTP_OFFLINE_AFTER_FAILURES": "1",
            "BGHTTP_CONNECTIVITY_INTERVAL": "0.2",
        },
    )
    with BackgroundHttpClient(settings) as client:
        request_id = client.get(counting_server.url("/ok?id=n"), retries=0).request_id
    result = run_cli(settings, "wait", request_id, "--progress", "--timeout", "4")
    assert result.returncode == 5, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("waiting for the network since ")]
    assert len(lines) == 1, result.stderr
    assert counting_server.hits["n"] == 0


def test_visible_escapes_what_a_terminal_would_act_on() -> None:
    assert visible("plain text: ok") == "plain text: ok"
    assert visible("a\x1b[2Jb\x07c\x9bd") == "a\\x1b[2Jb\\x07c\\x9bd"
    assert visible("x\u202ey\u2066z") == "x\\u202ey\\u2066z"
    # The CLI's one escaping function (quoting.terminal_safe): a newline is shown, a backslash left alone.
    assert visible("back\\slash\nnew") == "back\\slash\\nnew"


class _RetryAfter(http.server.BaseHTTPRequestHandler):
    """503 with ``Retry-After: 170``: the next attempt is due in 2 min 50 s."""

    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Retry-After", "170")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_retry_minutes_away_is_told_in_whole_minutes_and_seconds(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Seen: "retry 1 of 1 in 3 min 50 s" for a retry due in 170 s (the minutes were rounded,
    # not floored: 170 / 60 = 2.83); the default schedule's 512 s read "9 min 32 s".
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RetryAfter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start_worker(rabbitmq_settings)
        with BackgroundHttpClient(rabbitmq_settings) as client:
            url = f"http://127.0.0.1:{server.server_address[1]}/later"
            request_id = client.get(url, retries=1).request_id
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                record = client.get_request_status(request_id)
                if record is not None and record.next_attempt_at is not None:
                    break
                time.sleep(0.05)
        result = run_cli(rabbitmq_settings, "wait", request_id, "--progress", "--timeout", "1")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 5, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("attempt 1 failed")]
    prefix = "attempt 1 failed (HTTP 503); retry 1 of 1 in "
    assert line.startswith(prefix + "2 min "), line
    seconds = int(line.removeprefix(prefix + "2 min ").removesuffix(" s"))
    assert 40 <= seconds <= 50, line


@pytest.mark.parametrize(
    ("seconds_left", "told_as"),
    [(512.0, "8 min 32 s"), (170.0, "2 min 50 s"), (179.7, "3 min 0 s"), (120.0, "2 min 0 s"), (3600.0, "60 min 0 s")],
)
def test_the_retry_delay_is_told_in_minutes_and_seconds(seconds_left: float, told_as: str) -> None:
    now = 1_800_000_000.0
    attempt = AttemptRecord(number=1, started_at=now - 1, finished_at=now, outcome=Outcome.HTTP_ERROR, status_code=500)
    record = StatusRecord(
        request_id="r",
        status=RequestStatus.IN_PROGRESS,
        phase=Phase.WAITING_RETRY,
        created_at=now - 2,
        updated_at=now,
        max_retries=10,
        retries_used=9,
        next_attempt_at=now + seconds_left,
        attempts=(attempt,),
    )
    stream = io.StringIO()
    WaitNotes(Settings(broker_url="local"), stream, narrate=True, read_workers=list, clock=lambda: now).update(record)
    assert stream.getvalue() == f"attempt 1 failed (HTTP 500); retry 9 of 10 in {told_as}\n"


class _CutShort(http.server.BaseHTTPRequestHandler):
    """200 with a body promised 100 bytes long and cut after 10: the attempt fails after its head."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_attempt_that_failed_after_a_200_head_is_told_by_its_error_not_its_status(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Seen: "attempt 1 failed (HTTP 200); retry 1 of 1 in 10 s": the status code was shown as
    # the reason whenever the attempt had one, though the body was cut short after a 200.
    settings = dataclasses.replace(rabbitmq_settings, backoff_scale=5.0)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        start_worker(settings)
        with BackgroundHttpClient(settings) as client:
            request_id = client.get(f"http://127.0.0.1:{server.server_address[1]}/cut", retries=1).request_id
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                record = client.get_request_status(request_id)
                if record is not None and record.next_attempt_at is not None:
                    break
                time.sleep(0.05)
        result = run_cli(settings, "wait", request_id, "--progress", "--timeout", "1")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 5, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("attempt 1 failed")]
    assert not line.startswith("attempt 1 failed (HTTP 200)"), line
    assert "response body" in line and "retry 1 of 1 in " in line, line
