"""The egress policy: refuse requests to loopback, private, link-local and metadata addresses.

Opt-in with ``BGHTTP_BLOCK_PRIVATE_ADDRESSES=1``. The policy sits in
the worker's httpx transport, at the point where a TCP connection is opened, so
it sees every connection the worker makes, including those of each redirect hop
(httpx follows redirects through the same transport).

For each new connection it resolves the host once, checks *every* address the
name resolves to, and then connects to a checked address itself. A DNS answer
that changes between the check and the connect (DNS rebinding) therefore cannot
reach an address that was not checked. The URL, the ``Host`` header and the TLS
server name are untouched, so virtual hosts and certificate checks work as
before, and pooled connections stay keyed by host name.

``allow_networks`` (``BGHTTP_EGRESS_ALLOW_NETWORKS``) exempts networks an
operator trusts, e.g. an internal API; the cloud metadata addresses stay blocked
even then. Environment proxies (``HTTP(S)_PROXY``) are ignored while the policy
is on: behind a proxy the worker could not see where a request really goes.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import httpcore
import httpx

from .attempt_io import wrap_network_backend
from .execution import EgressBlocked

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``resolve(host, port)`` -> the addresses a connection to ``host`` could reach.
Resolver = Callable[[str, int], Sequence[str]]
SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]

#: Cloud instance metadata endpoints (AWS/GCP/Azure/OpenStack, AWS over IPv6):
#: blocked even inside an allowed network, since they hand out credentials.
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)

#: The well-known NAT64 prefix: the IPv4 address is the low 32 bits. (The
#: local-use prefix 64:ff9b:1::/48 is not global, so it is refused outright.)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for ``host`` (TCP), in its order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: {error}") from None
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class EgressPolicy:
    """Decides whether one IP address may be contacted."""

    def __init__(self, allow_networks: Iterable[str | IPNetwork] = ()) -> None:
        self.allow_networks = tuple(
            n if isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network) else ipaddress.ip_network(n, strict=False)
            for n in allow_networks
        )

    def refusal(self, address: str) -> str | None:
        """Why ``address`` is refused, or None if it may be contacted."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
        except ValueError:
            return f"{address!r} is not an IP address"
        if ip in METADATA_ADDRESSES or _embedded_ipv4(ip) in METADATA_ADDRESSES:
            return f"{ip} is a cloud metadata address"
        if any(ip in network for network in self.allow_networks):
            return None
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            # ::ffff:127.0.0.1, 2002:7f00:1:: and 64:ff9b::7f00:1 lead to IPv4 hosts: judge those.
            reason = self.refusal(str(embedded))
            return None if reason is None else f"{ip} maps to {reason}"
        return _special_use(ip)


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:  # 2002:7f00:1::/48 leads to 127.0.0.1
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _special_use(ip: IPAddress) -> str | None:
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        # Anything else not globally routable: shared 100.64/10, documentation, 6to4 relays ...
        ("not globally routable", not ip.is_global),
    )
    for name, hit in checks:
        if hit:
            return f"{ip} is a {name} address"
    return None


class CheckedNetworkBackend(httpcore.NetworkBackend):
    """Resolves, checks every address, then connects to a checked address itself."""

    def __init__(self, policy: EgressPolicy, resolver: Resolver, backend: httpcore.NetworkBackend) -> None:
        self.policy = policy
        self.resolver = resolver
        self.backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = [host] if _is_ip_literal(host) else list(self.resolver(host, port))
        if not addresses:
            raise httpcore.ConnectError(f"{host!r} resolved to no address")
        for address in addresses:
            reason = self.policy.refusal(address)
            if reason is not None:
                raise EgressBlocked(f"egress policy refused {host}:{port}: {reason}")
        error: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return self.backend.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as failed:  # try the next checked address
                error = failed
        assert error is not None
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> httpcore.NetworkStream:
        raise EgressBlocked(f"egress policy refused the Unix socket {path!r}")

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


class EgressPolicyTransport(httpx.HTTPTransport):
    """httpx's own transport, with every new connection going through the policy.

    The pool stays keyed by host name, so TLS names and verifies the host the
    caller asked for, and a kept-alive connection is only ever reused for the
    name it was opened (and checked) for. ``transport_options`` are those of
    ``httpx.HTTPTransport`` (``verify``, ``limits`` ...); a proxy is refused.
    """

    def __init__(
        self, policy: EgressPolicy | None = None, *, resolver: Resolver | None = None, **transport_options: Any
    ) -> None:
        if transport_options.get("proxy") is not None or transport_options.get("uds") is not None:
            raise ValueError("the egress policy cannot check connections made through a proxy or a Unix socket")
        super().__init__(**transport_options)
        self.policy = policy or EgressPolicy()
        checked_resolver = resolver or system_resolver
        wrap_network_backend(self, lambda backend: CheckedNetworkBackend(self.policy, checked_resolver, backend))


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def egress_transport(
    allow_networks: Iterable[str] = (), *, pool_size: int = 16, verify: ssl.SSLContext | bool = True
) -> EgressPolicyTransport:
    """The transport a worker uses when ``BGHTTP_BLOCK_PRIVATE_ADDRESSES`` is on."""
    limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
    return EgressPolicyTransport(EgressPolicy(allow_networks), limits=limits, verify=verify)
