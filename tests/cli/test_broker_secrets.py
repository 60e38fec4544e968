"""The broker password never reaches stderr, stdout or a worker's log, whatever is wrong with the URL.

Each bad ``BGHTTP_BROKER_URL`` (or ``--broker``) is given to the real console
script (``status``, ``get``, ``worker``) and to ``dramatiq bghttp.actors``; the
error must still say what is wrong (one line, exit 2) and show the URL with its
password replaced.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bghttp import Settings
from bghttp.store import FileStore
from tests.cli.helpers import assert_one_line_error, bghttp_command, cli_env, run_cli
from tests.support import RABBITMQ_URL, unique_queue

SECRET = "s3cr3t-Pw"

#: A bad broker URL (each with SECRET as a password), and what the error must still say.
BAD_BROKER_URLS: dict[str, tuple[str, str]] = {
    "port typo": (f"amqp://user:{SECRET}@127.0.0.1:56x2/", "56x2"),
    "port out of range": (f"amqp://user:{SECRET}@127.0.0.1:99999/", "out of range"),
    "bad query option": (f"amqp://user:{SECRET}@127.0.0.1:5672/?heartbeat=abc", "heartbeat"),
    "unknown query option": (f"amqp://user:{SECRET}@127.0.0.1:5672/?bogus=1", "bogus"),
    "bad second URL": (f"amqp://guest:guest@127.0.0.1:5672/;amqp://user:{SECRET}@127.0.0.1:56x2/", "56x2"),
    "second URL not amqp": (f"amqp://guest:guest@127.0.0.1:5672/;http://user:{SECRET}@127.0.0.1/", "amqp://"),
    "broken IPv6 host": (f"amqp://user:{SECRET}@[::1/", "IPv6"),
    "percent-encoded password": (f"amqp://user:{SECRET}%21@127.0.0.1:56x2/", "56x2"),
    "password with a slash": (f"amqp://user:{SECRET}/x@127.0.0.1:56x2/", "amqp://"),
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(broker_url=RABBITMQ_URL, store_dir=tmp_path / "store", queue_name=unique_queue(), fsync=False)
    FileStore(settings.store_dir)
    return settings


def _assert_no_secret(result: subprocess.CompletedProcess[str]) -> None:
    assert SECRET not in result.stderr and SECRET not in result.stdout, result.stderr
    assert "s3cr3t" not in result.stderr.lower(), result.stderr  # not even a part of it


@pytest.mark.parametrize("case", sorted(BAD_BROKER_URLS))
@pytest.mark.parametrize("command", [["status", "x"], ["get", "http://127.0.0.1:9/x"]])
def test_bad_broker_variable_error_hides_the_password(settings: Settings, case: str, command: list[str]) -> None:
    url, fragment = BAD_BROKER_URLS[case]

    result = run_cli(settings, *command, env={"BGHTTP_BROKER_URL": url})

    assert_one_line_error(result, 2)
    _assert_no_secret(result)
    assert "BGHTTP_BROKER_URL" in result.stderr and fragment in result.stderr, result.stderr
    assert "[REDACTED]" in result.stderr or "user:" not in result.stderr, result.stderr


@pytest.mark.parametrize("case", ["port typo", "bad second URL", "unknown query option"])
def test_bad_broker_option_error_hides_the_password(settings: Settings, case: str) -> None:
    url, fragment = BAD_BROKER_URLS[case]

    result = run_cli(settings, "--broker", url, "get", "http://127.0.0.1:9/x")

    assert_one_line_error(result, 2)
    _assert_no_secret(result)
    assert "--broker" in result.stderr and fragment in result.stderr, result.stderr


@pytest.mark.parametrize("case", ["port typo", "bad query option", "bad second URL"])
def test_worker_with_a_bad_broker_url_hides_the_password(settings: Settings, case: str, tmp_path: Path) -> None:
    url, fragment = BAD_BROKER_URLS[case]
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        code = subprocess.run(
            [*bghttp_command(), "worker", "--processes", "1"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=cli_env(settings, {"BGHTTP_BROKER_URL": url}),
            timeout=60,
        ).returncode
    text = log_path.read_text()

    assert code == 2, text
    assert SECRET not in text and fragment in text, text


@pytest.mark.parametrize("case", ["port typo", "bad second URL"])
def test_dramatiq_worker_with_a_bad_broker_url_hides_the_password(settings: Settings, case: str) -> None:
    url, fragment = BAD_BROKER_URLS[case]

    result = subprocess.run(
        [sys.executable, "-m", "dramatiq", "bghttp.actors", "--processes", "1", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(settings, {"BGHTTP_BROKER_URL": url}),
    )

    assert result.returncode == 2, result.stderr
    _assert_no_secret(result)
    assert fragment in result.stderr, result.stderr


def test_settings_repr_hides_the_broker_password() -> None:
    settings = Settings(broker_url=f"amqp://user:{SECRET}@127.0.0.1:5672/;amqp://user:{SECRET}@127.0.0.2:5672/")

    assert SECRET not in repr(settings) and "amqp://user:[REDACTED]@127.0.0.2:5672/" in repr(settings)
    assert repr(settings).startswith("Settings(broker_url=")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://u:pw@h:5672/", "amqp://u:[REDACTED]@h:5672/"),
        ("amqp://u:p%40w@h/", "amqp://u:[REDACTED]@h/"),
        ("amqp://u:p@w@h/", "amqp://u:[REDACTED]@h/"),
        ("amqp://u:p/w?x#y@h/", "amqp://u:[REDACTED]@h/"),
        ("amqp://u:pw@[::1]:5672/", "amqp://u:[REDACTED]@[::1]:5672/"),
        ("amqp://u:pw@[::1/", "amqp://u:[REDACTED]@[::1/"),
        ("amqp://a:1@h1/;amqp://b:2@h2/", "amqp://a:[REDACTED]@h1/;amqp://b:[REDACTED]@h2/"),
        ("amqp://u@h/", "amqp://u@h/"),
        ("amqp://h:5672/?heartbeat=5", "amqp://h:5672/?heartbeat=5"),
        ("local", "local"),
    ],
)
def test_redact_broker_url(url: str, shown: str) -> None:
    from bghttp.redaction import broker_url_secrets, redact_broker_url, scrub

    assert redact_broker_url(url) == shown
    assert scrub(url, broker_url_secrets(url)).count("[REDACTED]") >= shown.count("[REDACTED]")


@pytest.mark.parametrize("probe", [f"http://u:{SECRET}@127.0.0.1:80x/", f"ftp://u:{SECRET}@h/", f"tcp://u:{SECRET}@h"])
def test_bad_probe_url_error_hides_the_password(settings: Settings, probe: str) -> None:
    result = run_cli(settings, "ls", env={"BGHTTP_CONNECTIVITY_PROBES": f"tcp://127.0.0.1:9,{probe}"})

    assert_one_line_error(result, 2)
    _assert_no_secret(result)
    assert "BGHTTP_CONNECTIVITY_PROBES" in result.stderr and "u:[REDACTED]@" in result.stderr, result.stderr


def test_worker_log_shows_probe_urls_without_password(settings: Settings, tmp_path: Path) -> None:
    from tests.cli.helpers import BghttpWorker
    from tests.support import free_port, wait_until

    log_path = tmp_path / "worker.log"
    worker = BghttpWorker(
        settings,
        "--processes",
        "1",
        log_path=log_path,
        env={
            "BGHTTP_BROKER_URL": f"amqp://guest:{SECRET}@127.0.0.1:{free_port()}/",
            "BGHTTP_CONNECTIVITY_PROBES": f"http://u:{SECRET}@127.0.0.1:{free_port()}/health",
            "BGHTTP_CONNECTIVITY_INTERVAL": "0.2",
            "BGHTTP_LOG_FORMAT": "json",
        },
    )
    try:
        wait_until(lambda: "connectivity_monitor_started" in log_path.read_text(), timeout=30)
        wait_until(lambda: "broker_unreachable" in log_path.read_text(), timeout=30)
    finally:
        worker.stop()
    text = log_path.read_text()

    assert SECRET not in text, text
    assert "u:[REDACTED]@127.0.0.1" in text, text
