"""Run the benchmark workloads and write ``benchmarks/RESULTS.md``.

    python -m benchmarks.run            # W1-W5 at full size (~5-8 min on 2 cores)
    python -m benchmarks.run --quick    # a small smoke run (~1 min)
    python -m benchmarks.run --only W1,W4 --processes 2 --threads 8
    python -m benchmarks.run --only W6,W7,W8,MEM --worker default   # many requests waiting on slow servers

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

from . import concurrency, infra, workloads
from .infra import WorkerShape, settle_file_creation
from .target import FILE_SIZES, Target, start_delay_server, start_target
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
    slow_gets: int  # W6
    behind_slow: int  # W7: slow requests submitted first
    fast_after: int  # W7: fast requests submitted after them
    paced_seconds: float  # W8
    in_flight: int  # MEM


FULL = Sizes(5000, 2000, "big", 2000, 10_000, 1000, 100_000, 2000, 1000, 200, 20.0, 1000)
QUICK = Sizes(500, 200, "medium", 300, 2000, 1000, 10_000, 500, 300, 50, 8.0, 300)
#: W8 runs at this share of W1's measured throughput (the issue: "at half of W1's throughput").
W8_SHARE_OF_W1 = 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", default="W1,W2,W3,W4,W5", help="comma-separated workloads (W1-W8, MEM)")
    parser.add_argument("--worker", default="flags",
                        help="default: `bghttp worker` with no flags; flags: `dramatiq bghttp.actors --processes P "
                             "--threads T` (the default); default,flags: W6 and W7 run both, the others the first")
    parser.add_argument("--processes", type=int, default=2, help="worker processes for --worker flags (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process for --worker flags (8)")
    parser.add_argument("--compare-tree", type=Path, metavar="DIR",
                        help="W6 and W7 also run `bghttp worker` with no flags from the bghttp of this source tree "
                             "(an older engine: git archive COMMIT | tar -x -C DIR)")
    parser.add_argument("--rate", type=float, help="W8 submits/s (default: half of W1's bghttp rate, measured)")
    parser.add_argument("--mem-threads", type=int, default=1000,
                        help="MEM also runs `dramatiq --processes 1 --threads N` for a comparison (0: not)")
    parser.add_argument("--fsync", default="on,off", help="W1 bghttp variants: on, off or on,off (W2-W4 use on)")
    parser.add_argument("--server", choices=("auto", "python"), default="auto", help="python: skip nginx")
    parser.add_argument("--queue-type", default="classic",
                        help="W1 bghttp variants: classic, quorum or classic,quorum (the others use classic)")
    parser.add_argument("--broker-url", help="RabbitMQ URL(s), ';'-separated (default: BGHTTP_BENCH_BROKER_URL)")
    parser.add_argument("--store-dir", type=Path, action="append", default=[],
                        help="W1 also runs with its store under this directory (e.g. a shared mount); repeatable")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.broker_url:
        infra.BROKER_URL = args.broker_url
    wanted = [name.strip().upper() for name in args.only.split(",") if name.strip()]
    fsync_variants = [part.strip() == "on" for part in args.fsync.split(",") if part.strip()]
    args.shapes = worker_shapes(args.worker, args.processes, args.threads)
    if args.compare_tree is not None:
        if not (args.compare_tree / "bghttp" / "actors.py").is_file():
            raise SystemExit(f"--compare-tree: {args.compare_tree} holds no bghttp package")
        args.shapes.append(WorkerShape(tree=args.compare_tree.resolve()))
    command = "python -m benchmarks.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    started = datetime.datetime.now(datetime.UTC)

    results: list[Result] = []
    settled = settle_file_creation()
    print(f"settle: {settled}", flush=True)
    with start_target(args.server) as target:
        print(f"target: {target.kind} at {target.base_url}", flush=True)
        for name in wanted:
            print(f"{name} ...", flush=True)
            result = _run_one(name, sizes, target, args, fsync_variants, results)
            results.append(result)
            for row in result.rows:
                print(f"  {row.label}: bghttp {row.bghttp} | baseline {row.baseline} | {row.ratio}", flush=True)
    write_results(args.output, results, command.strip(), started, target.kind, settled, args)
    print(f"wrote {args.output}")
    return 0


def worker_shapes(spec: str, processes: int, threads: int) -> list[WorkerShape]:
    """``--worker``: "default", "flags" or both, comma-separated, in the order given."""
    shapes = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part not in ("default", "flags"):
            raise SystemExit(f"--worker: {part!r} is neither 'default' nor 'flags'")
        shapes.append(WorkerShape.default() if part == "default" else WorkerShape.flags(processes, threads))
    if not shapes:
        raise SystemExit("--worker: give default, flags or both")
    return shapes


def _run_one(name: str, sizes: Sizes, target: Target, args: argparse.Namespace, fsync_variants: list[bool],
             done: list[Result]) -> Result:
    shape = args.shapes[0]
    if name == "W1":
        queue_types = [part.strip() for part in args.queue_type.split(",") if part.strip()]
        return workloads.throughput("W1", "GET", target.small_url, sizes.gets, shape=shape,
                                    fsync_variants=fsync_variants, queue_types=queue_types,
                                    store_roots=[None, *args.store_dir])
    if name == "W2":
        return workloads.throughput("W2", "POST", target.small_url, sizes.posts, shape=shape, fsync_variants=[True])
    if name == "W3":
        url = target.file_url(sizes.download)
        return workloads.large_download(url, FILE_SIZES[sizes.download], shape=shape)
    if name == "W4":
        return workloads.submit_latency(target.small_url, sizes.single_submits, sizes.bulk_submit)
    if name == "W5":
        return workloads.store_scale(sizes.store_small, sizes.store_large)
    if name == "W6":
        with start_delay_server(1.0) as server:
            return concurrency.slow_target_drain(server, sizes.slow_gets, args.shapes)
    if name == "W7":
        with start_delay_server(1.0) as slow, start_delay_server(0.0, host="127.0.0.2") as fast:
            return concurrency.head_of_line(slow, fast, sizes.behind_slow, sizes.fast_after, args.shapes)
    if name == "W8":
        rate, source = _w8_rate(args, target, sizes, done)
        return concurrency.queue_latency(target.small_url, rate, sizes.paced_seconds, shape, rate_source=source)
    if name == "MEM":
        # All of MEM's requests go to one host: the per-host cap must allow them all.
        in_flight = str(sizes.in_flight)
        shapes = [
            WorkerShape(
                processes=1,
                env=(("BGHTTP_MAX_IN_FLIGHT", in_flight), ("BGHTTP_MAX_IN_FLIGHT_PER_HOST", in_flight)),
            )
        ]
        if args.mem_threads:
            shapes.append(WorkerShape.flags(1, args.mem_threads))
        with start_delay_server(10.0) as server:
            return concurrency.memory_in_flight(server, sizes.in_flight, shapes)
    raise SystemExit(f"unknown workload {name!r}")


def _w8_rate(args: argparse.Namespace, target: Target, sizes: Sizes, done: list[Result]) -> tuple[float, str]:
    """W8's submit rate and where it came from: --rate, else half of W1's bghttp rate (this run's, or measured)."""
    if args.rate:
        return args.rate, "--rate"
    w1 = next((result for result in done if result.name == "W1"), None)
    durable = [row for row in w1.rows if "BGHTTP_FSYNC=1" in row.label] if w1 is not None else []
    if durable:
        rate = float(durable[0].bghttp.replace(",", ""))
        return rate * W8_SHARE_OF_W1, f"half of this run's W1 bghttp rate, {rate:,.0f}/s"
    count = min(sizes.gets, 2000)
    seconds = workloads.run_bghttp_drain("GET", target.small_url, count, shape=args.shapes[0], fsync=True)
    rate = count / seconds
    return rate * W8_SHARE_OF_W1, f"half of a W1 drain of {count:,} GETs measured first: {rate:,.0f}/s"


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
        f"- **Workers**: {' and '.join(shape.describe() for shape in args.shapes)} unless a workload says "
        "otherwise, real RabbitMQ, a fresh queue and store per workload",
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
