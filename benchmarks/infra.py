"""What every workload needs: bghttp settings on a fresh queue and store, worker groups, RSS sampling, load."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil

import bghttp.broker
from bghttp import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BROKER_URL = os.environ.get("BGHTTP_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")


def load() -> str:
    """The 1/5/15-minute load averages, for the record next to each result."""
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


_run_dir: Path | None = None


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory, deleted when the benchmark process exits, not before.

    Why not at once: on this machine (ext4 without a journal), deleting thousands
    of files makes the file creations that follow cost far more CPU for minutes
    (measured: 16 µs per create with no deletion before, up to 750 µs after; see
    ``settle_file_creation``). Deleting a run's files between runs would tax
    whichever side runs next.
    """
    global _run_dir
    if _run_dir is None:  # one parent for the run: its files land in the same part of the disk
        _run_dir = Path(tempfile.mkdtemp(prefix="bghttp-bench-run-"))
        atexit.register(shutil.rmtree, _run_dir, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_run_dir))


def settle_file_creation(normal_us: float = 60.0, limit_seconds: float = 420.0, probes: int = 3) -> str:
    """Wait until creating a file costs what it normally does; describe the wait.

    This machine's root filesystem is ext4 *without a journal*: there, the inode
    allocator skips every inode deleted in the last 60 s (360 s while its inode
    table block is dirty), reading each one's table block, so after a mass
    deletion (an earlier run's cleanup, a test suite) a file creation costs
    500-750 µs of CPU instead of ~20 µs for minutes, and the workloads would pay
    for it. Each new directory lands in its own part of the disk, clean or not,
    so every round probes 500 creations in each of ``probes`` new directories
    (the files are kept) and passes only when all of them are cheap.
    """
    started = time.monotonic()
    while True:
        costs = [_create_cost(scratch_dir("bghttp-bench-settle-"), 500) for _ in range(probes)]
        waited = time.monotonic() - started
        if max(costs) < normal_us or waited > limit_seconds:
            shown = ", ".join(f"{cost:.0f}" for cost in costs)
            return f"waited {waited:.0f} s until file creations in {probes} new directories cost {shown} µs of CPU"
        time.sleep(5.0)


