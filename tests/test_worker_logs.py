"""The log of a real ``bghttp worker`` run: every line JSON, request fields present, secrets absent."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_httpserver import HTTPServer

from bghttp import BackgroundHttpClient, Settings
from bghttp.store import FileStore
from tests.cli.helpers import BghttpWorker
from tests.support import wait_until

SECRETS = {
    "Authorization": "Bearer sk-live-4f9a1c7e2b",
    "Cookie": "session=c00k1e-s3cr3t",
    "Proxy-Authorization": "Basic cHJveHk6cGFzc3dvcmQ=",
    "X-API-Key": "apikey-77d1e0",
}
#: Events that report an attempt's result carry every field operators filter on.
OUTCOME_EVENTS = {"request_completed", "attempt_failed", "request_failed", "request_cancelled"}
OUTCOME_FIELDS = {"request_id", "attempt", "method", "host", "outcome", "status_code", "duration_ms"}


def test_every_line_is_json_with_request_fields_and_no_secret(
    rabbitmq_settings: Settings, httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/ok").respond_with_data("fine")
    httpserver.expect_request("/flaky").respond_with_data("down", status=503)
    log_path = tmp_path / "worker.log"
    # No BGHTTP_LOG_FORMAT: "auto" must choose JSON because the output is a file, not a terminal.
    worker = BghttpWorker(rabbitmq_settings, "--processes", "1", "--threads", "2", log_path=log_path)
    try:
        worker.wait_ready()
        with BackgroundHttpClient(rabbitmq_settings) as client:
            ok = client.get(httpserver.url_for("/ok"), headers=SECRETS).request_id
            flaky = client.post(httpserver.url_for("/flaky"), headers=SECRETS, data={"x": 1}, retries=1).request_id
        store = FileStore(rabbitmq_settings.store_dir)
        wait_until(lambda: all((r := store.read_status(i)) is not None and r.is_terminal for i in (ok, flaky)), 60)
    finally:
        worker.stop()  # shutdown lines are part of the log too

    text = log_path.read_text()
    events = [json.loads(line) for line in text.splitlines()]  # raises on any non-JSON line
    assert events and all(isinstance(event, dict) and "event" in event for event in events)
    assert any("is booting up" in event["event"] for event in events)  # Dramatiq's master line, as JSON
    assert any(event["event"] == "Worker has been shut down." for event in events)
    for secret in SECRETS.values():
        assert secret not in text
    assert "4f9a1c7e2b" not in text and "c00k1e" not in text

    by_request = {request_id: [e for e in events if e.get("request_id") == request_id] for request_id in (ok, flaky)}
    names = {request_id: [e["event"] for e in found] for request_id, found in by_request.items()}
    assert names[ok] == ["attempt_started", "request_completed"]
    assert names[flaky] == ["attempt_started", "attempt_failed", "attempt_started", "request_failed"]
    for found in by_request.values():
        for event in found:
            if event["event"] in OUTCOME_EVENTS:
                assert event.keys() >= OUTCOME_FIELDS, event
            else:
                assert {"request_id", "attempt", "method", "host"} <= event.keys(), event
    # Any event naming a request (dropped messages, recovery …) says what and where.
    for event in events:
        if "request_id" in event:
            assert {"method", "host"} <= event.keys() or event["event"] == "request_recovered", event
    completed = next(e for e in by_request[ok] if e["event"] == "request_completed")
    assert (completed["method"], completed["host"], completed["outcome"], completed["status_code"]) == (
        "GET", httpserver.host, "success", 200,
    )  # fmt: skip
    failed = [e for e in by_request[flaky] if e["event"] in OUTCOME_EVENTS]
    assert [(e["attempt"], e["outcome"], e["status_code"]) for e in failed] == [
        (1, "http_error", 503), (2, "http_error", 503),
    ]  # fmt: skip
    assert all(isinstance(e["duration_ms"], (int, float)) and e["duration_ms"] >= 0 for e in failed)


def test_on_a_terminal_every_line_is_console_text_dramatiqs_too(rabbitmq_settings: Settings) -> None:
    """docs/operations.md: console text on a terminal, JSON otherwise (the test above), for every line."""
    import os
    import pty
    import re
    import select
    import signal
    import subprocess
    import time

    from tests.cli.helpers import bghttp_command, cli_env

    env = cli_env(rabbitmq_settings)  # BGHTTP_LOG_FORMAT unset: "auto"
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*bghttp_command(), "worker", "--processes", "1"],
        stdin=terminal, stdout=terminal, stderr=terminal, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(terminal)
    output = b""
    try:
        deadline = time.monotonic() + 60
        while b"booting up" not in output or b"worker_slots" not in output:
            assert time.monotonic() < deadline, output.decode(errors="replace")
            if select.select([controller], [], [], 1)[0]:
                output += os.read(controller, 65536)
    finally:
        process.send_signal(signal.SIGTERM)
        while process.poll() is None:  # drain: a full terminal buffer would block the worker's exit
            if select.select([controller], [], [], 0.5)[0]:
                try:
                    output += os.read(controller, 65536)
                except OSError:
                    break
        process.wait(timeout=30)
        os.close(controller)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output.decode(errors="replace"))
    lines = [line.strip() for line in plain.splitlines() if line.strip()]
    assert lines and not [line for line in lines if line.startswith("{")], lines
    assert any("worker_slots" in line and "max_in_flight=" in line for line in lines), lines  # a worker process's
    assert any("booting up" in line for line in lines), lines  # Dramatiq's master's
