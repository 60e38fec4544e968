"""The worker's HTTP environment: the TLS and proxy variables, read and checked once, at start.

httpx reads ``SSL_CERT_FILE``/``SSL_CERT_DIR`` and the proxy variables each
time a client is made, and a worker thread made its client on its first
message: a variable httpx cannot use (a SOCKS proxy without socksio, a CA file
that does not exist, a proxy URL with a bad port) then crashed every message
inside the actor, through Dramatiq's retries into the dead-letter queue, and
left every request ``queued`` with nothing said. Here the variables are read
once, when the worker starts (``bghttp worker``, ``dramatiq bghttp.actors``,
local mode): a bad one is a :class:`~bghttp.errors.ConfigError` naming it
(one line, exit code 2), and every thread's client is built from what was
read, so none can fail later on the environment.

Honoured (docs/configuration.md, "Proxies and TLS"): ``SSL_CERT_FILE``, else
``SSL_CERT_DIR`` (else certifi's CA bundle); ``HTTP_PROXY``, ``HTTPS_PROXY``,
``ALL_PROXY`` and ``NO_PROXY`` (lower-case names win, as in urllib), with
httpx's meaning, unless ``BGHTTP_BLOCK_PRIVATE_ADDRESSES`` is on: the egress
policy must see the address it connects to, so it ignores every proxy.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import ssl
import sys
from collections.abc import Mapping

import httpx

from ..errors import ConfigError
from ..redaction import broker_url_secrets, redact_url, redact_userinfo, request_secrets, scrub
from .execution import build_http_client

PROXY_SCHEMES = ("http", "https", "all")
#: Where this is documented, for the error lines.
DOCS = 'docs/configuration.md, "Proxies and TLS"'


@dataclasses.dataclass(frozen=True)
class HttpEnvironment:
    """What a worker process sends with: one TLS context and the proxy routes, as read at start."""

    tls: ssl.SSLContext
    #: httpx mount patterns (``"https://"``, ``"all://*example.com"``) to a proxy URL, or None: no proxy.
    proxies: Mapping[str, str | None] = dataclasses.field(default_factory=dict)

    def client(self, pool_size: int) -> httpx.Client:
        """A new client (a pool of ``pool_size`` connections) that sends as this environment says."""
        limits = httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
        mounts: dict[str, httpx.BaseTransport | None] = {
            pattern: None if url is None else httpx.HTTPTransport(proxy=url, verify=self.tls, limits=limits)
            for pattern, url in self.proxies.items()
        }
        # trust_env=False: the environment was read once, here; nothing is read again per client.
        return build_http_client(pool_size=pool_size, verify=self.tls, trust_env=False, mounts=mounts)


def load_http_environment(*, use_proxies: bool, environ: Mapping[str, str] | None = None) -> HttpEnvironment:
    """Read and check the TLS and (if ``use_proxies``) proxy variables; ConfigError names a bad one."""
    env = os.environ if environ is None else environ
    environment = HttpEnvironment(_tls_context(env), _proxy_routes(env) if use_proxies else {})
    try:
        environment.client(1).close()  # what every worker thread will build, once now
    except Exception as error:
        raise ConfigError(f"the proxy variables cannot be used: {_proxy_reason(error)} ({DOCS})") from None
    return environment


def _tls_context(env: Mapping[str, str]) -> ssl.SSLContext:
    # httpx's own choice (``create_ssl_context``), with the variables checked first.
    cafile, capath = env.get("SSL_CERT_FILE"), env.get("SSL_CERT_DIR")
    _check_key_log()
    try:
        if cafile:
            return ssl.create_default_context(cafile=cafile)
        if capath:
            if not os.path.isdir(capath):
                raise NotADirectoryError(f"{capath} is not a directory")
            return ssl.create_default_context(capath=capath)
        return httpx.create_ssl_context(trust_env=False)
    except (OSError, ssl.SSLError) as error:
        name, value = ("SSL_CERT_FILE", cafile) if cafile else ("SSL_CERT_DIR", capath)
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        what = "a PEM file of CA certificates" if name == "SSL_CERT_FILE" else "a directory of CA certificates"
        raise ConfigError(
            f"{name}={value!r}: cannot load CA certificates ({reason}); a worker verifies TLS with it: "
            f"point it at {what}, or unset it for the default bundle ({DOCS})"
        ) from None


def _check_key_log() -> None:
    """``ssl.create_default_context`` opens ``SSLKEYLOGFILE`` (from ``os.environ``) for every
    context: an unwritable one failed the context, and was named as a CA variable."""
    path = os.environ.get("SSLKEYLOGFILE")
    if not path or sys.flags.ignore_environment:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).keylog_filename = path
    except OSError as error:
        raise ConfigError(
            f"SSLKEYLOGFILE={path!r}: cannot open it to log TLS keys ({error.strerror or error}); "
            f"point it at a writable file or unset it ({DOCS})"
        ) from None


def _proxy_routes(env: Mapping[str, str]) -> dict[str, str | None]:
    """httpx's mounts for the proxy variables (as ``httpx.Client(trust_env=True)`` builds them)."""
    found = _proxy_variables(env)
    routes: dict[str, str | None] = {}
    for scheme in PROXY_SCHEMES:
        if scheme in found:
            _, value = found[scheme]
            url = value if "://" in value else f"http://{value}"
            routes[f"{scheme}://"] = url
            _check_proxy(scheme, url, found)
    if "no" in found:
        for host in (entry.strip() for entry in found["no"][1].split(",")):
            if host == "*":
                return {}
            if host:
                pattern = _no_proxy_pattern(host)
                routes[pattern] = None
                _check_pattern(pattern, host, found["no"])
    return routes if any(url is not None for url in routes.values()) else {}


