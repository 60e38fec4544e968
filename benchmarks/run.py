"""Run the benchmark workloads and write ``benchmarks/RESULTS.md``.

    python -m benchmarks.run            # full sizes from issue #6 (~5-8 min on 2 cores)
    python -m benchmarks.run --quick    # a small smoke run (~1 min)
    python -m benchmarks.run --only W1,W4 --processes 2 --threads 8

Needs RabbitMQ (``BGHTTP_BENCH_BROKER_URL``, default amqp://guest:guest@127.0.0.1:5672/)
and curl; uses nginx when it is on PATH, else a Python server in its own process.
Everything it starts (target server, workers, queues, temporary stores) is
removed at the end; files only when the whole run ends. The hand-written analysis below the marker line in
RESULTS.md is kept when the tables are rewritten.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from . import infra, workloads
from .infra import settle_file_creation
from .target import FILE_SIZES, Target, start_target
from .workloads import Result

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
MARKER = "<!-- analysis: everything below this line is kept by benchmarks.run -->"

@dataclasses.dataclass(frozen=True)
class Sizes:
    gets: int  # W1
    posts: int  # W2
    download: str  # W3: the name of the file under /files/
    single_submits: int  # W4
    bulk_submit: int  # W4
    store_small: int  # W5
    store_large: int  # W5


FULL = Sizes(5000, 2000, "big", 2000, 10_000, 1000, 100_000)
QUICK = Sizes(500, 200, "medium", 300, 2000, 1000, 10_000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", default="W1,W2,W3,W4,W5", help="comma-separated workloads")
    parser.add_argument("--processes", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process (default 8)")
    parser.add_argument("--fsync", default="on,off", help="W1 bghttp variants: on, off or on,off (W2-W4 use on)")
    parser.add_argument("--server", choices=("auto", "python"), default="auto", help="python: skip nginx")
    parser.add_argument("--queue-type", default="classic",
                        help="W1 bghttp variants: classic, quorum or classic,quorum (the others use classic)")
    parser.add_argument("--broker-url", help="RabbitMQ URL(s), ';'-separated (default: BGHTTP_BENCH_BROKER_URL)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.broker_url:
        infra.BROKER_URL = args.broker_url
    wanted = [name.strip().upper() for name in args.only.split(",") if name.strip()]
    fsync_variants = [part.strip() == "on" for part in args.fsync.split(",") if part.strip()]
    command = "python -m benchmarks.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    started = datetime.datetime.now(datetime.UTC)

    results: list[Result] = []
    settled = settle_file_creation()
    print(f"settle: {settled}", flush=True)
    with start_target(args.server) as target:
        print(f"target: {target.kind} at {target.base_url}", flush=True)
        for name in wanted:
            print(f"{name} ...", flush=True)
            result = _run_one(name, sizes, target, args, fsync_variants)
            results.append(result)
            for row in result.rows:
                print(f"  {row.label}: bghttp {row.bghttp} | baseline {row.baseline} | {row.ratio}", flush=True)
    write_results(args.output, results, command.strip(), started, target.kind, settled, args)
    print(f"wrote {args.output}")
    return 0


def _run_one(name: str, sizes: Sizes, target: Target, args: argparse.Namespace, fsync_variants: list[bool]) -> Result:
    p, t = args.processes, args.threads
    if name == "W1":
        queue_types = [part.strip() for part in args.queue_type.split(",") if part.strip()]
        return workloads.throughput("W1", "GET", target.small_url, sizes.gets, processes=p, threads=t,
                                    fsync_variants=fsync_variants, queue_types=queue_types)
    if name == "W2":
        return workloads.throughput("W2", "POST", target.small_url, sizes.posts, processes=p, threads=t,
                                    fsync_variants=[True])
    if name == "W3":
        url = target.file_url(sizes.download)
        return workloads.large_download(url, FILE_SIZES[sizes.download], processes=p, threads=t)
    if name == "W4":
        return workloads.submit_latency(target.small_url, sizes.single_submits, sizes.bulk_submit)
    if name == "W5":
        return workloads.store_scale(sizes.store_small, sizes.store_large)
    raise SystemExit(f"unknown workload {name!r}")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    rabbit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rabbit = subprocess.run(["rabbitmqctl", "version"], capture_output=True, text=True, timeout=20).stdout.strip()
    memory = psutil.virtual_memory().total / (1 << 30)
    return (f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, RabbitMQ {rabbit or 'unknown'}")


def write_results(path: Path, results: list[Result], command: str, started: datetime.datetime, server: str,
                  settled: str, args: argparse.Namespace) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"- **Date**: {started:%Y-%m-%d %H:%M} UTC",
        f"- **Command**: `{command}` (from the repository root; `make bench` runs it without options)",
        f"- **Machine**: {machine()}",
        f"- **Target server**: {server}, 127.0.0.1",
        f"- **Files**: stores and baseline output in {tempfile.gettempdir()}, all deleted only when the run ends "
        f"(a mass deletion makes later file creations costlier here: see the analysis); before the first "
        f"workload the harness {settled}",
        f"- **Workers**: `python -m dramatiq bghttp.actors --processes {args.processes} --threads {args.threads}`, "
        "real RabbitMQ, a fresh queue and store per workload",
        "- Ratios compare bghttp with the baseline measured in the same run, against the same server. "
        "The machine is shared: the load average (1/5/15 min) is given before and after each workload.",
        "",
    ]
    for result in results:
        lines += [
            f"## {result.name}: {result.title}",
            "",
            f"- bghttp: {result.bghttp_side}",
            f"- baseline: {result.baseline_side}",
            f"- load before/after: {result.load_before} / {result.load_after}; took {result.seconds:.0f} s",
            "",
            "| measure | bghttp | baseline | bghttp / baseline |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {r.label} | {r.bghttp} | {r.baseline} | {r.ratio} |" for r in result.rows]
        lines += [""] + [f"- {note}" for note in result.notes] + [""]
    analysis = ""
    if path.exists():
        old = path.read_text()
        if MARKER in old:
            analysis = old.split(MARKER, 1)[1]
    path.write_text("\n".join(lines) + "\n" + MARKER + (analysis or "\n"))


if __name__ == "__main__":
    time.tzset()
    raise SystemExit(main())
