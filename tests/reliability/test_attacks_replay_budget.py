"""Attacks on a replay's fresh retry budget: nothing of the run it replaces may be charged to it.

A cancelled request whose worker was killed during the cancelled attempt keeps
that attempt unfinished in its record. The replay's first run closes it: it
belongs to the run before the replay, whose outcome (cancelled) is final, so it
must not spend the replay's retries, let alone fail the replay unsent.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.models import Phase
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess, wait_until

pytestmark = [pytest.mark.rabbitmq]

StartWorker = Callable[..., WorkerProcess]


def test_a_replay_is_not_charged_for_the_killed_attempt_of_the_run_it_replaces(
    rabbitmq_settings: Settings, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    worker = start_worker(rabbitmq_settings)
    with BackgroundHttpClient(rabbitmq_settings) as client:
        info = client.get(counting_server.url("/wait?id=replay-budget&delay=3"), retries=0, timeout=20)

        def sent() -> bool:
            record = client.get_request_status(info.request_id)
            return record is not None and bool(record.attempts) and record.attempts[-1].sent_at is not None

        assert wait_until(sent, timeout=20)
        worker.kill()  # during the attempt: it stays unfinished in the record
        worker.process.wait(timeout=10)
        assert client.cancel(info.request_id).status is RequestStatus.CANCELLED

        client.retry(info.request_id)
        start_worker(rabbitmq_settings)
        record = client.wait(info.request_id, timeout=30)

    assert record.status is RequestStatus.COMPLETED, (record.last_error, record.attempts)
    assert record.last_status_code == 200 and record.retries_used == 0
    assert [attempt.outcome for attempt in record.attempts] == ["interrupted", "success"]
    assert counting_server.hits["replay-budget"] == 2


def test_the_old_delayed_retry_of_a_replayed_request_runs_no_extra_attempt(
    rabbitmq_settings: Settings, start_worker: StartWorker, counting_server: CountingServer
) -> None:
    settings = dataclasses.replace(rabbitmq_settings, backoff_scale=1.5)  # the first retry 3 s later
    start_worker(settings)
    with BackgroundHttpClient(settings) as client:
        info = client.get(counting_server.url("/flaky?id=old-delayed&fail=1"), retries=1)

        def waiting_retry() -> bool:
            record = client.get_request_status(info.request_id)
            return record is not None and record.phase is Phase.WAITING_RETRY

        assert wait_until(waiting_retry, timeout=20)
        waiting = client.get_request_status(info.request_id)
        assert waiting is not None and waiting.next_attempt_at is not None
        client.cancel(info.request_id)  # its retry message stays in the broker's delay queue
        client.retry(info.request_id)
        done = client.wait(info.request_id, timeout=30)
        # Past the old retry's due time: that message arrives, stale, and must run nothing.
        time.sleep(max(0.0, waiting.next_attempt_at - time.time()) + 2.0)
        after = client.get_request_status(info.request_id)

    assert done.status is RequestStatus.COMPLETED and after == done
    assert [attempt.status_code for attempt in done.attempts] == [503, 200]
    assert counting_server.hits["old-delayed"] == 2
