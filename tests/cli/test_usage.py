"""Bad arguments and unknown IDs: a documented exit code and one clear line, never a traceback.

These need no worker; only the broker-unavailable case talks to a (closed) port.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bghttp import Settings
from bghttp.cli import main
from bghttp.errors import ConfigError
from bghttp.store import FileStore
from tests.cli.helpers import assert_one_line_error, bghttp_command, run_cli
from tests.support import RABBITMQ_URL, free_port, unique_queue

URL = "http://127.0.0.1:9/x"


@pytest.fixture
def offline_settings(tmp_path: Path) -> Settings:
    """A real store; the queue is never used because every case fails before publishing."""
    settings = Settings(broker_url=RABBITMQ_URL, store_dir=tmp_path / "store", queue_name=unique_queue(), fsync=False)
    settings.store_dir.mkdir(mode=0o700)  # an existing store (reading never creates one)
    return settings


def _stored(settings: Settings) -> list[str]:
    return sorted(FileStore(settings.store_dir).request_ids())


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["frobnicate"], 2, "invalid choice"),
        ([], 2, "required: COMMAND"),
        (["get"], 2, "required: URL"),
        (["get", "not a url"], 2, "url"),
        (["get", "ftp://example.com/"], 2, "http"),
        (["get", URL, "-H", "no colon here"], 2, "-H needs 'Name: value'"),
        (["get", URL, "-H", "X-Bad: a\r\nInjected: 1"], 2, "header"),
        (["get", URL, "-q", "novalue"], 2, "-q needs KEY=VALUE"),
        (["get", URL, "--retries", "11"], 2, "retries must be"),
        (["get", URL, "--retries", "many"], 2, "invalid int value"),
        (["get", URL, "--timeout", "-1"], 2, "timeout"),
        (["get", URL, "--id", "../etc"], 2, "request_id must be"),
        (["post", URL, "--json-body", "{bad"], 2, "--json-body is not valid JSON"),
        (["post", URL, "-d", "@/nonexistent/file"], 2, "--data: cannot read"),
        (["post", URL, "-F", "doc=@/nonexistent/file"], 2, "does not exist"),
        (["post", URL, "-F", "novalue"], 2, "-F needs NAME=VALUE"),
        (["post", URL, "-F", "doc=@x;color=red"], 2, "unknown option"),
        (["post", URL, "-d", "x", "--json-body", "{}"], 2, "not allowed with"),
        (["ls", "--status", "bogus"], 2, "invalid choice"),
        (["ls", "--limit", "0"], 2, "must be > 0"),
        (["gc"], 2, "--older-than"),
        (["gc", "--older-than", "7x"], 2, "not a duration"),
        (["worker", "--metrics-port", "70000"], 2, "not a port"),
        (["wait", "nope", "--timeout", "nan"], 2, "--timeout: must be a number of seconds >= 0"),
        (["wait", "nope", "--timeout", "-1"], 2, "--timeout: must be a number of seconds >= 0"),
        (["get", URL, "--wait", "--wait-timeout", "-3"], 2, "--wait-timeout: must be a number of seconds >= 0"),
        (["status"], 2, "required: ID"),
        (["status", "bad/id"], 2, "request_id must be"),
        (["status", "nope"], 3, "no request 'nope'"),
        (["response", "nope"], 3, "no request 'nope'"),
        (["wait", "nope"], 3, "no request 'nope'"),
        (["cancel", "nope"], 3, "no request 'nope'"),
        (["rm", "nope"], 3, "no request 'nope'"),
        (["delete", "nope"], 3, "no request 'nope'"),
        (["delete", "nope", "-H", "A: b"], 2, "takes no -H"),
        (["--store", "/nonexistent/bghttp-store", "status", "x"], 6, "no store at"),
        (["--local", "recover"], 2, "local mode"),
        (["--local", "worker", "--metrics-port", "9191"], 2, "local mode serves no metrics"),
    ],
)
def test_bad_input_gives_exit_code_and_one_line(
    offline_settings: Settings, args: list[str], code: int, fragment: str
) -> None:
    result = run_cli(offline_settings, *args)

    assert_one_line_error(result, code)
    assert fragment.lower() in result.stderr.lower()
    assert _stored(offline_settings) == []  # nothing was stored


@pytest.mark.parametrize(
    "args",
    [
        # Seen: "re-sent 0 unfinished request(s)", exit 0, for a mistyped --store: an operator
        # recovering after a broker rebuild believed nothing was left to re-send.
        ["recover"],
        ["retry", "--status", "failed"],  # seen: "retried 0 failed request(s)", exit 0
        ["retry", "abc"],  # seen: "no request 'abc' in the store …", exit 3
        ["cancel", "abc"],
        ["gc", "--older-than", "1d"],
        ["workers"],
    ],
    ids=" ".join,
)
def test_a_command_on_a_store_that_does_not_exist_says_so_and_creates_nothing(
    offline_settings: Settings, tmp_path: Path, args: list[str]
) -> None:
    missing = tmp_path / "mistyped-store"
    result = run_cli(offline_settings, "--store", str(missing), *args)

    assert_one_line_error(result, 6)
    assert f"no store at {missing}" in result.stderr, result.stderr
    assert not missing.exists()


@pytest.mark.parametrize(
    "where", ["default", "XDG_DATA_HOME", "BGHTTP_STORE_DIR", "an empty BGHTTP_STORE_DIR", "--store"]
)
def test_ls_on_a_fresh_machine_is_an_empty_list_and_creates_nothing(tmp_path: Path, where: str) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(fresh)}
    options: list[str] = []
    if where == "XDG_DATA_HOME":
        env["XDG_DATA_HOME"] = str(fresh / "data")
    elif where == "BGHTTP_STORE_DIR":
        env["BGHTTP_STORE_DIR"] = str(fresh / "store")
    elif where == "an empty BGHTTP_STORE_DIR":
        env["BGHTTP_STORE_DIR"] = str(fresh)
    elif where == "--store":
        options = ["--store", str(fresh / "store")]

    text = subprocess.run([*bghttp_command(), *options, "ls"], capture_output=True, text=True, env=env, timeout=60)
    as_json = subprocess.run(
        [*bghttp_command(), *options, "--json", "ls"], capture_output=True, text=True, env=env, timeout=60
    )

    assert text.returncode == 0, text.stderr
    assert text.stdout.split() == ["ID", "STATUS", "PHASE", "ATTEMPTS", "CODE", "CREATED", "METHOD", "URL"]
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == [], as_json.stderr
    if where != "an empty BGHTTP_STORE_DIR":  # a missing store is named: a mistyped --store shows
        assert text.stderr.startswith("bghttp: no store at ") and text.stderr.count("\n") == 1, text.stderr
    assert "Traceback" not in text.stderr + as_json.stderr
    assert sorted(fresh.rglob("*")) == []  # a reading command creates nothing


def test_bad_environment_setting_is_a_usage_error(offline_settings: Settings) -> None:
    result = run_cli(offline_settings, "ls", env={"BGHTTP_BACKOFF_SCALE": "fast"})

    assert_one_line_error(result, 2)
    assert "BGHTTP_BACKOFF_SCALE" in result.stderr


def test_broker_unavailable_exits_4_and_keeps_nothing(offline_settings: Settings) -> None:
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/"

    result = run_cli(offline_settings, "--broker", closed, "post", URL, "-d", "x")

    assert_one_line_error(result, 4)
    assert "cannot connect to the broker" in result.stderr and "not submitted" in result.stderr
    assert _stored(offline_settings) == []


def test_response_before_any_response_exits_3(offline_settings: Settings) -> None:
    from dramatiq.brokers.stub import StubBroker

    from bghttp import BackgroundHttpClient

    with BackgroundHttpClient(offline_settings, broker=StubBroker()) as client:
        info = client.get(URL)  # stored and "published" to a broker nobody reads: stays queued

    result = run_cli(offline_settings, "response", info.request_id)
    assert_one_line_error(result, 3)
    assert "no saved response yet (in_progress/queued)" in result.stderr
    timed_out = run_cli(offline_settings, "wait", info.request_id, "--timeout", "0.3", "--no-progress")
    assert_one_line_error(timed_out, 5)


COMMANDS = ["get", "post", "put", "patch", "delete", "head", "status", "response", "wait", "ls", "cancel", "rm",
            "worker", "gc", "recover"]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])

    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: bghttp {command}")
    assert "exit codes:" in text and "--json" in text


def test_top_level_help_lists_commands_and_exit_codes() -> None:
    result = subprocess.run([*bghttp_command(), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for command in COMMANDS:
        assert f"    {command} " in result.stdout
    assert "5  wait timed out" in result.stdout


@pytest.mark.parametrize("option", ["--max-in-flight", "--threads"])
def test_worker_max_in_flight_sets_the_setting_and_a_bad_value_names_the_option(option: str) -> None:
    from bghttp.cli.commands import build_parser, settings_from_args

    args = build_parser().parse_args(["worker", option, "32"])
    assert settings_from_args(args, {"BGHTTP_MAX_IN_FLIGHT": "7"}).max_in_flight == 32  # the option wins
    assert settings_from_args(build_parser().parse_args(["worker"]), {}).max_in_flight == 512
    with pytest.raises(ConfigError, match="--max-in-flight 5000: must be a whole number from 1 to 4096"):
        settings_from_args(build_parser().parse_args(["worker", option, "5000"]), {})


def test_version_option_prints_the_package_version() -> None:
    import importlib.metadata

    result = subprocess.run([*bghttp_command(), "--version"], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"bghttp {importlib.metadata.version('bghttp')}\n"
