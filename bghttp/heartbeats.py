"""Worker heartbeats: each worker process keeps a small record of itself in the store it serves.

Layout: ``<store>/workers/<host>-<pid>.json`` (directory 0700, file 0600), one
per worker process (``<host>-<pid>-<random>.json`` when another live process has
the same host name and PID: containers on host networking) (a ``bghttp worker`` / ``dramatiq bghttp.actors`` worker
process, or a local-mode worker). :class:`HeartbeatWriter` rewrites it every
``BGHTTP_HEARTBEAT_INTERVAL`` seconds (default 5; 0: no heartbeats) on a thread
of its own: a new file under a temporary name (``O_EXCL | O_NOFOLLOW``), then
renamed over the record, so a reader sees a whole record or the one before.
A worker that stops cleanly removes its record; one that dies leaves it, and the
record goes *stale* once it has not been rewritten for
:data:`STALE_AFTER_INTERVALS` of the writer's intervals.

Times. ``clock`` is the worker's wall clock when it wrote the record;
``last_seen`` is the file's modification time, which the filesystem stamps:
on one machine that is the same clock, on NFS the file server's. So
``clock - last_seen`` (:attr:`WorkerHeartbeat.skew`) estimates how far a worker's
clock is off the store's, without trusting the reader's clock or the age of a
record (up to one interval). Staleness is the record's age, its ``last_seen`` (the
store's time) against the reader's clock: a reader whose clock is off by more than
3 intervals sees live workers as stale, or dead ones as live (``docs/operations.md``).
A filesystem that stamps files with its client's clock (GlusterFS's
``features.ctime`` does) hides skew between hosts from this estimate.

Heartbeats are not durable data: they are not fsynced, and a lost one is
rewritten one interval later. Reading never writes. Nothing here imports worker
code, so ``bghttp workers`` starts fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import secrets
import socket
import stat
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import StoreError
from .store_files import make_private_dirs, write_all

#: The store's directory of heartbeat records.
WORKERS_DIR = "workers"
#: Seconds between heartbeats unless ``BGHTTP_HEARTBEAT_INTERVAL`` says otherwise.
DEFAULT_INTERVAL = 5.0
#: A record not rewritten for this many of its writer's intervals is stale (its worker died or hangs).
STALE_AFTER_INTERVALS = 3
#: Clocks further apart than this (seconds) are worth a warning: retry due times are wall-clock.
SKEW_WARNING_SECONDS = 1.0
#: Largest record read; anything bigger is not a heartbeat.
MAX_RECORD_BYTES = 1 << 20
#: Version of the record's layout.
FORMAT = 1

_UNSAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")
#: Record paths of this process's running writers: two local-mode clients in one process get two records.
_paths_in_use: set[Path] = set()
_paths_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class WorkerState:
    """What changes between two heartbeats of a worker process (a snapshot)."""

    in_flight: int = 0
    #: Attempts in flight per ``scheme://host:port``.
    in_flight_by_host: Mapping[str, int] = dataclasses.field(default_factory=dict)
    online: bool = True
    offline_since: datetime | None = None
    #: Request messages this process took.
    taken: int = 0
    #: Requests this process brought to ``completed``.
    completed: int = 0
    #: Requests this process brought to ``failed``.
    failed: int = 0


@dataclasses.dataclass(frozen=True)
class WorkerHeartbeat:
    """One worker process as its last heartbeat described it. Datetimes are aware, in UTC."""

    host: str
    pid: int
    version: str
    #: The Dramatiq queue it consumes (``BGHTTP_QUEUE``).
    queue: str
    #: The broker it consumes from: ``host:port`` (several joined by ``,``), never a password; ``local`` in local mode.
    broker: str
    #: The store directory as the worker sees it (a path on its host).
    store: str
    started_at: datetime
    #: When the record was last written, by the store's clock (the file's modification time).
    last_seen: datetime
    in_flight: int
    in_flight_by_host: dict[str, int]
    online: bool
    offline_since: datetime | None
    taken: int
    completed: int
    failed: int
    #: The worker's wall clock when it wrote the record.
    clock: datetime
    #: Seconds between the writer's heartbeats.
    interval: float = DEFAULT_INTERVAL
    #: Set by :func:`read_heartbeats`: not rewritten for :data:`STALE_AFTER_INTERVALS` intervals.
    stale: bool = False

    @property
    def skew(self) -> float:
        """Seconds the worker's clock was ahead of the store's (negative: behind) when it wrote."""
        return (self.clock - self.last_seen).total_seconds()

    @property
    def stale_after(self) -> float:
        """Seconds without a new heartbeat after which this record is stale."""
        return STALE_AFTER_INTERVALS * self.interval

    def age(self, now: datetime) -> float:
        """Seconds since the record was last written (``now`` by the reader's clock)."""
        return (now - self.last_seen).total_seconds()

    def is_stale(self, now: datetime, threshold: float | None = None) -> bool:
        """Whether the worker has not written for ``threshold`` seconds (default :attr:`stale_after`)."""
        return self.age(now) > (self.stale_after if threshold is None else threshold)

    def serves(self, queue: str, store: str | Path) -> bool:
        """Whether this worker consumes ``queue`` on the store at ``store``.

        A store path is compared as given: on another host the same store may be
        mounted elsewhere, but a heartbeat found in a store was written by a worker
        of that store, so callers reading a store's own records compare the queue only.
        """
        return self.queue == queue and Path(self.store) == Path(store)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON values: datetimes as ISO 8601 strings, plus ``skew_s``."""
        data = dataclasses.asdict(self)
        for name, value in data.items():
            if isinstance(value, datetime):
                data[name] = value.isoformat()
        data["skew_s"] = round(self.skew, 3) + 0.0  # no "-0.0"
        return data


# ------------------------------------------------------------------- reading


def workers_dir(store_dir: str | Path) -> Path:
    return Path(store_dir).absolute() / WORKERS_DIR


def read_heartbeats(store_dir: str | Path, *, now: datetime | None = None) -> list[WorkerHeartbeat]:
    """Every worker record in the store, stale ones marked, sorted by host and pid.

    ``now`` (default: this host's clock) judges staleness. A missing directory is
    no workers; a record that is not one (torn, foreign, a symlink) is skipped.
    A directory that cannot be listed (not this user's: it is 0700) is a
    StoreError: nobody can tell from it whether any worker lives.
    """
    now = now or datetime.now(UTC)
    directory = workers_dir(store_dir)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as error:
        raise StoreError(f"cannot list {directory}: {error.strerror or error}") from error
    heartbeats = []
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue  # temporary files start with a dot
        heartbeat = read_heartbeat(directory / name)
        if heartbeat is not None:
            heartbeats.append(dataclasses.replace(heartbeat, stale=heartbeat.is_stale(now)))
    heartbeats.sort(key=lambda h: (h.host, h.pid))
    return heartbeats


def read_heartbeat(path: Path) -> WorkerHeartbeat | None:
    """The record at ``path``; None when it is gone or not a heartbeat record.

    StoreError if this user may not read it (another user's 0600 record).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except PermissionError as error:
        # Not this user's to read (0600, the workers' user): unknown, not "no worker".
        raise StoreError(f"cannot read {path}: {error.strerror or error}") from error
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RECORD_BYTES:
            return None
        raw = os.read(fd, MAX_RECORD_BYTES + 1)
    except OSError:
        return None
    finally:
        # On a shared filesystem a record renamed over meanwhile may fail even its close (ESTALE).
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        return _from_record(json.loads(raw), datetime.fromtimestamp(info.st_mtime_ns / 1e9, UTC))
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError, OSError):
        # RecursionError: JSON nested deeper than the parser recurses ("[" * 100_000 is 100 kB);
        # OSError: a time datetime cannot hold on this platform (EOVERFLOW for 1e18).
        return None


def _from_record(data: dict[str, Any], written: datetime) -> WorkerHeartbeat:
    if data.get("format") != FORMAT:
        raise ValueError("not a heartbeat record of this format")
    by_host = data["in_flight_by_host"]
    if not isinstance(by_host, dict):
        raise TypeError("in_flight_by_host")
    offline = data.get("offline_since")
    return WorkerHeartbeat(
        host=_text(data["host"]),
        pid=_whole(data["pid"]),
        version=_text(data["version"]),
        queue=_text(data["queue"]),
        broker=_text(data["broker"]),
        store=_text(data["store"]),
        started_at=_time(data["started_at"]),
        last_seen=written,
        in_flight=_whole(data["in_flight"]),
        in_flight_by_host={_text(key): _whole(value) for key, value in by_host.items()},
        online=bool(data["online"]),
        offline_since=None if offline is None else _time(offline),
        taken=_whole(data["taken"]),
        completed=_whole(data["completed"]),
        failed=_whole(data["failed"]),
        clock=_time(data["clock"]),
        interval=_interval(data["interval"]),
    )


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _whole(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("expected an integer")
    return value


def _interval(value: Any) -> float:
    # NaN or infinity would keep a record live forever, 0 or less stale at once (and NaN is no JSON for --json).
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value < math.inf:
        raise ValueError("expected a positive number of seconds")
    return float(value)


def _time(value: Any) -> datetime:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError("expected seconds since the epoch")
    return datetime.fromtimestamp(value, UTC)


def live(heartbeats: list[WorkerHeartbeat]) -> list[WorkerHeartbeat]:
    return [heartbeat for heartbeat in heartbeats if not heartbeat.stale]


def serving(heartbeats: list[WorkerHeartbeat], queue: str) -> list[WorkerHeartbeat]:
    """The live workers among a store's ``heartbeats`` that consume ``queue``."""
    return [heartbeat for heartbeat in live(heartbeats) if heartbeat.queue == queue]


def skew_warnings(heartbeats: list[WorkerHeartbeat], *, now: datetime | None = None) -> list[str]:
    """One line per clock more than :data:`SKEW_WARNING_SECONDS` off the store's: live workers', and this host's;
    or, when each is within that of the store, one line if two live workers are further apart than that.

    A worker's skew is its ``clock`` minus the file's modification time. This
    host's clock is late by at least ``last_seen - now`` when a record is stamped
    in its future (an earlier ``now`` than any write it has seen is impossible).
    """
    now = now or datetime.now(UTC)
    warnings = []
    current = live(heartbeats)
    for heartbeat in current:
        if abs(heartbeat.skew) > SKEW_WARNING_SECONDS:
            warnings.append(f"the clock of worker {heartbeat.host} pid {heartbeat.pid} is {_offset(heartbeat.skew)}")
    if not warnings and len(current) > 1:
        # Each within a second of the store, but apart by more: a retry one of them
        # schedules and the other runs is early or late by the difference.
        fast = max(current, key=lambda heartbeat: heartbeat.skew)
        slow = min(current, key=lambda heartbeat: heartbeat.skew)
        if fast.skew - slow.skew > SKEW_WARNING_SECONDS:
            warnings.append(
                f"the clocks of live workers differ by {fast.skew - slow.skew:.1f} s: "
                f"{fast.host} pid {fast.pid} is {_offset(fast.skew)}, {slow.host} pid {slow.pid} {_offset(slow.skew)}"
            )
    ahead = max((-heartbeat.age(now) for heartbeat in current), default=0.0)
    if ahead > SKEW_WARNING_SECONDS:
        warnings.append(f"this host's clock is at least {ahead:.1f} s behind the store's")
    return warnings


def _offset(skew: float) -> str:
    return f"{abs(skew):.1f} s ahead of the store's" if skew > 0 else f"{abs(skew):.1f} s behind the store's"


# ------------------------------------------------------------------- writing


def broker_hosts(broker_url: str) -> str:
    """``host:port`` of each URL in ``broker_url`` (``;``-separated), joined by ``,``; no user or password."""
    hosts = []
    for url in broker_url.split(";"):
        url = url.strip()
        if not url:
            continue
        try:
            parts = urllib.parse.urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError:
            host, port = None, None
        if host is None:
            hosts.append(url if "@" not in url and ":" not in url else "?")
            continue
        default = 5671 if parts.scheme == "amqps" else 5672
        hosts.append(f"{host}:{port or default}")
    return ",".join(hosts)


def record_name(host: str, pid: int, number: int = 1) -> str:
    """The file name of a worker's record: ``<host>-<pid>.json``, the host made safe for a file name.

    A second writer in one process (two local-mode clients) is ``<host>-<pid>-2.json``.
    """
    suffix = "" if number == 1 else f"-{number}"
    return f"{_UNSAFE_NAME_CHARACTERS.sub('_', host)[:200] or 'host'}-{pid}{suffix}.json"


def _claim_path(directory: Path, host: str, pid: int) -> Path:
    with _paths_lock:
        number = 1
        while (path := directory / record_name(host, pid, number)) in _paths_in_use:
            number += 1
        _paths_in_use.add(path)
        return path


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("bghttp")
    except Exception:  # not installed (a checkout on sys.path): the record says so
        return "unknown"


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


class HeartbeatWriter:
    """Writes one worker process's record every ``interval`` seconds, on a daemon thread.

    ``state`` is called at each beat for what changed (in flight, gate, counters);
    it must be cheap and must not block. :meth:`start` writes the first record at
    once; :meth:`stop` ends the thread and removes the record (a clean stop).
    A write that fails (store unreachable, disk full) is retried at the next beat
    and reported once through ``on_error``.
    """

    def __init__(
        self,
        store_dir: str | Path,
        *,
        queue: str,
        broker: str,
        interval: float = DEFAULT_INTERVAL,
        state: Callable[[], WorkerState] = WorkerState,
        on_error: Callable[[OSError], None] | None = None,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("a heartbeat interval must be > 0")
        self.store_dir = Path(store_dir).absolute()
        self.directory = self.store_dir / WORKERS_DIR
        self.queue = queue
        self.broker = broker_hosts(broker)
        self.interval = interval
        self.state = state
        self.on_error = on_error
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.path = _claim_path(self.directory, self.host, self.pid)
        self.version = _package_version()
        self.started_at = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._placed = False  # the first record is put in place by _place, the later ones replace it
        self._contested: Path | None = None  # a live-looking record under this writer's first name
        self._lock = threading.Lock()  # one write at a time: the thread's and a final one

    def start(self) -> None:
        """Write the first record and start beating (idempotent)."""
        if self._thread is not None:
            return
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="bghttp-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, *, remove: bool = True) -> None:
        """Stop beating; remove the record unless ``remove`` is False (then it goes stale)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.interval + 5)
        if remove:
            with self._lock, contextlib.suppress(OSError):
                os.unlink(self.path)
        with _paths_lock:
            _paths_in_use.discard(self.path)

    def beat(self) -> bool:
        """Write the record now; False (and ``on_error`` once per failing spell) when it could not be written."""
        with self._lock:
            if self._stop.is_set():
                return False
            try:
                self._write(self._record(self.state()))
            except OSError as error:
                if not self._failing and self.on_error is not None:
                    self.on_error(error)
                self._failing = True
                return False
            self._failing = False
            return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def _record(self, state: WorkerState) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "queue": self.queue,
            "broker": self.broker,
            "store": str(self.store_dir),
            "started_at": self.started_at,
            "interval": self.interval,
            "in_flight": state.in_flight,
            "in_flight_by_host": dict(state.in_flight_by_host),
            "online": state.online,
            "offline_since": _seconds(state.offline_since),
            "taken": state.taken,
            "completed": state.completed,
            "failed": state.failed,
            "clock": time.time(),  # last: as close to the write as can be, for the skew estimate
        }

    def _write(self, record: dict[str, Any]) -> None:
        data = json.dumps(record, separators=(",", ":")).encode()
        self._ensure_directory()
        tmp = self.directory / f".{self.path.name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            try:
                write_all(fd, data)  # write(2) may write less than asked, or nothing, without an error
            finally:
                os.close(fd)
            if self._placed:
                os.replace(tmp, self.path)
                if self._contested is not None:
                    self._remove_contested_once_stale()
            else:
                self._place(tmp)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _place(self, tmp: Path) -> None:
        """Put the first record in place without replacing another live process's record.

        Two processes can have one host name and PID: worker containers on host
        networking share the host's name, and each has a PID namespace of its own.
        A record already at the name is replaced only when it is stale (a
        predecessor that died: a restarted container has the same name and PID);
        a live one keeps it, and this writer takes a name of its own.
        """
        try:
            os.link(tmp, self.path)  # fails if the name is taken: no window in which a twin's record is lost
        except FileExistsError:
            try:
                existing = read_heartbeat(self.path)
            except StoreError:  # another user's record, so another process's: take a name of its own
                existing = None
                self._rename(f"-{secrets.token_hex(4)}")
            written = datetime.fromtimestamp(os.stat(tmp).st_mtime_ns / 1e9, UTC)  # the store's clock, now
            if existing is not None and not existing.is_stale(written):
                # A twin, or a predecessor dead for less than 3 of its intervals: watched until it is stale.
                self._contested = self.path
                self._rename(f"-{secrets.token_hex(4)}")
            os.replace(tmp, self.path)
        except OSError:  # a filesystem without hard links: replace, as every later beat does
            os.replace(tmp, self.path)
        else:
            os.unlink(tmp)
        self._placed = True

    def _remove_contested_once_stale(self) -> None:
        """Remove the record under this writer's first name once it is stale (its writer died): a
        restarted container's predecessor. A live twin keeps rewriting its record, which stays."""
        contested = self._contested
        assert contested is not None
        try:
            existing = read_heartbeat(contested)
        except StoreError:
            existing = None
        if existing is None:
            self._contested = None  # gone (removed by a clean stop), or no record: nothing to watch
            return
        now = datetime.fromtimestamp(os.stat(self.path).st_mtime_ns / 1e9, UTC)  # the store's clock
        if existing.is_stale(now):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(contested)
            self._contested = None

    def _rename(self, suffix: str) -> None:
        with _paths_lock:
            _paths_in_use.discard(self.path)
            self.path = self.path.with_name(self.path.name.removesuffix(".json") + suffix + ".json")
            _paths_in_use.add(self.path)

    def _ensure_directory(self) -> None:
        try:
            info = os.lstat(self.directory)
        except FileNotFoundError:
            # A store not made yet: made private as the store makes its own directories, its
            # missing parents too (``Path.mkdir(parents=True)`` made them 0777 under umask 000).
            make_private_dirs(self.directory)
            info = os.lstat(self.directory)
        if not stat.S_ISDIR(info.st_mode):  # a symlink planted in its place is not followed
            raise NotADirectoryError(f"{self.directory} is not a directory")


__all__ = [
    "DEFAULT_INTERVAL",
    "STALE_AFTER_INTERVALS",
    "HeartbeatWriter",
    "WorkerHeartbeat",
    "WorkerState",
    "read_heartbeats",
    "skew_warnings",
]
