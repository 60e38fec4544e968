"""Prometheus metrics: scraped from a real ``bghttp worker --metrics-port`` group of two processes."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer

from bghttp import BackgroundHttpClient, Settings
from bghttp.store import FileStore
from bghttp.worker.metrics import WorkerMetrics
from tests.cli.helpers import BghttpWorker
from tests.support import free_port, wait_until

OK_BODY = b"x" * 1000
ERROR_BODY = b"broken"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_scraped_counts_match_the_requests_run(
    rabbitmq_settings: Settings, httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/ok").respond_with_data(OK_BODY)
    httpserver.expect_request("/error").respond_with_data(ERROR_BODY, status=500)
    port = free_port()
    worker = BghttpWorker(
        rabbitmq_settings, "--processes", "2", "--threads", "2", "--metrics-port", str(port),
        "--metrics-host", "127.0.0.1", log_path=tmp_path / "worker.log",
    )  # fmt: skip
    try:
        worker.wait_ready()
        with BackgroundHttpClient(rabbitmq_settings) as client:
            ids = [client.get(httpserver.url_for("/ok")).request_id for _ in range(5)]
            ids.append(client.get(httpserver.url_for("/error"), retries=1).request_id)
        store = FileStore(rabbitmq_settings.store_dir)
        wait_until(lambda: all((r := store.read_status(i)) is not None and r.is_terminal for i in ids), 60)

        def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            try:
                samples = _samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
            except httpx.HTTPError:
                return None  # the exposition server is still starting
            done = samples.get(("bghttp_submit_to_completion_seconds_count", (("status", "completed"),)), 0)
            return samples if done == 5 else None

        samples = wait_until(scrape, timeout=30, interval=0.2)
    finally:
        worker.stop()

    assert samples[("bghttp_requests_total", (("status", "completed"),))] == 5
    assert samples[("bghttp_requests_total", (("status", "failed"),))] == 1
    assert samples[("bghttp_attempts_total", (("outcome", "success"),))] == 5
    assert samples[("bghttp_attempts_total", (("outcome", "http_error"),))] == 2
    assert samples[("bghttp_retries_total", ())] == 1
    assert samples[("bghttp_response_bytes_total", ())] == 5 * len(OK_BODY) + 2 * len(ERROR_BODY)
    assert samples[("bghttp_attempt_duration_seconds_count", ())] == 7
    assert samples[("bghttp_submit_to_completion_seconds_count", (("status", "failed"),))] == 1
    assert samples[("bghttp_offline_seconds_total", ())] == 0
    # Dramatiq's own metrics come from the same endpoint: 6 submits + 1 retry message.
    dramatiq_total = sum(v for (name, _), v in samples.items() if name == "dramatiq_messages_total")
    assert dramatiq_total == 7
    # The group ran two worker processes; one endpoint served their summed values.
    assert worker.log_path.read_text().count("Worker process is ready") == 2


def test_offline_time_is_counted_when_the_network_comes_back() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)

    metrics.connectivity_changed(False, now=100.0)
    assert registry.get_sample_value("bghttp_network_online") == 0
    metrics.connectivity_changed(False, now=105.0)  # still offline: the start does not move
    metrics.connectivity_changed(True, now=112.5)
    metrics.connectivity_changed(True, now=200.0)  # still online: nothing more to count

    assert registry.get_sample_value("bghttp_offline_seconds_total") == 12.5
    assert registry.get_sample_value("bghttp_network_online") == 1