def _create_cost(directory: Path, count: int) -> float:
    """CPU µs per creation of ``count`` empty files in ``directory``."""
    cpu = time.process_time()
    for number in range(count):
        os.close(os.open(directory / str(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return (time.process_time() - cpu) / count * 1e6


@contextlib.contextmanager
def bench_settings(
    *, fsync: bool = True, queue_type: str = "classic", store_root: Path | None = None
) -> Iterator[Settings]:
    """Settings with a unique queue (deleted afterwards) and a new store (see ``scratch_dir``).

    ``store_root``: make the store there instead (a shared mount, ``--store-dir``); removed afterwards.
    """
    if store_root is not None:
        store = Path(tempfile.mkdtemp(prefix="bghttp-bench-store-", dir=store_root))
        atexit.register(shutil.rmtree, store, ignore_errors=True)
    else:
        store = scratch_dir("bghttp-bench-store-")
    settings = Settings(
        broker_url=BROKER_URL,
        store_dir=store,
        queue_name=f"bghttp-bench-{uuid.uuid4().hex[:10]}",
        fsync=fsync,
        queue_type=queue_type,
    )
    try:
        yield settings
    finally:
        delete_queues(settings.queue_name)


def delete_queues(queue_name: str) -> None:
    bghttp.broker.delete_queues(BROKER_URL, queue_name)  # all six; a cluster: the first node that answers


def worker_env(settings: Settings, log_level: str = "INFO") -> dict[str, str]:
    env = {**os.environ, **settings.to_env(), "BGHTTP_LOG_FORMAT": "json", "BGHTTP_LOG_LEVEL": log_level}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")]))
    return env


@dataclasses.dataclass(frozen=True)
class WorkerShape:
    """How a workload starts its worker group.

    ``cli=False`` (the harness's original form): ``python -m dramatiq bghttp.actors
    --processes P --threads T``. ``cli=True``: ``bghttp worker``, given only the
    flags that are set, so ``WorkerShape.default()`` is the worker an operator
    gets with no flags at all, whatever its defaults are in the tree being
    measured. ``env`` adds variables (``BGHTTP_MAX_IN_FLIGHT``...) to the workers'.
    ``tree``: run the workers from the ``bghttp`` package of another source tree
    (e.g. ``git archive main | tar -x -C DIR``), to measure an older engine side by
    side with this one; the submitting side stays this tree's.
    """

    processes: int | None = None
    threads: int | None = None
    cli: bool = True
    env: tuple[tuple[str, str], ...] = ()
    tree: Path | None = None

    @classmethod
    def default(cls) -> WorkerShape:
        return cls()

    @classmethod
    def flags(cls, processes: int, threads: int) -> WorkerShape:
        return cls(processes, threads, cli=False)

    def command(self) -> list[str]:
        if not self.cli:
            if self.processes is None or self.threads is None:
                raise ValueError("the dramatiq form needs both processes and threads")
            return [sys.executable, "-m", "dramatiq", "bghttp.actors",
                    "--processes", str(self.processes), "--threads", str(self.threads)]
        flags = [*(("--processes", str(self.processes)) if self.processes else ()),
                 *(("--threads", str(self.threads)) if self.threads else ())]
        return [sys.executable, "-m", "bghttp.cli", "worker", *flags]

    def describe(self) -> str:
        """The command as a reader would type it, e.g. "`bghttp worker` with no flags"."""
        env = "".join(f"{name}={value} " for name, value in self.env)
        if not self.cli:
            where = f" from {self.tree}" if self.tree else ""
            return f"`{env}dramatiq bghttp.actors --processes {self.processes} --threads {self.threads}`{where}"
        shown = " ".join(self.command()[4:])
        where = f" from {self.tree}" if self.tree else ""
        return f"`{env}bghttp worker{' ' + shown if shown else ''}`" + ("" if shown else " with no flags") + where


class WorkerGroup:
    """A worker group (see ``WorkerShape``) in its own process group, logging to a file beside the store."""

    def __init__(self, settings: Settings, shape: WorkerShape, *, log_level: str = "INFO") -> None:
        self.shape = shape
        self.log_path = Path(settings.store_dir).parent / f"{settings.queue_name}-worker.log"
        self._log = open(self.log_path, "wb")
        env = {**worker_env(settings, log_level), **dict(shape.env)}
        if shape.tree is not None:  # its bghttp before this tree's (PYTHONPATH precedes the editable install)
            env["PYTHONPATH"] = str(shape.tree)
        self.process = subprocess.Popen(
            shape.command(),
            cwd=shape.tree or PROJECT_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every worker process logged that it is ready (with no flags, as many as the master started)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text(errors='replace')[-3000:]}")
            ready = self.log_path.read_text(errors="replace").count("Worker process is ready")
            expected = self.shape.processes or len(self.worker_pids())
            if ready and ready >= expected:
                return
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout}s")

    def worker_pids(self) -> list[int]:
        """The worker processes (children of the dramatiq master)."""
        with contextlib.suppress(psutil.Error):
            return [child.pid for child in psutil.Process(self.process.pid).children(recursive=True)]
        return []

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()
        with contextlib.suppress(OSError):
            self.log_path.unlink()


@contextlib.contextmanager
def worker_group(
    settings: Settings,
    *,
    processes: int | None = None,
    threads: int | None = None,
    shape: WorkerShape | None = None,
    log_level: str = "INFO",
) -> Iterator[WorkerGroup]:
    """A ready worker group for the ``with`` block: ``shape``, or the dramatiq form with ``processes × threads``."""
    if shape is None:
        if processes is None or threads is None:
            raise ValueError("give a shape, or processes and threads")
        shape = WorkerShape.flags(processes, threads)
    group = WorkerGroup(settings, shape, log_level=log_level)
    try:
        group.wait_ready()
        yield group
    finally:
        group.stop()


def memory_of(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in bytes, from ``/proc/PID/status``: now, and its peak so far."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) * 1024  # the kernel writes kB
    return values["VmRSS"], values["VmHWM"]


class RssSampler:
    """Samples the RSS of some processes every ``interval`` seconds; keeps each one's peak."""

    def __init__(self, pids: list[int], interval: float = 0.02) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.start_rss = {p.pid: p.memory_info().rss for p in self.processes}
        self.peak_rss = dict(self.start_rss)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for process in self.processes:
                with contextlib.suppress(psutil.Error):
                    rss = process.memory_info().rss
                    self.peak_rss[process.pid] = max(self.peak_rss[process.pid], rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def max_growth(self) -> int:
        return max((self.peak_rss[pid] - self.start_rss[pid] for pid in self.peak_rss), default=0)
