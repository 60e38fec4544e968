"""The egress policy: private addresses refused after DNS resolution and on every redirect hop.

Loopback tests mark 127.0.0.2 as trusted with ``BGHTTP_EGRESS_ALLOW_NETWORKS``
(standing in for a public server) while 127.0.0.1 stays blocked.
"""

from __future__ import annotations

import dataclasses
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.config import ConfigError
from bghttp.worker.egress import EgressPolicy, EgressPolicyTransport
from bghttp.worker.execution import EgressBlocked, build_http_client
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess

BLOCKED = [
    "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.1.1",
    "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255",
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd00:ec2::254", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "64:ff9b::a00:1", "64:ff9b:1::1",
    "2002:7f00:1::", "2002:a9fe:a9fe::1", "2001:db8::1", "not-an-ip",
]
ALLOWED = ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", BLOCKED)
def test_policy_refuses_special_addresses(address: str) -> None:
    assert EgressPolicy().refusal(address) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_policy_lets_public_addresses_through(address: str) -> None:
    assert EgressPolicy().refusal(address) is None


def test_allow_networks_exempt_a_network_but_never_metadata() -> None:
    policy = EgressPolicy(["127.0.0.2/32", "169.254.0.0/16", "fd00::/8"])
    assert policy.refusal("127.0.0.2") is None
    assert policy.refusal("::ffff:127.0.0.2") is None
    assert policy.refusal("127.0.0.1") is not None
    assert policy.refusal("169.254.1.1") is None
    assert policy.refusal("169.254.169.254") is not None
    assert policy.refusal("fd00:ec2::254") is not None


def test_settings_read_and_check_allow_networks() -> None:
    env = {"BGHTTP_BLOCK_PRIVATE_ADDRESSES": "1", "BGHTTP_EGRESS_ALLOW_NETWORKS": "127.0.0.2/32, 10.0.0.0/8"}
    settings = Settings.from_env(env)
    assert settings.block_private_addresses
    assert settings.egress_allow_networks == ("127.0.0.2/32", "10.0.0.0/8")
    with pytest.raises(ConfigError, match="BGHTTP_EGRESS_ALLOW_NETWORKS"):
        Settings.from_env({"BGHTTP_EGRESS_ALLOW_NETWORKS": "10.0.0.0/33"})


@pytest.fixture
def public_server() -> Iterator[CountingServer]:
    """The stand-in for a public server: 127.0.0.2, allowed by the tests' policy."""
    server = CountingServer(host="127.0.0.2").start()
    yield server
    server.stop()


def _client(resolve: Callable[[str, int], list[str]]) -> httpx.Client:
    transport = EgressPolicyTransport(EgressPolicy(["127.0.0.2/32"]), resolver=resolve)
    return build_http_client(transport=transport, trust_env=False)


def test_transport_connects_to_the_checked_address(public_server: CountingServer) -> None:
    """A name is resolved once per connection; the connection goes to that checked address."""
    answers = iter([["127.0.0.2"], ["127.0.0.1"]])  # a rebinding DNS: the second answer is private
    with _client(lambda host, port: next(answers)) as http:
        response = http.get(f"http://rebind.test:{public_server.port}/ok?id=dns")
        assert response.status_code == 200
        assert response.text == "ok dns"
        assert response.request.headers["host"] == f"rebind.test:{public_server.port}"
        # A new connection asks DNS again and is checked again: now refused.
        http.close()
    with _client(lambda host, port: next(answers)) as http, pytest.raises(EgressBlocked):
        http.get(f"http://rebind.test:{public_server.port}/ok?id=dns")
    assert public_server.hits["dns"] == 1


def test_transport_refuses_a_name_with_any_private_address(
    public_server: CountingServer, counting_server: CountingServer
) -> None:
    with _client(lambda host, port: ["127.0.0.2", "127.0.0.1"]) as http, pytest.raises(EgressBlocked):
        http.get(f"http://mixed.test:{public_server.port}/ok?id=mixed")
    with _client(lambda host, port: ["127.0.0.1"]) as http, pytest.raises(EgressBlocked):
        http.get(counting_server.url("/ok?id=literal"))
    assert public_server.hits["mixed"] == 0
    assert counting_server.hits["literal"] == 0


