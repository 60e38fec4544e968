"""Settings: one dataclass, read from ``BGHTTP_*`` environment variables in one place.

Every variable is documented in docs/configuration.md's table (tests/test_docs.py
checks that); keep the two in step. Every value is checked here, when a ``Settings`` is made (from the
environment or directly): a bad one raises :class:`ConfigError` naming the
variable and what it accepts, before anything starts.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import pwd
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from .errors import ConfigError
from .redaction import broker_url_secrets, redact_broker_url, redact_userinfo, scrub

LOCAL_BROKER = "local"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
QUEUE_TYPES = ("classic", "quorum")
#: RabbitMQ allows 255 bytes, and the longest of a worker's six queues adds ``.submit.XQ``
#: (``<name>``, ``.DQ``, ``.XQ``, and the intake's ``.submit``, ``.submit.DQ``, ``.submit.XQ``).
MAX_QUEUE_NAME_BYTES = 255 - len(".submit.XQ")
#: Linux's IFNAMSIZ is 16 bytes with the terminating NUL.
MAX_INTERFACE_NAME = 15


def default_store_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The store when ``BGHTTP_STORE_DIR`` is not set: ``$XDG_DATA_HOME/bghttp``, else ``~/.local/share/bghttp``.

    A per-user directory, so a client and a worker of one user find the same
    store whatever their current directories are.
    """
    env = os.environ if environ is None else environ
    data_home = env.get("XDG_DATA_HOME", "")
    if os.path.isabs(data_home):  # the XDG spec: a relative value is ignored
        return Path(data_home) / "bghttp"
    home = env.get("HOME") or _home_from_passwd()
    if not home or not os.path.isabs(home):
        raise ConfigError(
            "BGHTTP_STORE_DIR is not set and there is no home directory for the default store "
            "($XDG_DATA_HOME/bghttp or ~/.local/share/bghttp): set BGHTTP_STORE_DIR to a directory path"
        )
    return Path(home) / ".local" / "share" / "bghttp"


def _home_from_passwd() -> str | None:
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return None


