"""A real Prometheus (Debian's package) scrapes two real ``bghttp worker --metrics-port`` groups.

The test causes known traffic, then asks Prometheus's HTTP API for the expressions
docs/operations.md documents, read from the shipped rules file, and checks the values:

* group A (2 processes, queue A, its network a probe port the test closes):
  4 completed, 2 failed (500, ``retries=0``); then offline, 2 submitted while offline
  run when the network is back (their queue wait is at least HELD_SECONDS);
* group B (1 process, queue B): 2 completed, 1 failed, then 3 held by the server
  (in flight) and released; at the end it stops, and its queue has no live worker.

``rate()`` extrapolates at the edges of a series (by at most one scrape interval
per series), so rates are checked within what that allows; counts exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from bghttp import BackgroundHttpClient, Settings
from bghttp.store import FileStore
from tests.cli.helpers import BghttpWorker
from tests.connectivity.support import ProbePort
from tests.prometheus.support import RULES, PrometheusServer, require_tool
from tests.support import delete_queues, free_port, unique_queue, wait_until

pytestmark = pytest.mark.slow

#: Seconds the requests submitted while group A is offline are held at least.
HELD_SECONDS = 6.0
#: rate() over [5m] of a series that starts at 0 within the window: exact but for the
#: extrapolation to the evaluation time (at most ~1 scrape interval over the series' span).
RATE_WINDOW = 300
#: Room for floating point where the extrapolation is nil.
EPSILON = 1e-9


class TargetServer:
    """Loopback HTTP: ``/ok`` 200, ``/error`` 500, ``/hold`` answers 200 once released."""

    def __init__(self) -> None:
        self.port = free_port()
        self.counts: Counter[str] = Counter()
        self.release = threading.Event()
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    owner.counts[self.path] += 1
                if self.path == "/hold":
                    owner.release.wait(60)
                status = 500 if self.path == "/error" else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


class AcceptingProbe(ProbePort):
    """A probe port that accepts (and closes) each connection: frequent checks never fill its backlog."""

    def open(self) -> None:
        super().open()
        sock = self._sock
        assert sock is not None

        def accept() -> None:
            while True:
                try:
                    sock.accept()[0].close()
                except OSError:
                    return  # closed: the network is "down"

        threading.Thread(target=accept, daemon=True).start()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        super().close()


@pytest.fixture
def target() -> Iterator[TargetServer]:
    server = TargetServer()
    yield server
    server.stop()


@pytest.fixture
def second_queue(rabbitmq_settings: Settings) -> Iterator[Settings]:
    """Group B's settings: the same store and broker, a queue of its own."""
    settings = dataclasses.replace(rabbitmq_settings, queue_name=unique_queue())
    yield settings
    delete_queues(settings.queue_name)


def _documented() -> dict[str, str]:
    """Expression by rule name (recording rules and alerts) from the shipped rules file."""
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    return {rule.get("record") or rule["alert"]: rule["expr"] for rule in rules}


def _ended(store: FileStore, ids: list[str]) -> bool:
    return all((record := store.read_status(i)) is not None and record.is_terminal for i in ids)


