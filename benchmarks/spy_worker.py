"""Sample live worker processes with py-spy while they drain small GETs, and summarize by function.

    python -m benchmarks.spy_worker [--count 3000] [--fsync on|off] [--processes 2] [--threads 8]

Needs ``py-spy`` (``pip install py-spy``) and permission to ptrace the workers
(root, or ``kernel.yama.ptrace_scope=0``). Prints the share of samples in which
each function was on the stack (inclusive), for the functions of bghttp,
Dramatiq, pika, httpx/httpcore and structlog.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bghttp import BackgroundHttpClient

from .infra import bench_settings, load, worker_group
from .target import start_target
from .workloads import SUBMIT_CHUNK, wait_all_terminal

_INTERESTING = ("bghttp/", "dramatiq/", "pika/", "httpx/", "httpcore/", "structlog/")


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--fsync", choices=("on", "off"), default="on")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=8, help="how long py-spy samples")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    beside_python = Path(sys.executable).parent / "py-spy"  # installed into the venv, not on PATH
    py_spy = shutil.which("py-spy") or (str(beside_python) if beside_python.exists() else None)
    if py_spy is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    out = Path(tempfile.mkdtemp(prefix="bghttp-bench-spy-"))
    try:
        with start_target() as target, bench_settings(fsync=args.fsync == "on") as settings, worker_group(
            settings, processes=args.processes, threads=args.threads
        ) as group, BackgroundHttpClient(settings) as client:
            spies = [
                subprocess.Popen(
                    [py_spy, "record", "-p", str(pid), "-d", str(args.seconds), "-r", "200", "-f", "raw",
                     "-o", str(out / f"{pid}.txt"), "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                for pid in group.worker_pids()
            ]
            started = time.time()
            requests = [{"method": "GET", "url": target.small_url}] * args.count
            for offset in range(0, args.count, SUBMIT_CHUNK):
                client.submit_many(requests[offset : offset + SUBMIT_CHUNK])
            finished = wait_all_terminal(settings, args.count)
            for spy in spies:
                spy.wait()
        print(f"{args.count} GETs, BGHTTP_FSYNC={int(args.fsync == 'on')}, {args.processes}x{args.threads}: "
              f"{args.count / (finished - started):,.0f} requests/s, load {load()}")
        print("\n".join(summarize(sorted(out.glob("*.txt")), args.top)))
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