@dataclasses.dataclass(frozen=True)
class Settings:
    #: ``amqp://...`` for RabbitMQ (several URLs separated by ``;`` for a cluster),
    #: or ``local`` for the embedded in-process broker.
    broker_url: str = "amqp://guest:guest@localhost:5672/"
    #: Root of the request/status/response store; a shared volume for a fleet.
    #: Always absolute: a relative path is resolved once, against the current
    #: directory when the settings are made. Default: :func:`default_store_dir`.
    store_dir: Path = dataclasses.field(default_factory=lambda: default_store_dir())
    #: The RabbitMQ queue the requests travel on.
    queue_name: str = "bghttp"
    #: ``classic`` (one node) or ``quorum`` (a cluster: replicated, a confirm means a
    #: majority has the message); the delay and dead-letter queues get the same type.
    queue_type: str = "classic"
    #: The RabbitMQ topic exchange final-status events go to (``request.completed`` …);
    #: the workers and ``cancel`` publish there. Local mode publishes no events.
    events_exchange: str = "bghttp.events"
    #: Multiplies every backoff delay (2, 4 … 512 s); tests use a small value.
    backoff_scale: float = 1.0
    #: Longest wait a server's ``Retry-After`` (429, 503) may impose before a retry, in
    #: seconds; ``backoff_scale`` does not shrink the server's value.
    max_retry_after: float = 3600.0
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
    #: Send the attempt span's W3C ``traceparent`` to the target (needs ``bghttp[otel]``).
    propagate_trace: bool = False
    #: Seconds a connection to one broker URL may take, TCP and AMQP handshake
    #: together; a listener that never answers fails the submit after this.
    broker_connect_timeout: float = 10.0
    #: Attempts one worker process runs at once (its Dramatiq threads: they mostly
    #: wait on sockets, so this is not a CPU setting).
    max_in_flight: int = 512
    #: Attempts one worker process runs at once against one (scheme, host, port);
    #: more wait for a free place without spending a retry.
    max_in_flight_per_host: int = 256
    #: Largest body (bytes, decoded) a submit message (``<BGHTTP_QUEUE>.submit``) may carry;
    #: a larger one is one ``request.rejected``. Bounds what the intake holds per message.
    max_submit_body: int = 16 * 1024 * 1024
    #: Seconds between a worker process's heartbeats in the store (``workers/``); 0: none.
    heartbeat_interval: float = 5.0

    def __post_init__(self) -> None:
        for field, rule in _RULES.items():
            value = getattr(self, field)
            try:
                checked = rule.check(value)
            except ConfigError:
                raise
            except (ValueError, TypeError) as error:
                raise _config_error(field, value, str(error)) from None
            if checked is not value:
                object.__setattr__(self, field, checked)

    def __repr__(self) -> str:
        # Settings end up in tracebacks, test reports and a host's debug logs: no broker or probe password there.
        shown = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        shown["broker_url"] = redact_broker_url(self.broker_url)
        shown["connectivity_probes"] = tuple(redact_userinfo(probe) for probe in self.connectivity_probes)
        return f"Settings({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    @property
    def is_local(self) -> bool:
        return self.broker_url == LOCAL_BROKER

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``); ``overrides`` win.

        Raises ConfigError (one line: the variable, its value, what it accepts).
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for field, rule in _RULES.items():
            raw = env.get(rule.variable)
            if raw is None or raw == "":
                continue
            try:
                values[field] = rule.check(rule.parse(raw))
            except ConfigError:
                raise
            except ValueError as error:
                raise _config_error(field, raw, str(error)) from None
        if "store_dir" not in values and "store_dir" not in overrides:
            values["store_dir"] = default_store_dir(env)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The ``BGHTTP_*`` variables that give another process these settings (``from_env``'s inverse)."""
        env = {}
        for field, rule in _RULES.items():
            variable = rule.variable
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


def _config_error(field: str, value: object, reason: str) -> ConfigError:
    """The one-line error for a bad setting; a broker URL's passwords never appear in it.

    pika's and urllib's parse errors may quote the URL, so the reason is
    scrubbed too. ``shown`` is the value as the message shows it (the CLI
    names its option with it).
    """
    shown = str(value)
    if field == "broker_url":
        secrets = broker_url_secrets(shown)
        shown, reason = redact_broker_url(shown), scrub(reason, secrets)
    error = ConfigError(f"{_RULES[field].variable}={shown!r}: {reason}")
    error.setting = field  # type: ignore[attr-defined]  # lets the CLI name its option instead
    error.reason = reason  # type: ignore[attr-defined]
    error.shown = shown  # type: ignore[attr-defined]
    return error


@dataclasses.dataclass(frozen=True)
class _Rule:
    """How one setting is read from its variable (``parse``) and checked (``check``).

    ``parse`` turns the variable's text into a value; ``check`` accepts a value
    (parsed, or given to ``Settings`` directly) and returns the one to keep.
    Both raise ValueError with what is accepted ("must be …").
    """

    variable: str
    parse: Callable[[str], Any]
    check: Callable[[Any], Any]


def _number(accepted: str, minimum: float, *, inclusive: bool) -> tuple[Callable[[str], Any], Callable[[Any], Any]]:
    def parse(raw: str) -> float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"must be {accepted}") from None

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ValueError(f"must be {accepted}")
        if not (value >= minimum if inclusive else value > minimum):
            raise ValueError(f"must be {accepted}")
        return float(value) if isinstance(value, int) else value

    return parse, check


def _whole(
    accepted: str, minimum: int, maximum: int | None = None, *, optional: bool = False, zero_is_none: bool = False
) -> tuple[Callable[[str], Any], Callable[[Any], Any]]:
    def parse(raw: str) -> int | None:
        if optional and raw.strip().lower() in ({"none", "0"} if zero_is_none else {"none"}):
            return None
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"must be {accepted}") from None

    def check(value: Any) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be {accepted}")
        if value < minimum or (maximum is not None and value > maximum):
            raise ValueError(f"must be {accepted}")
        return value

    return parse, check


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be one of 1/0, true/false, yes/no, on/off")


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be one of 1/0, true/false, yes/no, on/off")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.replace(";", ",").split(",") if item.strip())


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return _list(value)
    if not isinstance(value, (tuple, list)) or not all(isinstance(item, str) for item in value):
        raise ValueError("must be a comma-separated list")
    return value if isinstance(value, tuple) else tuple(value)


def _check_networks(value: Any) -> tuple[str, ...]:
    networks = _strings(value)
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ValueError(
                f"entry {network!r} is not a network; must be comma-separated networks in CIDR notation, "
                "e.g. 10.0.0.0/8,fd00::/8"
            ) from None
    return networks


