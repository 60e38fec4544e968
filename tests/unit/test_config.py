"""Settings.from_env: the documented defaults, overrides, a round trip, and a bad value."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bghttp import ConfigError, Settings


def test_an_empty_environment_gives_the_documented_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({"HOME": str(tmp_path)})
    assert settings.broker_url == "amqp://guest:guest@localhost:5672/"
    assert settings.store_dir == tmp_path / ".local/share/bghttp"
    assert settings.queue_name == "bghttp"
    assert settings.queue_type == "classic"
    assert settings.fsync is True
    assert settings.default_timeout == 60.0
    assert settings.max_response_bytes is None
    assert settings.connectivity_probes == ()
    assert settings.metrics_port is None
    assert not settings.is_local


def test_variables_are_parsed_and_overrides_win(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "BGHTTP_STORE_DIR": str(tmp_path / "store"),
            "BGHTTP_FSYNC": "0",
            "BGHTTP_DEFAULT_TIMEOUT": "2.5",
            "BGHTTP_EGRESS_ALLOW_NETWORKS": "10.0.0.0/8,fd00::/8",
            "BGHTTP_QUEUE": "from-env",
        },
        queue_name="override",
    )
    assert settings.store_dir == tmp_path / "store"
    assert settings.fsync is False
    assert settings.default_timeout == 2.5
    assert settings.egress_allow_networks == ("10.0.0.0/8", "fd00::/8")
    assert settings.queue_name == "override"


def test_to_env_is_from_envs_inverse(tmp_path: Path) -> None:
    settings = Settings(
        broker_url="local", store_dir=tmp_path, queue_name="q", backoff_scale=0.5, fsync=False, metrics_port=9100
    )
    again = Settings.from_env(settings.to_env())
    assert dataclasses.asdict(again) == dataclasses.asdict(settings)
    assert again.is_local


def test_a_bad_value_is_a_one_line_error_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"BGHTTP_STORE_DIR": str(tmp_path), "BGHTTP_DEFAULT_TIMEOUT": "soon"})
    message = str(raised.value)
    assert "BGHTTP_DEFAULT_TIMEOUT" in message and "soon" in message
    assert "\n" not in message


#: Broker URLs without query options: checked without pika (bghttp ls need not load it), with pika's verdict.
BROKER_URLS = [
    "amqp://guest:guest@localhost:5672/", "amqp://h", "amqp://h:5672", "amqp://h:0/", "amqp://h:/", "amqp://h/%2f",
    "amqp://h/a/b", "amqp://h#frag", "amqp://[::1]:5672/", "amqp://u:p%zz@h/v", "amqp://:p@h/", "AMQP://H/",
    "amqp://h:notaport/", "amqp://h:99999/", "amqp://h:-1/", "amqp://h: 5/", "amqp://u@h/", "amqp://[bad/",
    "amqps://h", "amqps://u:p@h:5671/", "amqp://h/?heartbeat=5", "amqp://h/?heartbeat=x", "amqp://h/?nosuch=1",
]  # fmt: skip


@pytest.mark.parametrize("url", BROKER_URLS)
def test_a_broker_url_is_refused_exactly_when_pika_refuses_it(tmp_path: Path, url: str) -> None:
    import pika

    try:
        pika.URLParameters(url)
        pika_accepts = True
    except Exception:
        pika_accepts = False
    try:
        Settings(broker_url=url, store_dir=tmp_path)
        accepted = True
    except ConfigError:
        accepted = False
    assert accepted == pika_accepts
