"""Workloads with many requests waiting on slow servers: W6, W7, W8 and MEM.

W1-W5 (``workloads.py``) measure CPU-bound throughput against a fast server;
these measure what a worker does while its requests *wait*: how many it keeps
in flight (W6), whether a slow host holds up a fast one (W7), how long a
request sits in the queue when the workers are not saturated (W8), and what
1,000 requests in flight cost in memory (MEM). Each returns a
``workloads.Result``; nothing here asserts on timing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bghttp import BackgroundHttpClient, BulkRequest, RequestStatus, Settings, StatusRecord
from bghttp.store import FileStore

from .infra import WorkerShape, bench_settings, load, memory_of, scratch_dir, worker_group
from .stats import percentile, send_times
from .target import DelayTarget
from .workloads import BASELINE_THREADS, SUBMIT_CHUNK, Result, Row, _ratio, run_baseline_pool, wait_all_terminal

MIB = 1 << 20
#: W8's submitting threads: at 250 submits/s one thread has 4 ms per submit, less than a single submit's p99 under load.
SUBMITTERS = 4


def _submit_bulk(client: BackgroundHttpClient, url: str, count: int) -> list[str]:
    """``count`` GETs to ``url`` by bulk submit in chunks; their IDs."""
    ids: list[str] = []
    for offset in range(0, count, SUBMIT_CHUNK):
        batch = [BulkRequest("GET", url) for _ in range(min(SUBMIT_CHUNK, count - offset))]
        ids += [info.request_id for info in client.submit_many(batch)]
    return ids


def _completed_count(settings: Settings) -> int:
    """Requests with a response saved (one metadata file each): a cheap count, one directory listing."""
    return sum(1 for name in os.listdir(Path(settings.store_dir) / "responses") if name.endswith(".meta.log"))


def _wait_terminal(settings: Settings, ids: Iterable[str], deadline: float,
                   alive: Callable[[], bool] = lambda: True) -> dict[str, StatusRecord]:
    """The terminal records of ``ids`` reached before ``deadline`` (monotonic); the rest are left out."""
    store = FileStore(settings.store_dir, fsync=False)
    pending, done = set(ids), {}
    while pending and time.monotonic() < deadline and alive():
        for request_id in list(pending):
            record = store.read_status(request_id)
            if record is not None and record.is_terminal:
                if record.status is not RequestStatus.COMPLETED:
                    raise RuntimeError(f"request {request_id} ended {record.status.value}: {record.last_error}")
                done[request_id] = record
                pending.discard(request_id)
        time.sleep(0.2)
    return done


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f}" if abs(seconds) >= 0.1 else f"{seconds * 1000:.2f}"


# ----------------------------------------------------------------------- W6
def slow_target_drain(server: DelayTarget, count: int, shapes: list[WorkerShape], *, time_limit: float = 120.0,
                      baseline_rounds: int = 6) -> Result:
    """W6: ``count`` GETs to a server that answers after ``server.delay`` s; requests/s against the thread pool."""
    result = Result(
        "W6",
        f"{count:,} GETs to a server that answers each after {server.delay:g} s (asyncio, own process)",
        f"bulk submit in chunks of {SUBMIT_CHUNK} to a running worker group, until the last status is `completed` "
        f"(or {time_limit:.0f} s: then the rate of those completed by then)",
        f"plain `httpx.Client` thread pool (as W1), best of {'/'.join(map(str, BASELINE_THREADS))} threads; each "
        f"thread count sends {baseline_rounds} rounds (threads × {baseline_rounds} requests), not all {count:,}: at "
        f"{server.delay:g} s per request its rate is threads / {server.delay:g} s whatever the count",
        load_before=load(),
    )
    started = time.monotonic()
    pool = {}
    for threads in BASELINE_THREADS:
        sent = min(count, threads * baseline_rounds)
        pool[threads] = sent / run_baseline_pool("GET", server.url, sent, threads, scratch_dir("bghttp-bench-w6-"))
    best_threads = max(pool, key=lambda t: pool[t])
    for shape in shapes:
        rate, done, peak = _drain_rate(server, count, shape, time_limit)
        result.rows.append(Row(f"requests/s, {shape.describe()}", f"{rate:,.1f}", f"{pool[best_threads]:,.1f}",
                               _ratio(rate, pool[best_threads])))
        result.rows.append(Row(f"most requests waiting at the server at once, {shape.describe()}", f"{peak:,}",
                               f"{best_threads}", _ratio(peak, best_threads)))
        if done < count:
            result.notes.append(f"{shape.describe()}: only {done:,} of {count:,} completed within {time_limit:.0f} s;"
                                " the rate is theirs")
    result.notes.append("thread pool requests/s per thread count: "
                        + ", ".join(f"{t} threads {rate:,.1f}" for t, rate in pool.items()))
    result.notes.append("target: the default worker drains ≥ 400 requests/s, ≥ 10× the best thread pool")
    result.seconds = time.monotonic() - started
    result.load_after = load()
    return result


def _drain_rate(server: DelayTarget, count: int, shape: WorkerShape, time_limit: float) -> tuple[float, int, int]:
    """(requests/s, requests completed, most waiting at the server at once) for one worker group."""
    with bench_settings(fsync=True) as settings, worker_group(settings, shape=shape) as group, \
            BackgroundHttpClient(settings) as client:
        server.stats(reset=True)
        started_wall, started = time.time(), time.monotonic()
        _submit_bulk(client, server.url, count)
        while (done := _completed_count(settings)) < count and time.monotonic() - started < time_limit:
            if group.process.poll() is not None:
                raise RuntimeError("the worker group exited before the requests were done")
            time.sleep(0.2)
        peak = server.stats()["peak"]
        if done < count:
            return done / (time.monotonic() - started), done, peak
        finished = wait_all_terminal(settings, count, alive=lambda: group.process.poll() is None)
        return count / (finished - started_wall), count, peak


# ----------------------------------------------------------------------- W7
def head_of_line(slow: DelayTarget, fast: DelayTarget, slow_count: int, fast_count: int,
                 shapes: list[WorkerShape], *, time_limit: float = 150.0) -> Result:
    """W7: slow requests submitted first, then fast ones to another host; the fast ones' latency.

    Side by side: the same fast requests on an idle worker group of the same shape.
    """
    result = Result(
        "W7",
        f"head-of-line: {slow_count:,} GETs to a {slow.delay:g} s host submitted first, then {fast_count:,} to a "
        "fast host",
        f"bulk submit of the slow ones, then each fast one by a single submit; latency = the status record's "
        f"`completed_at` minus the time its submit returned (slow host {slow.base_url}, fast host {fast.base_url})",
        "the same fast requests alone, on an idle worker group of the same shape",
        load_before=load(),
    )
    started = time.monotonic()
    for shape in shapes:
        alone, _ = _fast_latencies(slow, fast, 0, fast_count, shape, time_limit)
        behind, unfinished = _fast_latencies(slow, fast, slow_count, fast_count, shape, time_limit)
        for label, pct in (("p50", 50), ("p99", 99)):
            a, b = percentile(behind, pct), percentile(alone, pct)
            result.rows.append(Row(f"fast request latency {label} (ms), {shape.describe()}", _ms(a), _ms(b),
                                   _ratio(a, b)))
        if unfinished:
            result.notes.append(f"{shape.describe()}: {unfinished} fast requests had not completed after "
                                f"{time_limit:.0f} s; they count as {time_limit:.0f} s (a lower bound)")
    result.notes.append("target: the fast ones finish within 2 s of submission (p99)")
    result.seconds = time.monotonic() - started
    result.load_after = load()
    return result


def _fast_latencies(slow: DelayTarget, fast: DelayTarget, slow_count: int, fast_count: int, shape: WorkerShape,
                    time_limit: float) -> tuple[list[float], int]:
    """Seconds from each fast submit's return to its completion, and how many did not complete in time."""
    with bench_settings(fsync=True) as settings, worker_group(settings, shape=shape) as group, \
            BackgroundHttpClient(settings) as client:
        _submit_bulk(client, slow.url, slow_count)
        submitted = {}
        for _ in range(fast_count):
            info = client.get(fast.url)
            submitted[info.request_id] = time.time()
        deadline = time.monotonic() + time_limit
        records = _wait_terminal(settings, submitted, deadline, alive=lambda: group.process.poll() is None)
    latencies = [(records[i].completed_at or 0.0) - submitted[i] for i in records]
    unfinished = fast_count - len(records)
    return latencies + [time_limit] * unfinished, unfinished