def _check_probes(value: Any) -> tuple[str, ...]:
    probes = _strings(value)
    if probes:  # the parser lives with the probes, which load httpx and psutil: only for something to parse
        from .worker.connectivity import parse_probes  # connectivity imports this module

        parse_probes(probes)  # ConfigError naming the variable and the entry
    return probes


def _check_interfaces(value: Any) -> tuple[str, ...]:
    names = _strings(value)
    for name in names:
        if len(name) > MAX_INTERFACE_NAME or any(c.isspace() or c == "/" for c in name):
            raise ValueError(
                f"entry {name!r}: must be comma-separated interface names "
                f"(at most {MAX_INTERFACE_NAME} characters, no spaces or '/'), e.g. eth0,wlan0"
            )
    return names


def _check_choice(choices: tuple[str, ...], *, upper: bool) -> Callable[[Any], str]:
    accepted = ", ".join(choices[:-1]) + f" or {choices[-1]}"

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be {accepted}")
        normal = value.strip().upper() if upper else value.strip().lower()
        if normal not in choices:
            raise ValueError(f"must be {accepted}")
        return normal if normal != value else value

    return check


_BROKER_ACCEPTED = "must be 'local', or amqp:// or amqps:// URLs separated by ';'"


def _check_broker_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(_BROKER_ACCEPTED)
    if value == LOCAL_BROKER:
        return value
    urls = value.split(";")
    for url in urls:
        parts = urlsplit(url.strip())
        if parts.scheme.lower() not in ("amqp", "amqps") or not parts.hostname:
            raise ValueError(f"{_BROKER_ACCEPTED}, e.g. amqp://user:password@host:5672/")
        try:
            if _pika_would_check_more(parts):
                import pika  # loads asyncio: only for a URL with more to check than its port

                pika.URLParameters(url.strip())
            else:
                parts.port  # noqa: B018 (raises ValueError for a bad port, as pika's parse of such a URL would)
        except Exception as error:  # pika raises ValueError, IndexError … for a malformed URL
            raise ValueError(f"{_BROKER_ACCEPTED}; {redact_broker_url(url.strip())!r}: {error}") from None
    return value


def _pika_would_check_more(parts: SplitResult) -> bool:
    """Whether pika's parse of this URL checks more than its scheme, host and port.

    It does for query options, a TLS URL (it builds a TLS context) and a user
    without a password; for other URLs (the default one) the port is all, and
    the commands that never connect (``bghttp ls``) need not load pika to check it.
    tests/unit/test_config.py holds this to pika's verdicts.
    """
    user_without_password = parts.username is not None and parts.password is None
    return bool(parts.query) or parts.scheme.lower() == "amqps" or user_without_password


def _check_store_dir(value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)) or str(value) == "":
        raise ValueError("must be a directory path")
    path = Path(value)
    try:
        path = path.expanduser()
    except RuntimeError as error:  # ~someone with no such user
        raise ValueError(
            f"must be a directory path; ~ cannot be expanded: no such user's home directory ({error})"
        ) from None
    # Resolved once, now: a worker and a client in other directories must not
    # end up in different stores, and a later chdir must not move the store.
    return path if path.is_absolute() and isinstance(value, Path) else path.absolute()


def _check_queue(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.encode()) > MAX_QUEUE_NAME_BYTES:
        raise ValueError(f"must be a name of 1 to {MAX_QUEUE_NAME_BYTES} characters (UTF-8 bytes)")
    return value


def _check_queue_name(value: Any) -> str:
    name = _check_queue(value)
    if name.startswith("amq."):
        # RabbitMQ refuses to declare a queue so named (403): every submit and every worker would fail.
        raise ValueError("must not start with 'amq.', which RabbitMQ reserves for its own queues")
    return name


def _check_exchange_name(value: Any) -> str:
    name = _check_queue(value)
    if name.startswith("amq.") and name != "amq.topic":
        # RabbitMQ refuses to declare a new exchange so named (403): no event could ever be published.
        raise ValueError("must not start with 'amq.', which RabbitMQ reserves (its own amq.topic may be used)")
    return name


_POSITIVE = _number("a number > 0", 0, inclusive=False)
_NON_NEGATIVE = _number("a number >= 0", 0, inclusive=True)
_POSITIVE_INT = _whole("a whole number > 0", 1)

