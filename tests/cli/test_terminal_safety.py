"""Server-controlled bytes never reach the operator's terminal raw; ``--json`` keeps them exact.

A loopback server answers with a reason phrase and header values holding ESC,
BEL, an OSC 52 clipboard write, a title change, a clear-screen and cursor
moves, C1 controls; the request URL holds bidi overrides. The real CLI
(local mode's outcome line, ``status``, ``response``, ``wait``, ``ls``) must
show each of them escaped and visible, and ``--json`` must round-trip them.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bghttp import Settings
from tests.cli.helpers import json_output, run_cli

CLEAR_SCREEN = "\x1b[2J"
OSC52 = "\x1b]52;c;ZXZpbA==\x07"  # "evil" into the clipboard
TITLE = "\x1b]0;pwned\x07"
CURSOR_UP = "\x1b[10A"
REASON = f"Oops{CLEAR_SCREEN}{TITLE}\x07"
#: C1 controls too (CSI, NEL): h11 takes bytes 0x80-0xFF in a header value as obs-text.
HEADER_VALUE = f"v{OSC52}{CURSOR_UP}\x9b2J\x85"
#: Bidi overrides, isolates and marks in the URL's path (bghttp refuses controls in a URL, not these).
URL_TAIL = "/a\u202egnp.exe\u2066\u2069\u200e\u200f"

#: What must never be printed raw: C0 controls but newline, DEL, C1 controls, bidi controls.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class EvilServer:
    """Answers every request with ``status`` and the hostile reason phrase and headers."""

    def __init__(self, status: int) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = b"fine"
                self.send_response(status, REASON)
                self.send_header("X-Evil", HEADER_VALUE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{URL_TAIL}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return Settings(broker_url="local", store_dir=tmp_path / "store", fsync=False)


@pytest.fixture(params=[200, 500])
def finished(request: pytest.FixtureRequest, local_settings: Settings) -> Iterator[tuple[str, str]]:
    """(request ID, local mode's stderr) of a request that ran against the hostile server."""
    server = EvilServer(request.param)
    try:
        result = run_cli(local_settings, "--local", "get", server.url(), "--id", f"evil-{request.param}")
        assert result.returncode in (0, 1), result.stderr
        yield f"evil-{request.param}", result.stdout + result.stderr
    finally:
        server.close()


def _assert_safe(text: str) -> None:
    raw = sorted({f"U+{ord(c):04X}" for c in UNSAFE.findall(text)})
    assert not raw, f"raw control characters printed: {raw}\n{text!r}"


def test_local_outcome_line_is_escaped(finished: tuple[str, str]) -> None:
    request_id, output = finished

    _assert_safe(output)
    assert request_id in output


def test_console_logs_escape_server_text(local_settings: Settings) -> None:
    server = EvilServer(500)
    try:
        result = run_cli(local_settings, "--local", "get", server.url(), env={"BGHTTP_LOG_FORMAT": "console"})
    finally:
        server.close()

    assert "request_failed" in result.stderr, result.stderr
    _assert_safe(result.stdout + result.stderr.replace("\x1b[", ""))  # less the console renderer's own colours
    assert "Oops" in result.stderr and "pwned" in result.stderr


def test_human_reads_escape_server_text(local_settings: Settings, finished: tuple[str, str]) -> None:
    request_id, _ = finished
    outputs = {
        "status": run_cli(local_settings, "status", request_id),
        "response": run_cli(local_settings, "response", request_id),
        "wait": run_cli(local_settings, "wait", request_id),
        "ls": run_cli(local_settings, "ls"),
    }
    for command, result in outputs.items():
        assert result.returncode in (0, 1), (command, result.stderr)
        _assert_safe(result.stdout + result.stderr)
    # Visible, not dropped: an operator sees that the server sent something odd.
    assert "\\x1b]52;c;ZXZpbA==\\x07" in outputs["response"].stdout, outputs["response"].stdout
    assert "\\u202e" in outputs["status"].stdout, outputs["status"].stdout
    assert "\\x9b2J" in outputs["response"].stdout, outputs["response"].stdout
    assert "\\u202e" in outputs["ls"].stdout or "…" in outputs["ls"].stdout
    if request_id.endswith("500"):
        assert "\\x1b[2J" in outputs["status"].stdout, outputs["status"].stdout
        assert "\\x1b[2J" in outputs["wait"].stdout, outputs["wait"].stdout


def test_json_output_stays_exact(local_settings: Settings, finished: tuple[str, str]) -> None:
    request_id, _ = finished

    status = json_output(run_cli(local_settings, "status", request_id, "--json"))
    response = json_output(run_cli(local_settings, "response", request_id, "--json"))
    listed = json_output(run_cli(local_settings, "ls", "--json"))

    assert status["url"].endswith(URL_TAIL)
    assert ["X-Evil", HEADER_VALUE] in response["headers"]
    assert [item["url"] for item in listed] == [status["url"]]
    if request_id.endswith("500"):
        assert REASON in status["last_error"]


def test_body_stays_raw(local_settings: Settings, finished: tuple[str, str]) -> None:
    request_id, _ = finished

    result = run_cli(local_settings, "response", request_id, "--body")

    assert result.stdout == "fine"


def test_error_lines_are_escaped(local_settings: Settings) -> None:
    result = run_cli(local_settings, "status", f"x{CLEAR_SCREEN}")

    assert result.returncode != 0
    _assert_safe(result.stderr)


def test_json_documents_are_valid_json(local_settings: Settings, finished: tuple[str, str]) -> None:
    request_id, _ = finished
    result = run_cli(local_settings, "response", request_id, "--json")

    assert json.loads(result.stdout)["request_id"] == request_id