# ----------------------------------------------------------------------- W8
def queue_latency(url: str, rate: float, duration: float, shape: WorkerShape, *, rate_source: str,
                  submitters: int = SUBMITTERS) -> Result:
    """W8: single submits at a fixed ``rate`` for ``duration`` s; attempt start minus submit return."""
    count = max(1, round(rate * duration))
    result = Result(
        "W8",
        f"queue latency at {rate:,.0f} submits/s ({rate_source}) for {duration:g} s ({count:,} GETs)",
        f"single submits (`client.get`, fsync on) on a fixed schedule from {submitters} threads to a running worker "
        f"group ({shape.describe()}); latency = the first attempt's `started_at` minus the time the submit "
        "call returned",
        "none named by the issue: the figures against its targets",
        load_before=load(),
    )
    started = time.monotonic()
    with bench_settings(fsync=True) as settings, worker_group(settings, shape=shape) as group, \
            BackgroundHttpClient(settings) as client:
        returned, achieved, worst_lag = _paced_submits(client, url, rate, count, submitters)
        records = _wait_terminal(settings, returned, time.monotonic() + 120, alive=lambda: group.process.poll() is None)
    if len(records) < count:
        raise RuntimeError(f"only {len(records)} of {count} requests completed within 120 s")
    waits = [records[i].attempts[0].started_at - returned[i] for i in records]
    for label, pct, target in (("p50", 50, "≤ 5"), ("p99", 99, "≤ 50")):
        result.rows.append(Row(f"submit returned → attempt started, {label} (ms)", _ms(percentile(waits, pct)),
                               f"target {target}", "—"))
    result.rows.append(Row("… max (ms)", _ms(max(waits)), "—", "—"))
    result.notes.append(f"submits/s achieved {achieved:,.0f} of {rate:,.0f} asked; a submit started at most "
                        f"{_ms(worst_lag)} ms after its due time")
    result.notes.append("a negative latency means the attempt started before the submit call returned (the "
                        "worker had the message before the publisher confirm reached the submitter)")
    result.seconds = time.monotonic() - started
    result.load_after = load()
    return result


