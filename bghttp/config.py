"""Settings: one dataclass, read from ``BGHTTP_*`` environment variables in one place.

Every variable is documented in the README's "Configuration" table; keep the two
in step.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from .errors import BghttpError

LOCAL_BROKER = "local"


class ConfigError(BghttpError, ValueError):
    """A ``BGHTTP_*`` variable has a value that cannot be used."""


@dataclasses.dataclass(frozen=True)
class Settings:
    #: ``amqp://...`` for RabbitMQ (several URLs separated by ``;`` for a cluster),
    #: or ``local`` for the embedded in-process broker.
    broker_url: str = "amqp://guest:guest@localhost:5672/"
    #: Root of the request/status/response store; a shared volume for a fleet.
    store_dir: Path = Path("./bghttp-store")
    #: The RabbitMQ queue the requests travel on.
    queue_name: str = "bghttp"
    #: Multiplies every backoff delay (2, 4 … 512 s); tests use a small value.
    backoff_scale: float = 1.0
    #: Seconds an attempt may take when the request does not say.
    default_timeout: float = 60.0
    #: Largest response body kept; a larger one fails the request (None: no limit).
    max_response_bytes: int | None = None
    #: fsync files and directories so that an accepted request survives power loss.
    fsync: bool = True
    #: Refuse requests to loopback, private, link-local and metadata addresses.
    block_private_addresses: bool = False
    #: Networks (CIDR) the egress policy lets through anyway, e.g. an internal API.
    egress_allow_networks: tuple[str, ...] = ()
    #: Active connectivity probes (``tcp://host:port`` or http(s) URLs); empty: none.
    connectivity_probes: tuple[str, ...] = ()
    #: Interfaces that count for "online" (empty: any non-loopback interface).
    network_interfaces: tuple[str, ...] = ()
    #: Seconds between connectivity checks.
    connectivity_interval: float = 5.0
    #: Consecutive failed checks before the monitor says "offline".
    offline_after_failures: int = 2
    #: Seconds a worker thread holds a message while offline before handing it back
    #: to the broker as a delayed message (keeps far below RabbitMQ's consumer_timeout).
    offline_hold_seconds: float = 30.0
    #: ``json``, ``console`` or ``auto`` (console on a terminal, JSON otherwise).
    log_format: str = "auto"
    log_level: str = "INFO"
    #: Port of the worker's Prometheus endpoint (``bghttp worker --metrics-port``); None: off.
    metrics_port: int | None = None
    #: Local mode: worker threads of the in-process worker.
    local_threads: int = 4
    #: Local mode: seconds between scans of the store for orphaned requests (0: never).
    local_rescan_interval: float = 5.0
    #: Local mode: a request nobody holds counts as orphaned when its status record has
    #: not changed (or its retry was due) this many seconds ago; then a scan picks it up.
    local_orphan_after: float = 60.0

    @property
    def is_local(self) -> bool:
        return self.broker_url == LOCAL_BROKER

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``); ``overrides`` win."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field, (variable, parse) in _VARIABLES.items():
            raw = env.get(variable)
            if raw is None or raw == "":
                continue
            try:
                values[field] = parse(raw)
            except ValueError as error:
                raise ConfigError(f"{variable}={raw!r}: {error}") from None
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The ``BGHTTP_*`` variables that give another process these settings (``from_env``'s inverse)."""
        env = {}
        for field, (variable, _) in _VARIABLES.items():
            value = getattr(self, field)
            if value is None or value == ():
                continue  # unset: the other process takes the default too
            if isinstance(value, bool):
                env[variable] = "1" if value else "0"
            elif isinstance(value, tuple):
                env[variable] = ",".join(value)
            elif isinstance(value, float):
                env[variable] = repr(value)
            else:
                env[variable] = str(value)
        return env


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a number > 0")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must be a number >= 0")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("must be a port number from 1 to 65535")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a whole number > 0")
    return value


def _optional_positive_int(raw: str) -> int | None:
    if raw.strip().lower() in {"none", "0"}:
        return None
    return _positive_int(raw)


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be one of 1/0, true/false, yes/no, on/off")


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.replace(";", ",").split(",") if item.strip())


def _networks(raw: str) -> tuple[str, ...]:
    networks = _list(raw)
    for network in networks:
        ipaddress.ip_network(network, strict=False)  # ValueError names the bad entry
    return networks


def _log_format(raw: str) -> str:
    lowered = raw.strip().lower()
    if lowered not in {"json", "console", "auto"}:
        raise ValueError("must be json, console or auto")
    return lowered


#: Each setting and the variable it is read from, with its parser.
_VARIABLES: dict[str, tuple[str, Callable[[str], object]]] = {
    "broker_url": ("BGHTTP_BROKER_URL", str),
    "store_dir": ("BGHTTP_STORE_DIR", Path),
    "queue_name": ("BGHTTP_QUEUE", str),
    "backoff_scale": ("BGHTTP_BACKOFF_SCALE", _non_negative_float),
    "default_timeout": ("BGHTTP_DEFAULT_TIMEOUT", _positive_float),
    "max_response_bytes": ("BGHTTP_MAX_RESPONSE_BYTES", _optional_positive_int),
    "fsync": ("BGHTTP_FSYNC", _bool),
    "block_private_addresses": ("BGHTTP_BLOCK_PRIVATE_ADDRESSES", _bool),
    "egress_allow_networks": ("BGHTTP_EGRESS_ALLOW_NETWORKS", _networks),
    "connectivity_probes": ("BGHTTP_CONNECTIVITY_PROBES", _list),
    "network_interfaces": ("BGHTTP_NETWORK_INTERFACES", _list),
    "connectivity_interval": ("BGHTTP_CONNECTIVITY_INTERVAL", _positive_float),
    "offline_after_failures": ("BGHTTP_OFFLINE_AFTER_FAILURES", _positive_int),
    "offline_hold_seconds": ("BGHTTP_OFFLINE_HOLD_SECONDS", _non_negative_float),
    "log_format": ("BGHTTP_LOG_FORMAT", _log_format),
    "log_level": ("BGHTTP_LOG_LEVEL", str.upper),
    "metrics_port": ("BGHTTP_METRICS_PORT", _port),
    "local_threads": ("BGHTTP_LOCAL_THREADS", _positive_int),
    "local_rescan_interval": ("BGHTTP_LOCAL_RESCAN_INTERVAL", _non_negative_float),
    "local_orphan_after": ("BGHTTP_LOCAL_ORPHAN_AFTER", _non_negative_float),
}
