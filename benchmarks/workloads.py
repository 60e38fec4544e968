"""The five workloads (W1-W5), each measuring bghttp and its baseline in the same run.

Every function returns a :class:`Result`: rows of (label, bghttp value, baseline
value, ratio) plus notes. Nothing here asserts on timing; it only measures.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.broker import publish_request
from bghttp.store import FileStore
from bghttp.validation import prepare_request

from .infra import RssSampler, WorkerShape, bench_settings, load, scratch_dir, worker_group
from .stats import percentile

BASELINE_THREADS = (4, 8, 16, 32)
SUBMIT_CHUNK = 500


@dataclasses.dataclass
class Row:
    label: str
    bghttp: str
    baseline: str
    ratio: str


@dataclasses.dataclass
class Result:
    name: str
    title: str
    bghttp_side: str
    baseline_side: str
    rows: list[Row] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    load_before: str = ""
    load_after: str = ""
    seconds: float = 0.0


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b else "n/a"


def post_body(n: int) -> dict[str, Any]:
    """A 1 KiB JSON object (its encoding is 1,024 bytes for n < 10**6)."""
    body = {"n": n, "pad": ""}
    pad = 1024 - len(json.dumps({"n": n, "pad": ""}).encode())
    body["pad"] = "x" * pad
    return body


# ------------------------------------------------------------------ W1 / W2
def run_baseline_pool(method: str, url: str, count: int, threads: int, out_dir: Path) -> float:
    """A plain httpx thread pool: send, save body + a small JSON status per request. Returns seconds."""
    out_dir.mkdir(parents=True, exist_ok=True)
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with httpx.Client(limits=limits, timeout=60) as client:

        def one(n: int) -> None:
            request_id = uuid.uuid4().hex
            content = json.dumps(post_body(n)).encode() if method == "POST" else None
            headers = {"Content-Type": "application/json"} if content else None
            started = time.time()
            response = client.request(method, url, content=content, headers=headers)
            (out_dir / f"{request_id}.body").write_bytes(response.content)
            status = {"request_id": request_id, "status_code": response.status_code, "started_at": started,
                      "finished_at": time.time(), "headers": list(response.headers.multi_items())}
            (out_dir / f"{request_id}.json").write_text(json.dumps(status))
            if response.status_code != 200:
                raise RuntimeError(f"baseline got HTTP {response.status_code}")

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(count)))
        return time.perf_counter() - started


def best_baseline(
    method: str, url: str, count: int, thread_counts: Iterable[int] = BASELINE_THREADS
) -> dict[int, float]:
    """Run the baseline at each thread count; return seconds per thread count."""
    return {
        threads: run_baseline_pool(method, url, count, threads, scratch_dir("bghttp-bench-baseline-"))
        for threads in thread_counts
    }


def run_bghttp_drain(
    method: str,
    url: str,
    count: int,
    *,
    shape: WorkerShape,
    fsync: bool,
    log_level: str = "INFO",
    queue_type: str = "classic",
    store_root: Path | None = None,
) -> float:
    """Submit ``count`` requests (bulk, in chunks) to running workers; seconds until the last one completed."""
    with bench_settings(fsync=fsync, queue_type=queue_type, store_root=store_root) as settings, worker_group(
        settings, shape=shape, log_level=log_level
    ) as group, BackgroundHttpClient(settings) as client:
        requests = [
            {"method": method, "url": url, **({"data": post_body(n)} if method == "POST" else {})}
            for n in range(count)
        ]
        started = time.time()
        for offset in range(0, count, SUBMIT_CHUNK):
            client.submit_many(requests[offset : offset + SUBMIT_CHUNK])
        finished = wait_all_terminal(settings, count, alive=lambda: group.process.poll() is None)
        return finished - started


def wait_all_terminal(
    settings: Settings, count: int, timeout: float = 900.0, alive: Callable[[], bool] = lambda: True
) -> float:
    """Wait until ``count`` requests completed; return the wall time of the last status write."""
    store = FileStore(settings.store_dir, fsync=False)
    responses = Path(settings.store_dir) / "responses"
    deadline = time.monotonic() + timeout
    # Cheap poll first (one directory listing), so the poller does not steal the workers' CPU.
    while sum(1 for name in os.listdir(responses) if name.endswith(".meta.log")) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"requests not done within {timeout}s")
        if not alive():
            raise RuntimeError("the worker group exited before the requests were done")
        time.sleep(0.2)
    last = 0.0
    for request_id in list(store.request_ids()):
        while True:
            record = store.read_status(request_id)
            if record is not None and record.is_terminal:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"request {request_id} not terminal within {timeout}s")
            time.sleep(0.05)
        if record.status is not RequestStatus.COMPLETED:
            raise RuntimeError(f"request {request_id} ended {record.status.value}: {record.last_error}")
        last = max(last, record.completed_at or 0.0, os.stat(store._path("status", request_id)).st_mtime)
    return last


def throughput(
    name: str,
    method: str,
    url: str,
    count: int,
    *,
    shape: WorkerShape,
    fsync_variants: Iterable[bool],
    queue_types: Iterable[str] = ("classic",),
    store_roots: Iterable[Path | None] = (None,),
) -> Result:
    result = Result(
        name,
        f"{count:,} {method} requests" + (" with a 1 KiB JSON body" if method == "POST" else " (small response)"),
        f"bulk submit in chunks of {SUBMIT_CHUNK} to a running worker group "
        f"({shape.describe()}), until the last status is `completed`",
        "plain `httpx.Client` thread pool, same requests, writes body + JSON status per request, best of "
        + "/".join(map(str, BASELINE_THREADS)) + " threads",
        load_before=load(),
    )
    started = time.monotonic()
    # The baseline's sweep runs first and its best thread count runs again after
    # bghttp; the faster of its runs counts, so run order cannot favour bghttp.
    sweep = best_baseline(method, url, count)
    queue_types = list(queue_types)
    rates = {
        (fsync, queue_type, root): count
        / run_bghttp_drain(
            method, url, count, shape=shape, fsync=fsync, queue_type=queue_type,
            store_root=root,
        )
        for root in store_roots
        for queue_type in queue_types
        for fsync in fsync_variants
    }
    best_threads = min(sweep, key=lambda t: sweep[t])
    rerun = best_baseline(method, url, count, [best_threads])[best_threads]
    base_rate = count / min(sweep[best_threads], rerun)
    for (fsync, queue_type, root), rate in rates.items():
        kind = f", {queue_type} queue" if queue_types != ["classic"] else ""
        where = "" if root is None else f", store on {root}"
        label = f"requests/s (BGHTTP_FSYNC={int(fsync)}{kind}{where})"
        result.rows.append(Row(label, f"{rate:,.0f}", f"{base_rate:,.0f}", _ratio(rate, base_rate)))
    result.notes.append(
        "baseline per thread count (requests/s): "
        + ", ".join(f"{t} threads {count / s:,.0f}" for t, s in sweep.items())
        + f"; best: {best_threads} threads, {count / rerun:,.0f} requests/s when run again after bghttp"
    )
    result.seconds = time.monotonic() - started
    result.load_after = load()
    return result


# ----------------------------------------------------------------------- W3
def large_download(url: str, size: int, *, shape: WorkerShape) -> Result:
    result = Result(
        "W3",
        f"one {size / (1 << 20):,.0f} MiB streamed response",
        f"one request through a worker group ({shape.describe()}, BGHTTP_FSYNC=1)",
        "`curl -sS -o FILE URL`",
        load_before=load(),
    )
    started = time.monotonic()
    out = scratch_dir("bghttp-bench-curl-")  # same filesystem as the store; one file, deleted at once
    try:
        curl_started = time.perf_counter()
        subprocess.run(["curl", "-sS", "-o", str(out / "big"), url], check=True)
        curl_seconds = time.perf_counter() - curl_started
        if (out / "big").stat().st_size != size:
            raise RuntimeError("curl downloaded a wrong size")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    with bench_settings(fsync=True) as settings, worker_group(
        settings, shape=shape
    ) as group, BackgroundHttpClient(settings) as client:
        time.sleep(1.0)  # let the workers settle before the RSS baseline is taken
        with RssSampler(group.worker_pids()) as sampler:
            bg_started = time.time()
            info = client.get(url, timeout=900)
            record = client.wait(info.request_id, timeout=900, poll_interval=0.02)
            bg_seconds = (record.completed_at or time.time()) - bg_started
        response = client.get_response(info.request_id)
        if record.status is not RequestStatus.COMPLETED or response is None or response.size != size:
            raise RuntimeError(f"bghttp download failed: {record.status.value} {record.last_error}")
        growth = sampler.max_growth
    bg_rate, curl_rate = size / bg_seconds / (1 << 20), size / curl_seconds / (1 << 20)
    result.rows.append(Row("throughput MiB/s", f"{bg_rate:,.0f}", f"{curl_rate:,.0f}", _ratio(bg_rate, curl_rate)))
    result.rows.append(Row("worker peak RSS growth", f"{growth / (1 << 20):.1f} MiB", "—", "—"))
    result.notes.append("bghttp time includes the submit, the fsync of the body and the status write")
    result.seconds = time.monotonic() - started
    result.load_after = load()
    return result


# ----------------------------------------------------------------------- W4
def submit_latency(url: str, singles: int, bulk: int) -> Result:
    result = Result(
        "W4",
        f"submit latency: {singles:,} single submits, one bulk submit of {bulk:,}",
        "`client.get(url)` (request file saved, fsync on, publish confirmed); `submit_many` for the bulk",
        "a bare confirmed publish of the same message (`publish_request`, no store); for the bulk: "
        "the single-submit rate",
        load_before=load(),
    )
    started = time.monotonic()
    with bench_settings(fsync=True) as settings, BackgroundHttpClient(settings) as client:
        for _ in range(50):  # warm-up: connection, queue declaration
            client.get(url)
        submit_ms = _timed(lambda: client.get(url), singles)
        publish_ms = _timed(lambda: publish_request(client.broker, settings.queue_name, "bench-" + uuid.uuid4().hex, 1),
                            singles)
        requests = [{"method": "GET", "url": url} for _ in range(bulk)]
        bulk_started = time.perf_counter()
        infos = client.submit_many(requests)
        bulk_seconds = time.perf_counter() - bulk_started
        if len(infos) != bulk:
            raise RuntimeError("bulk submit returned a wrong count")
    for label, pct in (("p50", 50), ("p99", 99)):
        a, b = percentile(submit_ms, pct), percentile(publish_ms, pct)
        result.rows.append(Row(f"single submit {label} (ms)", f"{a:.2f}", f"{b:.2f}", _ratio(a, b)))
    single_rate = 1000 / statistics.mean(submit_ms)
    bulk_rate = bulk / bulk_seconds
    result.rows.append(Row("submits/s, bulk vs single", f"{bulk_rate:,.0f}", f"{single_rate:,.0f}",
                           _ratio(bulk_rate, single_rate)))
    result.notes.append(f"single submit mean {statistics.mean(submit_ms):.2f} ms; bulk of {bulk:,} took "
                        f"{bulk_seconds:.2f} s, one RabbitMQ transaction, one syncfs")
    result.seconds = time.monotonic() - started
    result.load_after = load()
    return result


def _timed(call: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


# ----------------------------------------------------------------------- W5
def store_scale(small: int, large: int, lookups: int = 2000) -> Result:
    result = Result(
        "W5",
        f"`get_request_status` with {small:,} and with {large:,} requests in the store",
        f"lookup of random IDs in a store of {large:,} records",
        f"the same in a store of {small:,} records, timed in turn with the large one",
        load_before=load(),
    )
    started = time.monotonic()
    with bench_settings(fsync=False) as small_settings, bench_settings(fsync=False) as large_settings, \
            BackgroundHttpClient(small_settings) as small_client, BackgroundHttpClient(large_settings) as large_client:
        small_ids = _fill_store(small_client.store, small)
        large_ids = _fill_store(large_client.store, large)
        # Write the new records out first (a lookup timed while the kernel flushes 100,000
        # fresh files measures the flush), then alternate the two stores lookup by lookup,
        # so that whatever else the machine does falls on both sizes alike.
        os.sync()
        timings: dict[int, list[float]] = {small: [], large: []}
        pairs = zip(random.choices(small_ids, k=lookups), random.choices(large_ids, k=lookups), strict=True)
        for small_id, large_id in pairs:
            timings[small] += _lookup_times(small_client, [small_id])
            timings[large] += _lookup_times(large_client, [large_id])
    for label, pct in (("p50", 50), ("p99", 99)):
        a, b = percentile(timings[large], pct), percentile(timings[small], pct)
        result.rows.append(Row(f"lookup {label} (µs)", f"{a * 1e6:.0f}", f"{b * 1e6:.0f}", _ratio(a, b)))
    a, b = statistics.mean(timings[large]), statistics.mean(timings[small])
    result.rows.append(Row("lookup mean (µs)", f"{a * 1e6:.0f}", f"{b * 1e6:.0f}", _ratio(a, b)))
    result.notes.append(f"{lookups:,} lookups of random IDs per size, alternating between the two stores, page "
                        "cache warm, after an `os.sync()` that writes the freshly created records out")
    result.seconds = time.monotonic() - started
    result.load_after = load()
    return result


def _fill_store(store: FileStore, count: int) -> list[str]:
    """``count`` queued requests created directly in the store (no broker); their IDs."""
    ids = []
    for _ in range(count):
        prepared = prepare_request("GET", "http://127.0.0.1:9/x")
        store.create_request(prepared.spec)
        ids.append(prepared.spec.request_id)
    return ids


def _lookup_times(client: BackgroundHttpClient, ids: list[str]) -> list[float]:
    times = []
    for request_id in ids:
        started = time.perf_counter()
        if client.get_request_status(request_id) is None:
            raise RuntimeError(f"lost record {request_id}")
        times.append(time.perf_counter() - started)
    return times
