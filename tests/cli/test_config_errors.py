"""Bad settings: one line naming the setting and what it accepts, exit code 2, before anything starts.

Every ``BGHTTP_*`` variable is tried with a bad value through the real console
script, through ``dramatiq bghttp.actors``, and a busy ``--metrics-port`` must
stop ``bghttp worker`` before it starts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bghttp import Settings
from bghttp.config import SETTING_VARIABLES
from bghttp.store import FileStore
from tests.cli.helpers import assert_one_line_error, bghttp_command, cli_env, run_cli
from tests.support import RABBITMQ_URL, unique_queue

URL = "http://127.0.0.1:9/x"

#: A bad value for every variable, and a fragment of what the error must say it accepts.
BAD_VALUES: dict[str, tuple[str, str]] = {
    "BGHTTP_BROKER_URL": ("redis://localhost:6379/0", "amqp://"),
    "BGHTTP_STORE_DIR": ("~nosuchuser-bghttp/store", "home directory"),
    "BGHTTP_QUEUE": ("q" * 300, "characters"),
    "BGHTTP_QUEUE_TYPE": ("mirrored", "classic or quorum"),
    "BGHTTP_EVENTS_EXCHANGE": ("e" * 300, "characters"),
    "BGHTTP_BACKOFF_SCALE": ("fast", "number >= 0"),
    "BGHTTP_MAX_RETRY_AFTER": ("-1", "number >= 0"),
    "BGHTTP_DEFAULT_TIMEOUT": ("0", "number > 0"),
    "BGHTTP_MAX_RESPONSE_BYTES": ("lots", "whole number > 0"),
    "BGHTTP_FSYNC": ("maybe", "true/false"),
    "BGHTTP_BLOCK_PRIVATE_ADDRESSES": ("sure", "true/false"),
    "BGHTTP_EGRESS_ALLOW_NETWORKS": ("10.0.0.0/33", "CIDR"),
    "BGHTTP_CONNECTIVITY_PROBES": ("foo", "tcp://host:port"),
    "BGHTTP_NETWORK_INTERFACES": ("eth0 wlan0", "interface names"),
    "BGHTTP_CONNECTIVITY_INTERVAL": ("soon", "number > 0"),
    "BGHTTP_OFFLINE_AFTER_FAILURES": ("0", "whole number > 0"),
    "BGHTTP_OFFLINE_HOLD_SECONDS": ("-5", "number >= 0"),
    "BGHTTP_LOG_FORMAT": ("xml", "json, console or auto"),
    "BGHTTP_LOG_LEVEL": ("LOUD", "DEBUG, INFO, WARNING, ERROR or CRITICAL"),
    "BGHTTP_METRICS_PORT": ("99999", "1 to 65535"),
    "BGHTTP_LOCAL_THREADS": ("0", "whole number > 0"),
    "BGHTTP_LOCAL_RESCAN_INTERVAL": ("-1", "number >= 0"),
    "BGHTTP_LOCAL_ORPHAN_AFTER": ("later", "number >= 0"),
    "BGHTTP_BROKER_CONNECT_TIMEOUT": ("0", "number > 0"),
    "BGHTTP_PROPAGATE_TRACE": ("perhaps", "true/false"),
    "BGHTTP_MAX_IN_FLIGHT": ("5000", "whole number from 1 to 4096"),
    "BGHTTP_MAX_IN_FLIGHT_PER_HOST": ("many", "whole number > 0"),
    "BGHTTP_MAX_SUBMIT_BODY": ("200000000", "whole number of bytes from 0"),
    "BGHTTP_HEARTBEAT_INTERVAL": ("often", "number >= 0"),
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(broker_url=RABBITMQ_URL, store_dir=tmp_path / "store", queue_name=unique_queue(), fsync=False)
    FileStore(settings.store_dir)
    return settings


def test_every_variable_has_a_bad_value_here() -> None:
    assert set(BAD_VALUES) == set(SETTING_VARIABLES.values())


@pytest.mark.parametrize("variable", sorted(BAD_VALUES))
@pytest.mark.parametrize("command", [["ls"], ["get", URL]])
def test_bad_variable_is_one_line_and_exit_2(settings: Settings, variable: str, command: list[str]) -> None:
    value, accepted = BAD_VALUES[variable]
    result = run_cli(settings, *command, env={variable: value})

    assert_one_line_error(result, 2)
    assert variable in result.stderr
    assert accepted.lower() in result.stderr.lower(), result.stderr
    assert list(FileStore(settings.store_dir).request_ids()) == []


@pytest.mark.parametrize(
    ("broker", "accepted"),
    [("garbage", "amqp://"), ("redis://localhost:6379/0", "amqp://"), ("amqp://h:notaport/", "port"), ("", "amqp://")],
)
def test_bad_broker_option_is_one_line_and_exit_2(settings: Settings, broker: str, accepted: str) -> None:
    result = run_cli(settings, "--broker", broker, "get", URL)

    assert_one_line_error(result, 2)
    assert "--broker" in result.stderr and accepted in result.stderr, result.stderr


def test_bad_store_option_is_one_line_and_exit_2(settings: Settings) -> None:
    result = run_cli(settings, "--store", "", "ls")

    assert_one_line_error(result, 2)
    assert "--store" in result.stderr


@pytest.mark.parametrize("command", [["get", URL], ["worker", "--processes", "1"]])
def test_a_queue_name_rabbitmq_reserves_is_a_bad_setting(settings: Settings, command: list[str]) -> None:
    # Seen: BGHTTP_QUEUE=amq.orders was accepted; a submit then failed with exit 4 ("the broker refused
    # the publish (403 ACCESS_REFUSED - queue name 'amq.orders' contains reserved prefix 'amq.*')") and
    # a worker logged broker_unreachable every 3 s forever: RabbitMQ refuses to declare such a queue.
    result = run_cli(settings, *command, env={"BGHTTP_QUEUE": "amq.orders"}, timeout=30)

    assert_one_line_error(result, 2)
    assert "BGHTTP_QUEUE" in result.stderr and "amq." in result.stderr, result.stderr
    assert list(FileStore(settings.store_dir).request_ids()) == []


@pytest.mark.parametrize("command", [["get", URL], ["worker", "--processes", "1"]])
def test_an_events_exchange_name_rabbitmq_reserves_is_a_bad_setting(settings: Settings, command: list[str]) -> None:
    # Seen: BGHTTP_EVENTS_EXCHANGE=amq.orders was accepted; RabbitMQ refuses to declare it (403), so
    # every final event failed and its message was retried by Dramatiq without end (a traceback,
    # "Retrying message … in 1631 milliseconds", then message_dropped, again).
    result = run_cli(settings, *command, env={"BGHTTP_EVENTS_EXCHANGE": "amq.orders"}, timeout=30)

    assert_one_line_error(result, 2)
    assert "BGHTTP_EVENTS_EXCHANGE" in result.stderr and "amq.topic" in result.stderr, result.stderr


def test_the_predeclared_amq_topic_exchange_may_carry_the_events(tmp_path: Path) -> None:
    settings = Settings.from_env({"BGHTTP_STORE_DIR": str(tmp_path), "BGHTTP_EVENTS_EXCHANGE": "amq.topic"})
    assert settings.events_exchange == "amq.topic"


def _dramatiq_worker(settings: Settings, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dramatiq", "bghttp.actors", "--processes", "1", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(settings, env),
    )


@pytest.mark.parametrize("variable", ["BGHTTP_LOG_LEVEL", "BGHTTP_CONNECTIVITY_PROBES", "BGHTTP_BROKER_URL"])
def test_dramatiq_worker_with_a_bad_variable_fails_fast_with_one_line(settings: Settings, variable: str) -> None:
    value, accepted = BAD_VALUES[variable]
    result = _dramatiq_worker(settings, {variable: value})

    # Dramatiq's master logs its own lines ("booting up", "exited unexpectedly"); ours is one line.
    assert result.returncode == 2, result.stderr
    ours = [line for line in result.stderr.splitlines() if "bghttp: error:" in line]
    assert len(ours) == 1, result.stderr
    assert variable in ours[0] and accepted.lower() in ours[0].lower()
    assert "Traceback" not in result.stderr


def test_busy_metrics_port_stops_the_worker_before_it_starts(settings: Settings) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        process = subprocess.Popen(
            [
                *(*bghttp_command(), "worker", "--processes", "1", "--threads", "1"),
                *("--metrics-port", str(port), "--metrics-host", "127.0.0.1"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(settings),
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"the worker kept running with its metrics port taken:\n{stderr[-2000:]}")
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert_one_line_error(result, 2)
    assert "--metrics-port" in stderr and str(port) in stderr
    assert "Worker process is ready" not in stderr + stdout