def _proxy_variables(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``{"http": (variable, value), ...}`` as urllib reads them: a set lower-case name wins."""
    found: dict[str, tuple[str, str]] = {}
    for name, value in env.items():
        if name.lower().endswith("_proxy") and value and not name.endswith("_proxy"):
            found[name[:-6].lower()] = (name, value)
    if "REQUEST_METHOD" in env:  # CGI: a client's "Proxy:" header arrives as HTTP_PROXY (httpoxy)
        found.pop("http", None)
    for name, value in env.items():
        if name.endswith("_proxy"):
            if value:
                found[name[:-6].lower()] = (name, value)
            else:
                found.pop(name[:-6].lower(), None)
    return found


def _no_proxy_pattern(host: str) -> str:
    # httpx's reading of NO_PROXY (curl's): a domain also matches its subdomains.
    if "://" in host:
        return host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"all://{host}" if host.lower() == "localhost" else f"all://*{host}"
    return f"all://[{host}]" if address.version == 6 else f"all://{host}"


def _check_proxy(scheme: str, url: str, found: Mapping[str, tuple[str, str]]) -> None:
    try:
        httpx.HTTPTransport(proxy=url)  # httpx's own checks: the URL, the scheme, socksio for SOCKS
    except Exception as error:
        raise _variable_error(found[scheme], _proxy_reason(error)) from None
    # httpx takes a proxy with no host, a port past 65535 or a space in its host, and every
    # request through it then fails to connect (a network_error, retried): refuse them here.
    parsed = httpx.URL(url)
    host = parsed.raw_host.decode("ascii", "replace")  # an international name in its IDNA form
    if not host:
        raise _variable_error(found[scheme], "not a usable proxy URL: it has no host")
    if not _PROXY_HOST.fullmatch(host):
        raise _variable_error(found[scheme], f"not a usable proxy URL: {host!r} is not a host name or address")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise _variable_error(found[scheme], f"not a usable proxy URL: port {parsed.port} is out of range")


#: A proxy's host as httpx encodes it: an (IDNA) name, an IPv4 address, or an IPv6 one (without brackets).
_PROXY_HOST = re.compile(r"[A-Za-z0-9._-]+|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*")


def _check_pattern(pattern: str, entry: str, variable: tuple[str, str]) -> None:
    try:
        httpx.Client(trust_env=False, mounts={pattern: None}, verify=False).close()
    except Exception as error:
        raise _variable_error(variable, f"entry {entry!r} is not a host, domain or URL ({error})") from None


def _proxy_reason(error: Exception) -> str:
    if isinstance(error, ImportError):
        return "a SOCKS proxy needs the socksio package: pip install 'httpx[socks]'"
    if isinstance(error, ValueError) and "scheme" in str(error).lower():
        return "not a usable proxy URL: the scheme must be http, https, socks5 or socks5h"
    return f"not a usable proxy URL ({error})"


def _variable_error(variable: tuple[str, str], reason: str) -> ConfigError:
    name, value = variable
    # A value without a scheme is read as http:// (so is its password); a password with an
    # unencoded '/', '?' or '#' is cut there by httpx, which then quotes a piece ("Invalid port: 'pa'").
    url = value if "://" in value else f"http://{value}"
    secrets = [*broker_url_secrets(url), *request_secrets([], url)]
    try:
        shown = redact_userinfo(redact_url(url))
        shown = shown if url is value else shown.removeprefix("http://")
    except Exception:  # too malformed to find its password: show none of it
        shown = "<not shown>"
    return ConfigError(
        f"{name}={shown!r}: {scrub(reason, secrets)}; a worker reads it at start to route its requests ({DOCS})"
    )


__all__ = ["HttpEnvironment", "load_http_environment"]