def test_prometheus_computes_the_documented_expressions_from_two_worker_groups(
    rabbitmq_settings: Settings, second_queue: Settings, target: TargetServer, tmp_path: Path
) -> None:
    require_tool("prometheus")
    expr = _documented()
    probe = AcceptingProbe(free_port())
    probe.open()
    settings_a = dataclasses.replace(rabbitmq_settings, connectivity_probes=(probe.spec,), connectivity_interval=0.2)
    settings_b = second_queue
    port_a, port_b = free_port(), free_port()
    instance_a, instance_b = f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"
    store = FileStore(rabbitmq_settings.store_dir)
    groups: list[BghttpWorker] = []
    prometheus: PrometheusServer | None = None
    try:
        for settings, port, processes in ((settings_a, port_a, "2"), (settings_b, port_b, "1")):
            group = BghttpWorker(
                settings, "--processes", processes, "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
                log_path=tmp_path / f"worker-{port}.log",
            )  # fmt: skip
            groups.append(group)
            group.wait_ready()
        prometheus = PrometheusServer(tmp_path / "prometheus", [instance_a, instance_b], rule_files=(RULES,))
        # Every final-status series of both groups is scraped at 0 before any traffic.
        wait_until(lambda: prometheus.value("count(bghttp_requests_total == 0)") == 6, timeout=60, interval=0.5)
        loaded = prometheus.query_api("/api/v1/rules")["groups"]
        assert sorted(rule["health"] for group in loaded for rule in group["rules"]) == ["ok"] * 12

        # Phase 1: known outcomes on each group (retries=0: the 500s fail at once).
        with BackgroundHttpClient(settings_a) as client_a, BackgroundHttpClient(settings_b) as client_b:
            ids = [client_a.get(target.url("/ok")).request_id for _ in range(4)]
            ids += [client_a.get(target.url("/error"), retries=0).request_id for _ in range(2)]
            ids += [client_b.get(target.url("/ok")).request_id for _ in range(2)]
            ids += [client_b.get(target.url("/error"), retries=0).request_id]
            wait_until(lambda: _ended(store, ids), timeout=60)

            # Phase 2: three attempts held by the server are in flight.
            held = [client_b.get(target.url("/hold")).request_id for _ in range(3)]
            wait_until(lambda: target.counts["/hold"] == 3, timeout=60)
            in_flight = wait_until(
                lambda: prometheus.value(expr["bghttp:attempts_in_flight:sum"]) == 3, timeout=30, interval=0.5
            )
            assert in_flight
            target.release.set()
            wait_until(lambda: _ended(store, held), timeout=60)

            # Phase 3: group A loses the network; what is submitted meanwhile waits for it.
            went_offline = time.time()
            probe.close()
            wait_until(lambda: prometheus.value(expr["bghttp:workers_offline:sum"]) == 1, timeout=60, interval=0.5)
            since = prometheus.value(f'bghttp_network_offline_since_timestamp_seconds{{instance="{instance_a}"}}')
            assert since is not None and went_offline <= since <= time.time()
            assert prometheus.value(f'bghttp_network_offline_since_timestamp_seconds{{instance="{instance_b}"}}') == 0
            submitted = time.time()
            waited = [client_a.get(target.url("/ok")).request_id for _ in range(2)]
            time.sleep(max(0.0, submitted + HELD_SECONDS - time.time()))
            assert not _ended(store, waited) and target.counts["/ok"] == 6  # held, not sent
            probe.open()
            wait_until(lambda: _ended(store, waited), timeout=60)
        wait_until(lambda: prometheus.value(expr["bghttp:workers_offline:sum"]) == 0, timeout=60, interval=0.5)

        # Counters, exactly: A 6 completed 2 failed, B 5 completed 1 failed, 14 first attempts.
        def scraped_all() -> bool:
            return (
                prometheus.value('sum(bghttp_requests_total{status="completed"})') == 11
                and prometheus.value("sum(bghttp_queue_wait_seconds_count)") == 14
            )

        wait_until(scraped_all, timeout=30, interval=0.5)
        per_group = {
            (row["metric"]["instance"], row["metric"]["status"]): float(row["value"][1])
            for row in prometheus.query("bghttp_requests_total")
        }
        assert per_group == {
            (instance_a, "completed"): 6, (instance_a, "failed"): 2, (instance_a, "cancelled"): 0,
            (instance_b, "completed"): 5, (instance_b, "failed"): 1, (instance_b, "cancelled"): 0,
        }  # fmt: skip
        assert prometheus.value("sum(bghttp_retries_exhausted_total)") == 3

        # The documented expressions (one scrape job, so one series each).
        completion_rate = prometheus.value(expr["bghttp:requests_completed:rate5m"])
        assert completion_rate is not None and 11 - EPSILON <= completion_rate * RATE_WINDOW < 11 * 1.25
        exhausted = prometheus.value(expr["bghttp:retries_exhausted:increase1h"])
        assert exhausted is not None and 3 - EPSILON <= exhausted < 3 * 1.25
        # The failure ratio lies between the groups' own ratios (2 of 8 and 1 of 6), which
        # are exact per group: a group's series share their scrapes, so their extrapolation.
        failure_ratio = prometheus.value(expr["bghttp:requests_failed:ratio_rate5m"])
        assert failure_ratio is not None and 1 / 6 - EPSILON <= failure_ratio <= 2 / 8 + EPSILON
        by_group = expr["bghttp:requests_failed:ratio_rate5m"].replace("by (job)", "by (instance)")
        ratios = {row["metric"]["instance"]: float(row["value"][1]) for row in prometheus.query(by_group)}
        assert ratios == pytest.approx({instance_a: 2 / 8, instance_b: 1 / 6})
        # Queue wait: the two requests held while offline waited HELD_SECONDS or more.
        p95 = prometheus.value(expr["bghttp:queue_wait_seconds:p95_5m"])
        assert p95 is not None and p95 > 5
        long_waits = prometheus.value(
            'sum(bghttp_queue_wait_seconds_count) - sum(bghttp_queue_wait_seconds_bucket{le="5.0"})'
        )
        assert long_waits is not None and long_waits >= 2
        wait_total = prometheus.value("sum(bghttp_queue_wait_seconds_sum)")
        assert wait_total is not None and wait_total >= 2 * HELD_SECONDS
        assert prometheus.value(expr["bghttp:attempts_in_flight:sum"]) == 0

        # No live worker for a queue: none while both groups run; B's queue once B stops.
        def consumers() -> dict[str, float]:
            rows = prometheus.query("bghttp_queue_consumers")
            return {row["metric"]["queue"]: float(row["value"][1]) for row in rows}

        expected_consumers = {
            settings_a.queue_name: 2, f"{settings_a.queue_name}.submit": 2,
            settings_b.queue_name: 1, f"{settings_b.queue_name}.submit": 1,
        }  # fmt: skip
        assert wait_until(lambda: consumers() == expected_consumers, timeout=30, interval=0.5)
        assert prometheus.query(expr["BghttpNoLiveWorker"]) == []
        groups[1].stop()

        def queues_without_worker() -> list[str]:
            return sorted(row["metric"]["queue"] for row in prometheus.query(expr["BghttpNoLiveWorker"]))

        assert wait_until(lambda: queues_without_worker() == [settings_b.queue_name], timeout=30, interval=0.5)
    finally:
        if prometheus is not None:
            prometheus.stop()
        for group in groups:
            group.stop()
        probe.close()
