"""Where the CPU goes: CPU milliseconds per request, per process family, for W1 and its baseline.

    python -m benchmarks.cpu_split [--count 5000] [--threads 4] [--fsync on|off] [--worker default]

Runs the W1 drain (bulk submit to ``dramatiq bghttp.actors --processes 2 --threads 8``,
or with ``--worker default`` to ``bghttp worker`` with no flags)
and the baseline thread pool, and sums the user+system CPU time every process on
the machine used meanwhile, grouped into bghttp workers, the submitting process,
RabbitMQ, nginx and the kernel's own threads. On 2 cores, N requests/s can
spend at most 2000/N CPU ms per request in all processes together; this shows
how far each side is from that.
"""

from __future__ import annotations

import argparse
import collections
import time
from typing import Any

import psutil

from . import workloads
from .infra import WorkerShape, scratch_dir, settle_file_creation
from .target import start_target

Snapshot = dict[int, tuple[str, float]]


def snapshot() -> Snapshot:
    """CPU seconds so far of every process, with its family."""
    taken: Snapshot = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        taken[process.pid] = (_family(process.info["name"] or "", process.info["cmdline"] or []),
                              times.user + times.system)
    return taken


def _family(name: str, cmdline: list[str]) -> str:
    command = " ".join(cmdline)
    if "beam" in name or "epmd" in name:
        return "RabbitMQ"
    if "nginx" in name or "benchmarks.pyserver" in command:
        return "target server (nginx or the Python one)"
    if "dramatiq" in command or "bghttp.cli worker" in command:
        return "bghttp workers"
    if "benchmarks.cpu_split" in command:
        return "this process (submit / baseline pool)"
    if name.startswith(("kworker", "ksoftirqd", "jbd2", "kswapd")):
        return "kernel threads"
    return "other processes"


def split(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds spent between two snapshots, per family."""
    spent: dict[str, float] = collections.defaultdict(float)
    for pid, (family, seconds) in after.items():
        spent[family] += seconds - before.get(pid, (family, 0.0))[1]
    return spent


def report(label: str, count: int, seconds: float, spent: dict[str, float]) -> None:
    print(f"{label}: {count / seconds:,.0f} requests/s; CPU ms per request by process family:")
    for family, cpu in sorted(spent.items(), key=lambda item: -item[1]):
        if cpu > 0.005 * seconds:
            print(f"  {family:40s} {cpu / count * 1000:6.3f}")
    print(f"  {'all':40s} {sum(spent.values()) / count * 1000:6.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=4, help="baseline threads (its best in RESULTS.md)")
    parser.add_argument("--fsync", choices=("on", "off"), default="on")
    parser.add_argument("--worker", choices=("flags", "default"), default="flags",
                        help="default: `bghttp worker` with no flags; flags: 2 × 8 (the default)")
    args = parser.parse_args()
    shape = WorkerShape.default() if args.worker == "default" else WorkerShape.flags(2, 8)
    print(f"settle: {settle_file_creation()}", flush=True)
    with start_target() as target:
        url = target.small_url
        before = snapshot()
        seconds = workloads.run_baseline_pool("GET", url, args.count, args.threads,
                                              scratch_dir("bghttp-bench-baseline-"))
        report(f"baseline ({args.threads} threads)", args.count, seconds, split(before, snapshot()))
        time.sleep(1.0)
        # The workers are gone once the drain returns: snapshot inside it, after the last request.
        result: dict[str, Snapshot] = {}
        original = workloads.wait_all_terminal

        def wait_then_snapshot(*a: Any, **k: Any) -> float:
            finished = original(*a, **k)
            result["after"] = snapshot()
            return finished

        workloads.wait_all_terminal = wait_then_snapshot
        before = snapshot()
        seconds = workloads.run_bghttp_drain("GET", url, args.count, shape=shape,
                                             fsync=args.fsync == "on")
        report(f"bghttp (BGHTTP_FSYNC={int(args.fsync == 'on')}, {shape.describe()})", args.count, seconds,
               split(before, result["after"]))


if __name__ == "__main__":
    main()
