"""The CLI as a shell user expects it: ``id=$(bghttp post …)``, exit codes, curl's ``-d``.

Every test runs the real console script as a subprocess, with a real worker
process (RabbitMQ) or in local mode, against a loopback HTTP server.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker
from pytest_httpserver import HTTPServer
from werkzeug import Request

from bghttp import BackgroundHttpClient, Settings
from bghttp.store import FileStore
from tests.cli.conftest import Cli
from tests.cli.helpers import SlowBodyServer, assert_one_line_error, bghttp_command, cli_env, run_cli
from tests.support import PROJECT_ROOT, WorkerProcess, wait_until

UUID_HEX = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def local(tmp_path: Path) -> Settings:
    """Local mode: the CLI process runs the request itself (no broker)."""
    return Settings(broker_url="local", store_dir=tmp_path / "store", fsync=False)


def _captured_id(settings: Settings, *args: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    """What ``id=$(bghttp ARGS)`` puts in ``$id``, through a real shell."""
    command = " ".join(shlex.quote(part) for part in [*bghttp_command(), *args])
    result = subprocess.run(
        ["bash", "-c", f'id=$({command}); code=$?; printf "%s" "$id"; exit $code'],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(settings),
        cwd=PROJECT_ROOT,
    )
    return result.stdout, result


def _received(httpserver: HTTPServer, path: str) -> Request:
    matching = [request for request, _ in httpserver.log if request.path == path]
    assert len(matching) == 1, [request.path for request, _ in httpserver.log]
    return matching[0]


# ------------------------------------------------------------- id=$(bghttp …)


def test_captured_id_is_only_the_id_with_wait(cli: Cli, worker: WorkerProcess, httpserver: HTTPServer,
                                              rabbitmq_settings: Settings) -> None:  # fmt: skip
    httpserver.expect_request("/ok").respond_with_data("fine")
    httpserver.expect_request("/bad").respond_with_data("no", status=500)

    captured, result = _captured_id(rabbitmq_settings, "post", httpserver.url_for("/ok"), "-d", "x", "--wait")
    assert result.returncode == 0, result.stderr
    assert UUID_HEX.fullmatch(captured), captured
    assert f"{captured} completed (HTTP 200)" in result.stderr  # the outcome is on stderr

    failed, result = _captured_id(rabbitmq_settings, "get", httpserver.url_for("/bad"), "--wait", "--id", "bad-1")
    assert result.returncode == 1
    assert failed == "bad-1"
    assert "bad-1 failed (HTTP 500)" in result.stderr


@pytest.mark.parametrize("extra", [[], ["--wait"]], ids=["local", "local-wait"])
def test_captured_id_is_only_the_id_in_local_mode(local: Settings, httpserver: HTTPServer, extra: list[str]) -> None:
    httpserver.expect_request("/here").respond_with_data("done here")

    captured, result = _captured_id(local, "--local", "get", httpserver.url_for("/here"), *extra)

    assert result.returncode == 0, result.stderr
    assert UUID_HEX.fullmatch(captured), captured
    assert f"{captured} completed (HTTP 200)" in result.stderr
    assert run_cli(local, "response", captured, "--body").stdout == "done here"


# -------------------------------------------------------------------- cancel


def test_cancel_exit_codes_are_1_for_every_finished_request(local: Settings, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/ok").respond_with_data("fine")
    httpserver.expect_request("/bad").respond_with_data("no", status=500)
    completed = run_cli(local, "--local", "get", httpserver.url_for("/ok")).stdout.strip()
    failed = run_cli(local, "--local", "get", httpserver.url_for("/bad")).stdout.strip()
    with BackgroundHttpClient(local, broker=StubBroker()) as client:  # nothing consumes: it stays queued
        queued = client.get(httpserver.url_for("/never")).request_id

    first = run_cli(local, "cancel", queued)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"{queued} cancelled"

    for request_id, status in ((queued, "cancelled"), (completed, "completed"), (failed, "failed")):
        again = run_cli(local, "cancel", request_id)
        assert again.returncode == 1, (status, again.stdout, again.stderr)
        assert again.stdout.strip() == f"{request_id} was already {status}; nothing to cancel"
        as_json = run_cli(local, "cancel", request_id, "--json")
        assert as_json.returncode == 1
        assert '"cancelled": false' in as_json.stdout and f'"status": "{status}"' in as_json.stdout


# ---------------------------------------------------------------------- wait


@pytest.mark.slow
def test_wait_rate_counts_only_the_bytes_it_saw_arrive(
    cli: Cli, worker: WorkerProcess, slow_server_factory: Callable[..., SlowBodyServer], rabbitmq_settings: Settings
) -> None:
    # 8 MiB at once, then 64 KiB every 0.1 s: at most ~0.7 MiB/s while `wait` watches.
    server = slow_server_factory(chunks=50, chunk_size=64 * 1024, delay=0.1, burst=8 * 1024 * 1024)
    submitted = cli("get", server.url("/half-done"))
    assert submitted.returncode == 0, submitted.stderr
    request_id = submitted.stdout.strip()
    part = FileStore(rabbitmq_settings.store_dir).response_part_path(request_id)
    wait_until(lambda: part.exists() and part.stat().st_size >= 8 * 1024 * 1024, timeout=30)

    result = cli("wait", request_id, "--timeout", "60")

    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{request_id}: running")]
    rates = re.findall(r"\(([\d.]+) (B|KiB|MiB|GiB)/s\)", result.stderr)
    assert len(rates) >= 2, result.stderr
    scale = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
    mib_per_s = [float(value) * scale[unit] / 1024**2 for value, unit in rates]
    # Counting the 8 MiB that had arrived before `wait` started would show far more.
    assert max(mib_per_s) < 2.0, result.stderr
    assert "rate not known yet" in lines[0], result.stderr


# ----------------------------------------------------------- bodies and URLs


def test_data_from_a_file_works_like_curl(local: Settings, httpserver: HTTPServer, tmp_path: Path) -> None:
    for path in ("/form", "/joined", "/binary", "/typed", "/get-body"):
        httpserver.expect_request(path).respond_with_data("ok")
    form_file = tmp_path / "form.txt"
    form_file.write_bytes(b"name=alice\r\n&city=paris\n")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"line 1\r\nline 2\n\x00\xff")

    for args in (
        ["post", httpserver.url_for("/form"), "-d", f"@{form_file}"],
        ["post", httpserver.url_for("/joined"), "-d", "a=1", "-d", "b=2"],
        ["post", httpserver.url_for("/binary"), "--data-binary", f"@{binary}"],
        ["post", httpserver.url_for("/typed"), "-d", "{}", "-H", "Content-Type: application/json"],
        ["get", httpserver.url_for("/get-body"), "-d", "q=1", "--allow-body"],
    ):
        result = run_cli(local, "--local", *args)
        assert result.returncode == 0, (args, result.stderr)

    form = _received(httpserver, "/form")
    assert form.get_data() == b"name=alice&city=paris"  # curl -d @FILE drops CR and LF
    assert form.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert _received(httpserver, "/joined").get_data() == b"a=1&b=2"
    raw = _received(httpserver, "/binary")
    assert raw.get_data() == b"line 1\r\nline 2\n\x00\xff"
    assert raw.headers["Content-Type"] == "application/octet-stream"
    assert _received(httpserver, "/typed").headers["Content-Type"] == "application/json"
    get = _received(httpserver, "/get-body")
    assert get.method == "GET" and get.get_data() == b"q=1"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["get", "http://127.0.0.1:9/x", "--wait-timeout", "5"], "--wait-timeout needs --wait"),
        (["get", "http://127.0.0.1:9/x", "-d", "x"], "add --allow-body"),
        (["head", "http://127.0.0.1:9/x", "--json-body", "{}"], "add --allow-body"),
        (["get", "http://127.0.0.1:9/x", "-F", "a=b"], "add --allow-body"),
        (["get", "example.com/path?q=1"], "did you mean https://example.com/path?q=1"),
        (["post", "api.example.com", "-d", "x"], "did you mean https://api.example.com"),
    ],
)
def test_submit_mistakes_are_usage_errors(local: Settings, args: list[str], fragment: str) -> None:
    result = run_cli(local, *args)

    assert_one_line_error(result, 2)
    assert fragment in result.stderr
    assert not local.store_dir.exists() or list(FileStore(local.store_dir).request_ids()) == []


# ------------------------------------------------------------------ response


def test_response_shows_the_reason_phrase(local: Settings, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/ok").respond_with_data("fine")
    httpserver.expect_request("/gone").respond_with_data("gone", status=404)
    ok = run_cli(local, "--local", "get", httpserver.url_for("/ok")).stdout.strip()
    gone = run_cli(local, "--local", "get", httpserver.url_for("/gone")).stdout.strip()

    assert run_cli(local, "response", ok).stdout.splitlines()[0] .endswith(" 200 OK  (request completed)")
    # The server's own phrase (werkzeug's upper case), not the standard one for the code.
    assert run_cli(local, "response", gone).stdout.splitlines()[0] .endswith(" 404 NOT FOUND  (request failed)")


def test_finished_request_without_response_says_so_without_yet(local: Settings) -> None:
    with BackgroundHttpClient(local, broker=StubBroker()) as client:
        request_id = client.get("http://127.0.0.1:9/never").request_id
        client.cancel(request_id)

    result = run_cli(local, "response", request_id)

    assert_one_line_error(result, 3)
    assert f"request {request_id!r} ended cancelled without a saved response" in result.stderr
    assert "yet" not in result.stderr
