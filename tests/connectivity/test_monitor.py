"""ConnectivityMonitor logic: probe parsing, the interface rule, anti-flap, check_now.

Interfaces are faked (a dict like psutil's view); probes are real sockets on
loopback. Nothing here sleeps for long.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer

from bghttp.config import ConfigError, Settings
from bghttp.worker.connectivity import (
    ConnectivityMonitor,
    HttpProbe,
    InterfaceInfo,
    MonitorHolder,
    TcpProbe,
    parse_probe,
    read_interfaces,
)
from tests.support import capture_logs, free_port, wait_until

UP = InterfaceInfo(is_up=True, addresses=("192.0.2.10",))
DOWN = InterfaceInfo(is_up=False, addresses=("192.0.2.10",))
LOOPBACK = InterfaceInfo(is_up=True, addresses=("127.0.0.1", "::1"))


class FakeInterfaces:
    """psutil's view, as the test sets it; counts how often it was read."""

    def __init__(self, **interfaces: InterfaceInfo) -> None:
        self.interfaces = dict(interfaces)
        self.reads = 0

    def __call__(self) -> dict[str, InterfaceInfo]:
        self.reads += 1
        return dict(self.interfaces)


def monitor(interfaces: FakeInterfaces, **settings: object) -> ConnectivityMonitor:
    settings.setdefault("connectivity_interval", 0.01)
    return ConnectivityMonitor(Settings(**settings), read_interfaces=interfaces)  # type: ignore[arg-type]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


# ------------------------------------------------------------------ probes
def test_probe_specs_are_parsed() -> None:
    assert parse_probe("tcp://example.com:443") == TcpProbe("tcp://example.com:443", "example.com", 443)
    assert parse_probe("tcp://[::1]:53") == TcpProbe("tcp://[::1]:53", "::1", 53)
    assert parse_probe("https://example.com/health") == HttpProbe("https://example.com/health")
    assert parse_probe("HTTP://example.com") == HttpProbe("HTTP://example.com")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tcp://example.com", "needs a port"),
        ("tcp://example.com:99999", "out of range"),
        ("tcp://example.com:443/path", "only tcp://host:port"),
        ("ftp://example.com", "unknown scheme 'ftp'"),
        ("example.com:443", "no host"),
        ("tcp://:443", "no host"),
    ],
)
def test_bad_probe_specs_give_a_clear_config_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_probe(spec)
    assert "BGHTTP_CONNECTIVITY_PROBES" in str(raised.value)
    assert spec in str(raised.value)
    assert message in str(raised.value)


def test_a_bad_probe_stops_the_settings_before_the_worker_set_up() -> None:
    # Settings check every value when they are made (issue 11, item 17), before any worker set-up.
    with pytest.raises(ConfigError, match="udp"):
        Settings.from_env({"BGHTTP_CONNECTIVITY_PROBES": "tcp://ok.example:1, udp://dns.example:53"})


