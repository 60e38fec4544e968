"""Is this worker online? Two signals, checked in the background, without flapping.

* **Interfaces** (psutil): an interface counts when it is up and has a usable
  address (not loopback, not link-local). With ``BGHTTP_NETWORK_INTERFACES``
  only the named interfaces count, and the signal always decides. Without it,
  the signal decides only once the worker has seen some interface with a usable
  address; a host that never had one (a loopback-only container) gives no
  interface signal, so it is never "offline" for want of an interface there.
* **Probes** (``BGHTTP_CONNECTIVITY_PROBES``): ``tcp://host:port`` (a TCP
  connect) or ``http(s)://...`` (any HTTP answer, whatever its status). The
  probe signal is good when any probe answers.

A check passes when neither signal says no. The monitor turns offline after
``offline_after_failures`` failed checks in a row and online again after one
passing check. ``check_now()`` (used after a network error) confirms a failure
at once with a few quick checks instead of waiting for the next interval.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import psutil

from ..config import ConfigError, Settings
from ..logs import get_logger
from ..redaction import broker_url_secrets, redact_userinfo, scrub
from . import metrics
from .http_env import HttpEnvironment, load_http_environment

#: Longest a single probe may take; shorter when the check interval is shorter.
MAX_PROBE_TIMEOUT_SECONDS = 5.0
#: Pause between the confirming checks of ``check_now()``.
MAX_CONFIRM_PAUSE_SECONDS = 0.5


# ------------------------------------------------------------------- probes
class Probe(Protocol):
    @property
    def spec(self) -> str: ...

    def check(self, timeout: float) -> str | None:
        """None when the target answered, else why not."""


@dataclasses.dataclass(frozen=True)
class TcpProbe:
    spec: str
    host: str
    port: int

    def check(self, timeout: float) -> str | None:
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout):
                return None
        except OSError as error:
            return f"{redact_userinfo(self.spec)}: {error.strerror or error}"


@dataclasses.dataclass(frozen=True)
class HttpProbe:
    spec: str
    #: The worker's TLS context and proxy routes, as read at its start: a probe takes the path its
    #: requests take (no proxy at all under the egress policy). None: direct, default TLS.
    environment: HttpEnvironment | None = dataclasses.field(default=None, compare=False, repr=False)

    def check(self, timeout: float) -> str | None:
        # Not httpx.head: it reads the proxy variables itself, and went through HTTP_PROXY
        # while the egress policy made the worker's requests ignore it.
        environment = self.environment or HttpEnvironment(httpx.create_ssl_context(trust_env=False))
        try:
            with environment.client(1) as client:
                # Any answer proves the path to the server works; its status does not matter.
                client.head(self.spec, timeout=timeout)
        except httpx.HTTPError as error:
            return f"{redact_userinfo(self.spec)}: {type(error).__name__}: {error}"
        return None


def parse_probe(spec: str, environment: HttpEnvironment | None = None) -> Probe:
    """``tcp://host:port`` or an http(s) URL (sent as ``environment`` says); anything else raises ConfigError."""
    where = f"BGHTTP_CONNECTIVITY_PROBES entry {redact_userinfo(spec)!r}"
    try:
        parts = urlsplit(spec)
        port = parts.port
    except ValueError as error:  # urllib's message may quote a piece of the password
        raise ConfigError(f"{where}: {scrub(str(error), broker_url_secrets(spec))}") from None
    scheme = parts.scheme.lower()
    if not parts.hostname:
        raise ConfigError(f"{where}: no host; use tcp://host:port or an http(s):// URL")
    if scheme == "tcp":
        if port is None:
            raise ConfigError(f"{where}: a tcp probe needs a port, e.g. tcp://example.com:443")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigError(f"{where}: a tcp probe is only tcp://host:port")
        return TcpProbe(spec, parts.hostname, port)
    if scheme in ("http", "https"):
        return HttpProbe(spec, environment)
    raise ConfigError(f"{where}: unknown scheme {parts.scheme!r}; use tcp://host:port or an http(s):// URL")


def parse_probes(specs: Sequence[str], environment: HttpEnvironment | None = None) -> tuple[Probe, ...]:
    return tuple(parse_probe(spec, environment) for spec in specs)