def test_transport_checks_every_redirect_hop(public_server: CountingServer, counting_server: CountingServer) -> None:
    target = counting_server.url("/ok?id=inner")
    with _client(lambda host, port: ["127.0.0.2"]) as http, pytest.raises(EgressBlocked, match=r"127\.0\.0\.1"):
        # httpx follows here (bghttp's own redirect loop is tested through the worker below).
        http.get(public_server.url(f"/redirect?id=outer&to={target}"), follow_redirects=True)
    assert public_server.hits["outer"] == 1
    assert counting_server.hits["inner"] == 0


@pytest.mark.rabbitmq
def test_worker_blocks_private_targets_and_redirects_to_them(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    public_server: CountingServer,
    counting_server: CountingServer,
) -> None:
    settings = dataclasses.replace(
        rabbitmq_settings, block_private_addresses=True, egress_allow_networks=("127.0.0.2/32",)
    )
    start_worker(settings, threads=2)
    with BackgroundHttpClient(settings) as client:
        allowed = client.get(public_server.url("/ok?id=allowed"), request_id="allowed", retries=2)
        direct = client.get(counting_server.url("/ok?id=direct"), request_id="direct", retries=2)
        redirect_target = counting_server.url("/ok?id=hop")
        hop = client.get(public_server.url(f"/redirect?id=redir&to={redirect_target}"), request_id="redir", retries=2)
        metadata = client.get("http://169.254.169.254/latest/meta-data/", request_id="metadata", retries=2)

        assert client.wait(allowed.request_id, timeout=60).status is RequestStatus.COMPLETED
        for request_id in (direct.request_id, hop.request_id, metadata.request_id):
            record = client.wait(request_id, timeout=60)
            assert record.status is RequestStatus.FAILED
            # Blocked is final: no retry is spent on it.
            assert [a.outcome for a in record.attempts] == ["blocked"]
            assert record.last_error and "egress policy refused" in record.last_error
    assert public_server.hits["allowed"] == 1
    assert public_server.hits["redir"] == 1
    assert counting_server.hits["direct"] == 0
    assert counting_server.hits["hop"] == 0


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on 127.0.0.2 whose self-signed certificate names only ``egress.test``."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=egress.test",
         "-addext", "subjectAltName=DNS:egress.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    server = CountingServer(host="127.0.0.2")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server._server.socket = context.wrap_socket(server._server.socket, server_side=True)
    server.start()
    yield server.port, cert
    server.stop()


def test_https_keeps_the_name_for_sni_and_certificate_checks(tls_server: tuple[int, Path]) -> None:
    """Connecting to the checked IP must not weaken TLS: the certificate is checked against the name."""
    port, cert = tls_server
    policy = EgressPolicy(["127.0.0.2/32"])
    verify = ssl.create_default_context(cafile=str(cert))
    transport = EgressPolicyTransport(policy, resolver=lambda host, port: ["127.0.0.2"], verify=verify)
    with httpx.Client(transport=transport) as http:
        assert http.get(f"https://egress.test:{port}/ok?id=tls").text == "ok tls"
        # Same IP, other name: a pooled connection must not be reused for it.
        with pytest.raises(httpx.ConnectError, match="certificate"):
            http.get(f"https://other.test:{port}/ok?id=wrong-name")


def test_local_mode_applies_the_policy_too(tmp_path: Path, counting_server: CountingServer) -> None:
    settings = Settings(broker_url="local", store_dir=tmp_path / "store", fsync=False, block_private_addresses=True)
    with BackgroundHttpClient(settings) as client:
        info = client.get(counting_server.url("/ok?id=local"), retries=1)
        record = client.wait(info.request_id, timeout=60)
    assert record.status is RequestStatus.FAILED
    assert [a.outcome for a in record.attempts] == ["blocked"]
    assert counting_server.hits["local"] == 0