def test_tcp_probe_answers_while_the_port_listens(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    probe = parse_probe(f"tcp://127.0.0.1:{port}")
    assert probe.check(1.0) is None
    listener.close()
    error = probe.check(1.0)
    assert error is not None and f"127.0.0.1:{port}" in error


def test_http_probe_counts_any_answer(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/health").respond_with_data("down for maintenance", status=503)
    assert parse_probe(httpserver.url_for("/health")).check(1.0) is None
    assert parse_probe(f"http://127.0.0.1:{free_port()}/").check(1.0) is not None


# -------------------------------------------------------------- interfaces
def test_named_interfaces_decide_alone() -> None:
    interfaces = FakeInterfaces(eth0=UP, wlan0=DOWN)
    m = monitor(interfaces, network_interfaces=("wlan0",), offline_after_failures=1)
    assert not m.poll()
    interfaces.interfaces["wlan0"] = UP
    assert m.poll()
    del interfaces.interfaces["wlan0"]  # a USB modem pulled out
    assert not m.poll()


def test_an_interface_needs_a_usable_address() -> None:
    link_local_only = InterfaceInfo(is_up=True, addresses=("fe80::1%veth0", "169.254.3.4"))
    m = monitor(FakeInterfaces(veth0=link_local_only), network_interfaces=("veth0",), offline_after_failures=1)
    assert not m.poll()
    assert InterfaceInfo(is_up=True, addresses=("fd00::2",)).usable
    assert not InterfaceInfo(is_up=False, addresses=("fd00::2",)).usable


def test_default_rule_ignores_interfaces_on_a_loopback_only_host() -> None:
    # A host that never had a usable interface: psutil cannot tell, probes decide.
    interfaces = FakeInterfaces(lo=LOOPBACK, ifb0=InterfaceInfo(is_up=False, addresses=()))
    m = monitor(interfaces, offline_after_failures=1)
    assert m.poll() and m.poll()
    # Once an interface had an address, losing it is an outage.
    interfaces.interfaces["eth0"] = UP
    assert m.poll()
    interfaces.interfaces["eth0"] = DOWN
    assert not m.poll()
    interfaces.interfaces["eth1"] = UP  # any one interface is enough
    assert m.poll()


def test_real_psutil_view_has_loopback_and_it_never_counts() -> None:
    interfaces = read_interfaces()
    loopbacks = [info for info in interfaces.values() if "127.0.0.1" in info.addresses]
    assert loopbacks and not any(info.usable for info in loopbacks)


def test_probes_and_interfaces_must_both_pass(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    interfaces = FakeInterfaces(eth0=UP)
    probes = (f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{port}")  # the first is closed
    m = monitor(interfaces, connectivity_probes=probes, network_interfaces=("eth0",), offline_after_failures=1)
    assert m.poll()  # any one probe answering is enough
    interfaces.interfaces["eth0"] = DOWN
    assert not m.poll()
    interfaces.interfaces["eth0"] = UP
    assert m.poll()
    listener.close()
    assert not m.poll()


# ---------------------------------------------------------------- anti-flap
def test_one_failed_check_does_not_flap() -> None:
    interfaces = FakeInterfaces(eth0=UP)
    m = monitor(interfaces, network_interfaces=("eth0",), offline_after_failures=3)
    with capture_logs() as logs:
        for _ in range(3):
            interfaces.interfaces["eth0"] = DOWN
            assert m.poll() and m.poll()  # two failures in a row: still online
            interfaces.interfaces["eth0"] = UP
            assert m.poll()  # a pass resets the count
        interfaces.interfaces["eth0"] = DOWN
        assert m.poll() and m.poll() and not m.poll()  # the third failure in a row
        m.note_held("r1")
        m.note_held("r1")  # held twice, one request
        m.note_held("r2")
        assert not m.poll()
        interfaces.interfaces["eth0"] = UP
        assert m.poll()  # one pass brings it back
    events = [entry["event"] for entry in logs if entry["event"].startswith("network_")]
    assert events == ["network_offline", "network_online"]
    offline = next(entry for entry in logs if entry["event"] == "network_offline")
    online = next(entry for entry in logs if entry["event"] == "network_online")
    assert "eth0 down" in offline["reason"]
    assert online["held_requests"] == 2
    assert online["offline_s"] >= 0


def test_check_now_confirms_a_failure_at_once() -> None:
    interfaces = FakeInterfaces(eth0=DOWN)
    m = monitor(interfaces, network_interfaces=("eth0",), offline_after_failures=3)
    assert m.check_now() is False
    assert interfaces.reads == 3  # three quick checks, no waiting for the interval
    interfaces.interfaces["eth0"] = UP
    assert m.check_now() is True
    assert interfaces.reads == 4


def test_check_now_stays_online_when_a_recheck_passes() -> None:
    answers = iter([DOWN, UP])

    def flaky() -> dict[str, InterfaceInfo]:
        return {"eth0": next(answers)}

    m = ConnectivityMonitor(
        Settings(network_interfaces=("eth0",), connectivity_interval=0.01, offline_after_failures=2),
        read_interfaces=flaky,
    )
    assert m.check_now() is True


def test_wait_online_blocks_until_the_network_is_back() -> None:
    interfaces = FakeInterfaces(eth0=DOWN)
    m = monitor(interfaces, network_interfaces=("eth0",), offline_after_failures=1)
    assert not m.poll()
    assert m.wait_online(0.05) is False
    interfaces.interfaces["eth0"] = UP
    threading.Timer(0.05, m.poll).start()
    assert m.wait_online(10) is True


def test_background_thread_follows_the_network() -> None:
    interfaces = FakeInterfaces(eth0=UP)
    m = monitor(interfaces, network_interfaces=("eth0",), offline_after_failures=2)
    m.start()
    try:
        assert m.is_online()
        interfaces.interfaces["eth0"] = DOWN
        wait_until(lambda: not m.is_online(), timeout=10)
        interfaces.interfaces["eth0"] = UP
        assert m.wait_online(10)
    finally:
        m.stop()


def test_holder_builds_one_monitor_per_process() -> None:
    built: list[ConnectivityMonitor] = []

    def factory(settings: Settings) -> ConnectivityMonitor:
        built.append(ConnectivityMonitor(settings, read_interfaces=FakeInterfaces(eth0=UP)))
        return built[-1]

    holder = MonitorHolder(Settings(connectivity_interval=60), factory)
    try:
        assert holder.get() is holder.get()
        assert len(built) == 1 and built[0].is_online()
    finally:
        holder.stop()