def _paced_submits(client: BackgroundHttpClient, url: str, rate: float, count: int,
                   submitters: int) -> tuple[dict[str, float], float, float]:
    """Submit ``count`` GETs on a ``rate``-per-second schedule; (returned time per ID, achieved rate, worst lag).

    Thread k takes due times k, k + submitters, ...: one slow submit (an fsync
    under load can take longer than the interval) does not hold back the rest.
    """
    warm_up = 1.0
    schedule = send_times(rate, count, time.monotonic() + warm_up)
    returned: dict[str, float] = {}
    lags = [0.0] * submitters

    def submit_share(thread: int) -> None:
        for _ in range(3):  # warm-up, not counted: this thread's broker connection, the queue declaration
            client.get(url)
        for due in schedule[thread::submitters]:
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            lags[thread] = max(lags[thread], -wait)
            info = client.get(url)
            returned[info.request_id] = time.time()

    with ThreadPoolExecutor(submitters) as pool:
        list(pool.map(submit_share, range(submitters)))
    return returned, count / (time.monotonic() - schedule[0]), max(lags)


# ---------------------------------------------------------------------- MEM
def memory_in_flight(server: DelayTarget, in_flight: int, shapes: list[WorkerShape], *,
                     settle: float = 2.0) -> Result:
    """MEM: a single worker process holding ``in_flight`` requests to a slow server; its RSS before and at peak."""
    result = Result(
        "MEM",
        f"worker RSS with {in_flight:,} requests in flight to a server that answers after {server.delay:g} s",
        "one worker process; RSS from /proc/PID/status (VmRSS sampled every 0.1 s, and VmHWM) of the worker "
        "process, not its parent; growth = peak sampled VmRSS minus VmRSS when idle before the submit",
        "—",
        load_before=load(),
    )
    started = time.monotonic()
    for shape in shapes:
        before, peak, hwm, waiting = _rss_while_waiting(server, in_flight, shape, settle)
        result.rows.append(Row(f"RSS growth (MiB), {shape.describe()}", f"{(peak - before) / MIB:.1f}", "—", "—"))
        result.rows.append(Row(f"most requests waiting at the server at once, {shape.describe()}", f"{waiting:,}",
                               f"{in_flight:,} asked", _ratio(waiting, in_flight)))
        result.notes.append(f"{shape.describe()}: VmRSS idle {before / MIB:.1f} MiB, peak sampled "
                            f"{peak / MIB:.1f} MiB, VmHWM at the end {hwm / MIB:.1f} MiB")
    result.notes.append(f"target: RSS growth ≤ 64 MiB with {in_flight:,} in flight")
    result.seconds = time.monotonic() - started
    result.load_after = load()
    return result


def _rss_while_waiting(server: DelayTarget, in_flight: int, shape: WorkerShape,
                       settle: float) -> tuple[int, int, int, int]:
    """(idle VmRSS, peak VmRSS, final VmHWM, most waiting at the server) of the group's one worker process."""
    with bench_settings(fsync=True) as settings, worker_group(settings, shape=shape) as group, \
            BackgroundHttpClient(settings) as client:
        pids = group.worker_pids()
        if len(pids) != 1:
            raise RuntimeError(f"MEM needs exactly one worker process; {shape.describe()} has {len(pids)}")
        pid = pids[0]
        time.sleep(settle)
        before, _ = memory_of(pid)
        server.stats(reset=True)
        _submit_bulk(client, server.url, in_flight)
        submitted = time.monotonic()
        peak, waiting = before, 0
        # Sample until just before the first answers come back (they free memory), or all are waiting.
        while time.monotonic() - submitted < server.delay * 0.9:
            peak = max(peak, memory_of(pid)[0])
            waiting = server.stats()["peak"]
            if waiting >= in_flight:
                time.sleep(0.5)  # the last ones' buffers are still being filled
                peak = max(peak, memory_of(pid)[0])
                break
            time.sleep(0.1)
        _, hwm = memory_of(pid)
    return before, peak, hwm, waiting
