"""Prometheus metrics: scraped from a real ``bghttp worker --metrics-port`` group of two processes."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pytest_httpserver import HTTPServer

from bghttp import BackgroundHttpClient, Settings
from bghttp.models import AttemptRecord, Phase, RequestSpec, RequestStatus, StatusRecord
from bghttp.store import FileStore
from bghttp.worker.execution import AttemptResult
from bghttp.worker.metrics import WorkerMetrics, queue_wait
from bghttp.worker.retry_policy import Outcome
from tests.cli.helpers import BghttpWorker
from tests.support import capture_logs, free_port, wait_until

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
    queue = rabbitmq_settings.queue_name
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
            # Sampled every few seconds: the first sample may come before the second process consumes.
            consumers = [samples.get(("bghttp_queue_consumers", (("queue", q),))) for q in (queue, f"{queue}.submit")]
            return samples if done == 5 and consumers == [2, 2] else None

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
    assert samples[("bghttp_retries_exhausted_total", ())] == 1  # the /error request, after its one retry
    assert samples[("bghttp_queue_wait_seconds_count", ())] == 7  # 6 first attempts and 1 retry
    assert samples[("bghttp_attempts_in_flight", ())] == 0
    assert samples[("bghttp_network_online", ())] == 1
    assert samples[("bghttp_network_offline_since_timestamp_seconds", ())] == 0
    assert samples[("bghttp_worker_processes", (("queue", queue),))] == 2
    # Each of the two processes consumes the queue; RabbitMQ counts its consumers.
    assert samples[("bghttp_queue_consumers", (("queue", queue),))] == 2
    assert samples[("bghttp_queue_consumers", (("queue", f"{queue}.submit"),))] == 2
    assert samples[("bghttp_queue_messages_ready", (("queue", queue),))] == 0
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


# ------------------------------------------------ metrics the documented expressions need


def _spec(max_retries: int) -> RequestSpec:
    return RequestSpec("r1", "GET", "http://127.0.0.1:9/", [], 5.0, max_retries, created_at=1000.0)


def _record(
    status: RequestStatus, phase: Phase, attempts: tuple[AttemptRecord, ...], retries_used: int = 0, replays: int = 0
) -> StatusRecord:
    return StatusRecord(
        "r1", status, phase, created_at=1000.0, updated_at=1100.0, max_retries=1, retries_used=retries_used,
        attempts=attempts, replays=replays, completed_at=1100.0 if status is not RequestStatus.IN_PROGRESS else None,
    )  # fmt: skip


def test_every_final_status_is_a_series_from_the_start() -> None:
    registry = CollectorRegistry()
    WorkerMetrics(registry, queue="q1")

    for status in ("completed", "failed", "cancelled"):
        assert registry.get_sample_value("bghttp_requests_total", {"status": status}) == 0
    assert registry.get_sample_value("bghttp_worker_processes", {"queue": "q1"}) == 1
    assert registry.get_sample_value("bghttp_network_offline_since_timestamp_seconds") == 0


def test_retries_exhausted_counts_retryable_failures_with_no_retry_left() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    attempt = AttemptRecord(number=2, started_at=1050.0, due_at=1040.0, finished_at=1051.0, outcome="http_error")
    failed = _record(RequestStatus.FAILED, Phase.DONE, (attempt,), retries_used=1)

    metrics.observe_attempt(_spec(max_retries=1), failed, AttemptResult(Outcome.HTTP_ERROR, status_code=500))
    # A request that cannot be sent fails at once: no retry could have helped, none was exhausted.
    metrics.observe_attempt(_spec(max_retries=1), _record(RequestStatus.FAILED, Phase.DONE, (attempt,)),
                            AttemptResult(Outcome.INVALID))  # fmt: skip
    # A retry scheduled is not a failure.
    waiting = _record(RequestStatus.IN_PROGRESS, Phase.WAITING_RETRY, (attempt,), retries_used=1)
    metrics.observe_attempt(_spec(max_retries=3), waiting, AttemptResult(Outcome.HTTP_ERROR, status_code=500))

    assert registry.get_sample_value("bghttp_retries_exhausted_total") == 1
    assert registry.get_sample_value("bghttp_requests_total", {"status": "failed"}) == 2


def test_queue_wait_runs_from_the_submit_or_the_retry_due_time_to_the_start() -> None:
    first = AttemptRecord(number=1, started_at=1003.0, finished_at=1004.0, outcome="http_error")
    retry = AttemptRecord(number=2, started_at=1010.5, due_at=1010.0, finished_at=1011.0, outcome="success")
    after_replay = AttemptRecord(number=3, started_at=2000.0, finished_at=2001.0, outcome="success")

    assert queue_wait(_record(RequestStatus.IN_PROGRESS, Phase.WAITING_RETRY, (first,))) == 3.0
    assert queue_wait(_record(RequestStatus.COMPLETED, Phase.DONE, (first, retry))) == 0.5
    assert queue_wait(_record(RequestStatus.COMPLETED, Phase.DONE, (first, retry, after_replay), replays=1)) is None
    assert queue_wait(_record(RequestStatus.IN_PROGRESS, Phase.QUEUED, ())) is None

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.observe_attempt(_spec(1), _record(RequestStatus.COMPLETED, Phase.DONE, (first, retry)),
                            AttemptResult(Outcome.SUCCESS))  # fmt: skip
    assert registry.get_sample_value("bghttp_queue_wait_seconds_count") == 1
    assert registry.get_sample_value("bghttp_queue_wait_seconds_sum") == 0.5


def test_offline_since_is_the_wall_time_the_worker_went_offline() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)

    metrics.connectivity_changed(False, now=100.0, wall=1_700_000_000.0)
    metrics.connectivity_changed(False, now=105.0, wall=1_700_000_005.0)  # still offline: the since stays
    assert registry.get_sample_value("bghttp_network_offline_since_timestamp_seconds") == 1_700_000_000.0
    metrics.connectivity_changed(True, now=110.0, wall=1_700_000_010.0)
    assert registry.get_sample_value("bghttp_network_offline_since_timestamp_seconds") == 0


def test_a_queue_sample_that_cannot_reach_rabbitmq_is_logged_and_changes_nothing() -> None:
    from bghttp.broker import BghttpRabbitmqBroker
    from bghttp.worker.metrics import GaugeSampler

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry, queue="q1")
    port = free_port()  # nothing listens there
    broker = BghttpRabbitmqBroker(url=f"amqp://guest:guest@127.0.0.1:{port}/?connection_attempts=1&socket_timeout=2")
    sampler = GaugeSampler(metrics, broker, ["q1", "q1.submit"], limits=None)

    with capture_logs() as events:
        sampler.sample_queues()  # raises nothing: a metric never stops a worker

    assert [e["queue"] for e in events if e["event"] == "metrics_queue_sample_failed"] == ["q1", "q1.submit"]
    assert registry.get_sample_value("bghttp_queue_consumers", {"queue": "q1"}) is None
