"""Sample live worker processes with py-spy while they drain small GETs, and summarize by function.

    python -m benchmarks.spy_worker [--count 3000] [--fsync on|off] [--processes 2] [--threads 8] [--worker default]

Needs ``py-spy`` (``pip install py-spy``) and permission to ptrace the workers
(root, or ``kernel.yama.ptrace_scope=0``). Prints the share of samples in which
each function was on the stack (inclusive), for the functions of bghttp,
Dramatiq, pika, httpx/httpcore and structlog; then the CPU milliseconds per
request by component: the worker processes' CPU time during the drain
(``psutil``), split in proportion to the samples whose innermost known frame
belongs to each component (see ``COMPONENTS``).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bghttp import BackgroundHttpClient

from .infra import WorkerShape, bench_settings, load, worker_group
from .target import start_target
from .workloads import SUBMIT_CHUNK, wait_all_terminal

_INTERESTING = ("bghttp/", "dramatiq/", "pika/", "httpx/", "httpcore/", "structlog/")

#: Components of a worker's CPU, each a set of source path fragments. A sample counts for the
#: component of its innermost frame that matches one (so a ``json.dumps`` under the store is the store's).
COMPONENTS = {
    "HTTP exchange (httpx, httpcore, h11)": ("httpx/", "httpcore/", "h11/"),
    "logging (structlog, logging)": ("structlog/", "logging/"),
    "store (files, record logs)": ("bghttp/store", "bghttp/record_log", "bghttp/shared_fs"),
    "broker (Dramatiq, pika)": ("dramatiq/", "pika/"),
    "bghttp runner, gate, the rest of bghttp": ("bghttp/",),
}
OTHER = "other (interpreter, threads, stdlib)"
#: Frames where a thread blocks off the CPU. py-spy counts threads blocked in these calls as active,
#: so their samples are shown as waits and given none of the measured CPU (an estimate: a socket read
#: or a syncfs also spends some kernel CPU).
WAITS = {
    "waiting: syncfs and its condition (durability)": ("sync_filesystem (bghttp/durability", "wait_durable ("),
    "waiting: socket read of the response (httpcore)": ("SyncStream.read (httpcore/",),
    "waiting: broker poll (pika)": ("PollPoller.poll (pika/",),
    "waiting: other locks and conditions": ("Condition.wait (threading", "Event.wait (threading"),
}


def summarize(paths: list[Path], top: int) -> list[str]:
    """Inclusive share per function from py-spy ``--format raw`` files ("frame;frame;... count")."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            count = int(count_text)
            total += count
            seen = set()
            for frame in stack.split(";"):
                name, _, where = frame.partition(" (")
                if not any(part in where for part in _INTERESTING):
                    continue
                key = f"{name} ({where.split(':')[0]}"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += count
    return [f"{count / total * 100:5.1f}%  {key})" for key, count in inclusive.most_common(top)] if total else []


def component_shares(paths: list[Path]) -> dict[str, float]:
    """Share of samples per component (innermost matching frame), from py-spy ``--format raw`` files."""
    counts: collections.Counter[str] = collections.Counter()
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            counts[_component(stack.split(";"))] += int(count_text)
    total = sum(counts.values())
    return {name: count / total for name, count in counts.most_common()} if total else {}


def _component(frames: list[str]) -> str:
    for frame in reversed(frames):  # innermost first
        for name, fragments in WAITS.items():
            if any(fragment in frame for fragment in fragments):
                return _durability_wait if name == _other_waits and _durability_wait_on(frames) else name
        where = frame.partition(" (")[2]
        for name, fragments in COMPONENTS.items():
            # py-spy writes paths below site-packages as "httpx/_client.py", others in full
            if any(where.startswith(fragment) or f"/{fragment}" in where for fragment in fragments):
                return name
    return OTHER


_durability_wait, _other_waits = next(iter(WAITS)), list(WAITS)[-1]


def _durability_wait_on(frames: list[str]) -> bool:
    """A condition wait inside the durability wait: a thread waiting for another one's syncfs."""
    return any(fragment in frame for frame in frames for fragment in WAITS[_durability_wait])


def leaf_shares(paths: list[Path], top: int) -> list[str]:
    """The innermost frames that take the most samples: where threads are (running or blocked)."""
    counts: collections.Counter[str] = collections.Counter()
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            counts[stack.split(";")[-1]] += int(count_text)
    total = sum(counts.values())
    return [f"{count / total * 100:5.1f}%  {frame}" for frame, count in counts.most_common(top)] if total else []


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--fsync", choices=("on", "off"), default="on")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=8, help="how long py-spy samples")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--worker", choices=("flags", "default"), default="flags",
                        help="default: `bghttp worker` with no flags; flags: --processes/--threads (the default)")
    args = parser.parse_args()
    shape = WorkerShape.default() if args.worker == "default" else WorkerShape.flags(args.processes, args.threads)
    beside_python = Path(sys.executable).parent / "py-spy"  # installed into the venv, not on PATH
    py_spy = shutil.which("py-spy") or (str(beside_python) if beside_python.exists() else None)
    if py_spy is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    out = Path(tempfile.mkdtemp(prefix="bghttp-bench-spy-"))
    try:
        with start_target() as target, bench_settings(fsync=args.fsync == "on") as settings, worker_group(
            settings, shape=shape
        ) as group, BackgroundHttpClient(settings) as client:
            spies = [
                subprocess.Popen(
                    [py_spy, "record", "-p", str(pid), "-d", str(args.seconds), "-r", "200", "-f", "raw",
                     "-o", str(out / f"{pid}.txt"), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                for pid in group.worker_pids()
            ]
            pids = [group.process.pid, *group.worker_pids()]
            cpu_before = _cpu_seconds(pids)
            started = time.time()
            requests = [{"method": "GET", "url": target.small_url}] * args.count
            for offset in range(0, args.count, SUBMIT_CHUNK):
                client.submit_many(requests[offset : offset + SUBMIT_CHUNK])
            finished = wait_all_terminal(settings, args.count)
            worker_cpu = _cpu_seconds(pids) - cpu_before
            for spy in spies:
                spy.wait()
        print(f"{args.count} GETs, BGHTTP_FSYNC={int(args.fsync == 'on')}, {shape.describe()}: "
              f"{args.count / (finished - started):,.0f} requests/s, load {load()}")
        print("\n".join(summarize(sorted(out.glob("*.txt")), args.top)))
        print("\ninnermost frames:\n" + "\n".join(leaf_shares(sorted(out.glob("*.txt")), 15)))
        per_request = worker_cpu / args.count * 1000
        shares = component_shares(sorted(out.glob("*.txt")))
        on_cpu = sum(share for name, share in shares.items() if name not in WAITS)
        print(f"\nworker CPU per request (all worker processes and their master): {per_request:.3f} ms; "
              "by component (share of samples; the CPU split over the samples that are not waits):")
        for name, share in shares.items():
            cpu = "waiting" if name in WAITS else f"{share / on_cpu * per_request:.3f} ms"
            print(f"  {name:50s} {share * 100:5.1f}%  {cpu}")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