# --------------------------------------------------------------- interfaces
@dataclasses.dataclass(frozen=True)
class InterfaceInfo:
    is_up: bool
    addresses: tuple[str, ...]

    @property
    def usable(self) -> bool:
        return self.is_up and any(_is_usable_address(address) for address in self.addresses)


def _is_usable_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_unspecified)


def read_interfaces() -> dict[str, InterfaceInfo]:
    """psutil's view of the network interfaces: up or not, and their IP addresses."""
    stats = psutil.net_if_stats()
    addresses = psutil.net_if_addrs()
    families = (socket.AF_INET, socket.AF_INET6)
    return {
        name: InterfaceInfo(
            is_up=stat.isup,
            addresses=tuple(a.address for a in addresses.get(name, ()) if a.family in families),
        )
        for name, stat in stats.items()
    }


# ------------------------------------------------------------------ monitor
class ConnectivityMonitor:
    """Online/offline for one worker process. Thread-safe; one per process.

    ``start()`` runs a first check at once, then one every ``connectivity_interval``
    seconds on a daemon thread. The monitor starts optimistic (online).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        read_interfaces: Callable[[], Mapping[str, InterfaceInfo]] = read_interfaces,
    ) -> None:
        environment = None
        if any(not spec.lower().startswith("tcp:") for spec in settings.connectivity_probes):
            # The variables were checked when the worker started (a bad one stopped it there).
            environment = load_http_environment(use_proxies=not settings.block_private_addresses)
        self.probes = parse_probes(settings.connectivity_probes, environment)
        self.interfaces = settings.network_interfaces
        self.interval = settings.connectivity_interval
        self.failures_to_offline = settings.offline_after_failures
        self.probe_timeout = min(MAX_PROBE_TIMEOUT_SECONDS, self.interval)
        self.confirm_pause = min(MAX_CONFIRM_PAUSE_SECONDS, self.interval)
        self._read_interfaces = read_interfaces
        self._seen_usable_interface = False
        self._log = get_logger(component="connectivity", pid=os.getpid())

        self._state_lock = threading.Lock()
        self._check_lock = threading.Lock()  # one check at a time: probes are not free
        self._online_event = threading.Event()
        self._online_event.set()
        self._failures = 0
        self._offline_since: float | None = None
        self._held: set[str] = set()
        self._last_check_at = float("-inf")
        self._last_pass_at = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ public
    def is_online(self) -> bool:
        return self._online_event.is_set()

    def offline_since(self) -> float | None:
        """Wall-clock time (``time.time()``) the monitor said offline; None while online."""
        with self._state_lock:
            since = self._offline_since
        return None if since is None else time.time() - (time.monotonic() - since)

    def wait_online(self, timeout: float | None = None) -> bool:
        """Block until online or ``timeout`` seconds passed; True if online."""
        return self._online_event.wait(timeout)

    def check_now(self) -> bool:
        """Check at once (confirming a failure with quick re-checks); return whether online.

        Callers that waited behind a concurrent check reuse its result when it
        finished after they asked, so a burst of failing requests probes once.
        """
        asked_at = time.monotonic()
        with self._check_lock:
            if self._last_pass_at > asked_at:
                return True
            if not self.is_online() and self._last_check_at > asked_at:
                return False
            for _ in range(self.failures_to_offline):
                passed = self._check_locked()
                if passed or not self.is_online():
                    break
                self._stop.wait(self.confirm_pause)
            return self.is_online()

    def note_held(self, request_id: str) -> None:
        """Count a request held back by the outage (reported in ``network_online``)."""
        with self._state_lock:
            if self._offline_since is not None:
                self._held.add(request_id)

    def start(self) -> None:
        """First check now, then the background thread. Idempotent."""
        if self._thread is not None:
            return
        self._log.info(
            "connectivity_monitor_started",
            probes=[redact_userinfo(probe.spec) for probe in self.probes],
            interfaces=list(self.interfaces) or "any",
            interval_s=self.interval,
            offline_after_failures=self.failures_to_offline,
        )
        self.check_now()
        self._thread = threading.Thread(target=self._loop, name="bghttp-connectivity", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=MAX_PROBE_TIMEOUT_SECONDS + 1)

    def poll(self) -> bool:
        """One scheduled check (what the background thread runs every interval).

        One failed poll alone does not turn the monitor offline; returns whether online.
        """
        with self._check_lock:
            self._check_locked()
        return self.is_online()

    # ---------------------------------------------------------- checking
    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # a monitor that dies would freeze the state: keep going
                self._log.exception("connectivity_check_crashed")

    def _check_locked(self) -> bool:
        reason = self._interfaces_failure() or self._probes_failure()
        self._last_check_at = time.monotonic()
        if reason is None:
            self._last_pass_at = self._last_check_at
        self._record(reason)
        return reason is None

    def _interfaces_failure(self) -> str | None:
        interfaces = self._read_interfaces()
        if self.interfaces:
            if any(interfaces.get(name, _MISSING).usable for name in self.interfaces):
                return None
            return "none of BGHTTP_NETWORK_INTERFACES is up with an address: " + _describe(interfaces, self.interfaces)
        if any(info.usable for info in interfaces.values()):
            self._seen_usable_interface = True
            return None
        if not self._seen_usable_interface:
            return None  # never had a usable interface: psutil cannot tell us anything here
        return "no interface is up with a non-loopback address: " + _describe(interfaces, sorted(interfaces))

    def _probes_failure(self) -> str | None:
        if not self.probes:
            return None
        errors = []
        for probe in self.probes:
            error = probe.check(self.probe_timeout)
            if error is None:
                return None
            errors.append(error)
        return "no probe answered: " + "; ".join(errors)

    def _record(self, reason: str | None) -> None:
        with self._state_lock:
            if reason is None:
                self._failures = 0
                if self._offline_since is not None:
                    offline_s = time.monotonic() - self._offline_since
                    self._log.info("network_online", offline_s=round(offline_s, 3), held_requests=len(self._held))
                    metrics.connectivity_changed(True)
                    self._offline_since = None
                    self._held.clear()
                    self._online_event.set()
                return
            self._failures += 1
            if self._offline_since is None and self._failures >= self.failures_to_offline:
                self._offline_since = time.monotonic()
                self._online_event.clear()
                self._log.warning("network_offline", reason=reason, failed_checks=self._failures)
                metrics.connectivity_changed(False)
            elif self._offline_since is None:
                self._log.info("connectivity_check_failed", reason=reason, failed_checks=self._failures)


_MISSING = InterfaceInfo(is_up=False, addresses=())


def _describe(interfaces: Mapping[str, InterfaceInfo], names: Sequence[str]) -> str:
    def one(name: str) -> str:
        info = interfaces.get(name)
        if info is None:
            return f"{name} missing"
        return f"{name} {'up' if info.is_up else 'down'}" + ("" if info.usable or not info.is_up else " (no address)")

    return ", ".join(one(name) for name in names) or "no interfaces"


class MonitorHolder:
    """The process's one ConnectivityMonitor, created on first use.

    Dramatiq forks worker processes; a monitor (and its thread) made before the
    fork would not run in the child, so each process builds its own. Probe specs
    are parsed here, at set-up, so a bad ``BGHTTP_CONNECTIVITY_PROBES`` stops the
    worker at start with a ConfigError instead of failing every message.
    """

    def __init__(self, settings: Settings, factory: Callable[[Settings], ConnectivityMonitor] | None = None) -> None:
        parse_probes(settings.connectivity_probes)
        self.settings = settings
        self._factory = factory or ConnectivityMonitor
        self._monitor: ConnectivityMonitor | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def get(self) -> ConnectivityMonitor:
        with self._lock:
            if self._monitor is None or self._pid != os.getpid():
                self._monitor = self._factory(self.settings)
                self._pid = os.getpid()
                self._monitor.start()
            return self._monitor

    def current(self) -> ConnectivityMonitor | None:
        """This process's monitor if it was built, without building one."""
        with self._lock:
            return self._monitor if self._pid == os.getpid() else None

    def stop(self) -> None:
        with self._lock:
            if self._monitor is not None and self._pid == os.getpid():
                self._monitor.stop()
            self._monitor = None
