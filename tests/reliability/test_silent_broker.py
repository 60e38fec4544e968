"""A broker address that accepts TCP and never speaks AMQP (a load balancer in front of a dead RabbitMQ).

A submit must fail with ``BrokerUnavailable`` within the documented bound
(``BGHTTP_BROKER_CONNECT_TIMEOUT`` per broker URL, plus a second), leave
nothing in the store, and the CLI must exit 4 with one line.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, BrokerUnavailable, Settings
from bghttp.store import FileStore
from tests.cli.helpers import assert_one_line_error, run_cli
from tests.support import SilentBroker, unique_queue

URL = "http://127.0.0.1:9/never-sent"


def _settings(store_dir: Path, broker_url: str, timeout: float | None = None) -> Settings:
    extra = {} if timeout is None else {"broker_connect_timeout": timeout}
    return Settings(broker_url=broker_url, store_dir=store_dir, queue_name=unique_queue(), fsync=False, **extra)


def test_submit_to_a_silent_listener_raises_broker_unavailable_within_the_bound(
    silent_broker: SilentBroker, tmp_path: Path
) -> None:
    settings = _settings(tmp_path / "store", silent_broker.url(), timeout=2)
    started = time.monotonic()
    with BackgroundHttpClient(settings) as client, pytest.raises(BrokerUnavailable, match=r"did not answer|handshake"):
        client.get(URL)
    elapsed = time.monotonic() - started
    assert silent_broker.accepted, "the client never connected: the test proves nothing"
    assert elapsed <= 2 + 1, elapsed
    assert list(FileStore(settings.store_dir).request_ids()) == []


@pytest.mark.slow
def test_the_default_bound_holds_too(silent_broker: SilentBroker, tmp_path: Path) -> None:
    settings = _settings(tmp_path / "store", silent_broker.url())
    started = time.monotonic()
    with BackgroundHttpClient(settings) as client, pytest.raises(BrokerUnavailable):
        client.get(URL)
    assert time.monotonic() - started <= settings.broker_connect_timeout + 1


def test_a_cluster_of_silent_listeners_is_bounded_per_url(silent_broker: SilentBroker, tmp_path: Path) -> None:
    other = SilentBroker()
    try:
        settings = _settings(tmp_path / "store", f"{silent_broker.url()};{other.url()}", timeout=1)
        started = time.monotonic()
        with BackgroundHttpClient(settings) as client, pytest.raises(BrokerUnavailable):
            client.get(URL)
        assert silent_broker.accepted and other.accepted
        assert time.monotonic() - started <= 2 * 1 + 1
    finally:
        other.close()


def test_cli_exits_4_with_one_line(silent_broker: SilentBroker, tmp_path: Path) -> None:
    settings = _settings(tmp_path / "store", silent_broker.url())
    result = run_cli(settings, "get", URL, env={"BGHTTP_BROKER_CONNECT_TIMEOUT": "2"}, timeout=30)
    assert_one_line_error(result, 4)
    assert list(FileStore(settings.store_dir).request_ids()) == []


def test_cli_recover_exits_4_with_one_line(silent_broker: SilentBroker, tmp_path: Path) -> None:
    settings = _settings(tmp_path / "store", "amqp://guest:guest@127.0.0.1:1/")
    with BackgroundHttpClient(settings) as client:
        # A stored request to re-send; the store's own API, since no broker answers a submit.
        from bghttp.validation import prepare_request

        client.store.create_request(prepare_request("GET", URL, default_timeout=5).spec)
    result = run_cli(
        settings, "recover", env={"BGHTTP_BROKER_URL": silent_broker.url(), "BGHTTP_BROKER_CONNECT_TIMEOUT": "2"}
    )
    assert_one_line_error(result, 4)