#: Each setting: its variable, how its text is parsed and how any value is checked.
_RULES: dict[str, _Rule] = {
    "broker_url": _Rule("BGHTTP_BROKER_URL", str.strip, _check_broker_url),
    "store_dir": _Rule("BGHTTP_STORE_DIR", Path, _check_store_dir),
    "queue_name": _Rule("BGHTTP_QUEUE", str, _check_queue_name),
    "queue_type": _Rule("BGHTTP_QUEUE_TYPE", str, _check_choice(QUEUE_TYPES, upper=False)),
    "events_exchange": _Rule("BGHTTP_EVENTS_EXCHANGE", str, _check_exchange_name),
    "backoff_scale": _Rule("BGHTTP_BACKOFF_SCALE", *_NON_NEGATIVE),
    "max_retry_after": _Rule("BGHTTP_MAX_RETRY_AFTER", *_NON_NEGATIVE),
    "default_timeout": _Rule("BGHTTP_DEFAULT_TIMEOUT", *_POSITIVE),
    "max_response_bytes": _Rule(
        "BGHTTP_MAX_RESPONSE_BYTES",
        *_whole("a whole number > 0 (or 0/none: no limit)", 1, optional=True, zero_is_none=True),
    ),
    "fsync": _Rule("BGHTTP_FSYNC", _parse_bool, _check_bool),
    "block_private_addresses": _Rule("BGHTTP_BLOCK_PRIVATE_ADDRESSES", _parse_bool, _check_bool),
    "egress_allow_networks": _Rule("BGHTTP_EGRESS_ALLOW_NETWORKS", _list, _check_networks),
    "connectivity_probes": _Rule("BGHTTP_CONNECTIVITY_PROBES", _list, _check_probes),
    "network_interfaces": _Rule("BGHTTP_NETWORK_INTERFACES", _list, _check_interfaces),
    "connectivity_interval": _Rule("BGHTTP_CONNECTIVITY_INTERVAL", *_POSITIVE),
    "offline_after_failures": _Rule("BGHTTP_OFFLINE_AFTER_FAILURES", *_POSITIVE_INT),
    "offline_hold_seconds": _Rule("BGHTTP_OFFLINE_HOLD_SECONDS", *_NON_NEGATIVE),
    "log_format": _Rule("BGHTTP_LOG_FORMAT", str, _check_choice(("json", "console", "auto"), upper=False)),
    "log_level": _Rule("BGHTTP_LOG_LEVEL", str, _check_choice(LOG_LEVELS, upper=True)),
    "metrics_port": _Rule(
        "BGHTTP_METRICS_PORT", *_whole("a port number from 1 to 65535", 1, 65535, optional=True)
    ),
    "local_threads": _Rule("BGHTTP_LOCAL_THREADS", *_POSITIVE_INT),
    "local_rescan_interval": _Rule("BGHTTP_LOCAL_RESCAN_INTERVAL", *_NON_NEGATIVE),
    "local_orphan_after": _Rule("BGHTTP_LOCAL_ORPHAN_AFTER", *_NON_NEGATIVE),
    "broker_connect_timeout": _Rule("BGHTTP_BROKER_CONNECT_TIMEOUT", *_POSITIVE),
    "propagate_trace": _Rule("BGHTTP_PROPAGATE_TRACE", _parse_bool, _check_bool),
    "max_in_flight": _Rule("BGHTTP_MAX_IN_FLIGHT", *_whole("a whole number from 1 to 4096", 1, 4096)),
    "max_in_flight_per_host": _Rule("BGHTTP_MAX_IN_FLIGHT_PER_HOST", *_POSITIVE_INT),
    "max_submit_body": _Rule(
        "BGHTTP_MAX_SUBMIT_BODY", *_whole("a whole number of bytes from 0 to 100663296 (96 MiB)", 0, 96 * 1024 * 1024)
    ),
    "heartbeat_interval": _Rule("BGHTTP_HEARTBEAT_INTERVAL", *_NON_NEGATIVE),
}

#: Each setting's ``BGHTTP_*`` variable.
SETTING_VARIABLES: dict[str, str] = {field: rule.variable for field, rule in _RULES.items()}

__all__ = ["LOCAL_BROKER", "SETTING_VARIABLES", "ConfigError", "Settings", "default_store_dir"]
