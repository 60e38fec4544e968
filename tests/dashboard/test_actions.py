"""The dashboard's actions against a real worker group and RabbitMQ, through the app's own forms."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from starlette.testclient import TestClient

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.dashboard.app import create_app
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess, wait_until

SECRET = "a-dashboard-secret-of-some-length"
ORIGIN = {"Origin": "http://127.0.0.1"}


def _form(page: str, action: str) -> dict[str, str]:
    """The fields of the page's form that posts to ``action``, as a browser would send them."""
    form = page.split(f'action="{action}"', 1)[1].split("</form>", 1)[0]
    return dict(re.findall(r'<input (?:type="hidden" )?name="(\w+)" value="([^"]*)"', form))


def _logged_in(http: TestClient) -> None:
    login = _form(http.get("/login").text, "/login")
    answer = http.post("/login", data={**login, "secret": SECRET}, headers=ORIGIN, follow_redirects=False)
    assert answer.status_code == 303, answer.text


@pytest.mark.rabbitmq
def test_retry_all_sent_twice_from_one_page_retries_each_failure_it_showed_once(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    """A second click on "Retry all" (or a form sent again) must not retry the failures the first
    click's retries made: those failed after the page was shown."""
    settings = rabbitmq_settings
    start_worker(settings)
    with BackgroundHttpClient(settings) as client:
        ids = [client.get(counting_server.url(f"/flaky?id=twice{n}&fail=100"), retries=0).request_id for n in range(3)]
        for request_id in ids:
            assert client.wait(request_id, timeout=30).status is RequestStatus.FAILED

        with TestClient(create_app(settings, secret=SECRET), base_url="http://127.0.0.1") as http:
            _logged_in(http)
            form = _form(http.get("/").text, "/retry-failed")
            assert form["since"] == "1h"
            first = http.post("/retry-failed", data=form, headers=ORIGIN)
            assert "Retried 3 failed request(s)." in first.text, first.text

            def failed_again() -> bool:
                records = [client.get_request_status(request_id) for request_id in ids]
                return all(r is not None and r.status is RequestStatus.FAILED and r.attempt_count == 2 for r in records)

            wait_until(failed_again, timeout=30)
            second = http.post("/retry-failed", data=form, headers=ORIGIN)  # the same page's form again
            assert "Retried 0 failed request(s)." in second.text, second.text

    assert [counting_server.hits[f"twice{n}"] for n in range(3)] == [2, 2, 2]


@pytest.mark.rabbitmq
def test_cancel_from_a_page_shown_before_the_request_finished_says_nothing_was_cancelled(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], counting_server: CountingServer
) -> None:
    """The request's page was shown while it ran; it completed before the click. The answer must not
    be "Done": nothing was cancelled (as ``bghttp cancel`` exits 1 for a finished request)."""
    settings = rabbitmq_settings
    with BackgroundHttpClient(settings) as client:
        request_id = client.get(counting_server.url("/ok?id=finished-first"), retries=0).request_id
        with TestClient(create_app(settings, secret=SECRET), base_url="http://127.0.0.1") as http:
            _logged_in(http)
            page = http.get(f"/requests/{request_id}").text
            form = _form(page, f"/requests/{request_id}/cancel")
            start_worker(settings)
            assert client.wait(request_id, timeout=30).status is RequestStatus.COMPLETED
            answer = http.post(f"/requests/{request_id}/cancel", data=form, headers=ORIGIN)
    assert answer.status_code == 409, answer.text
    assert "<h1>Done</h1>" not in answer.text
    assert f"{request_id} had already finished: completed" in answer.text
