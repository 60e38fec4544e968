"""The dashboard in a real browser (Debian's Chromium, headless) against a real worker group,
real requests to loopback servers, and ``bghttp dashboard`` started by the CLI."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.heartbeats import HeartbeatWriter, WorkerState
from tests.reliability.scripted_server import Connection, ScriptedServer
from tests.support import PROJECT_ROOT, wait_until

pytestmark = pytest.mark.slow

SECRET = "correct horse battery staple 42"
DOCS_IMAGES = PROJECT_ROOT / "docs" / "images"
#: What a hostile server and submitter put where the dashboard shows text.
HOSTILE_REASON = b"<script>window.pwned='reason'</script>" + "\u202eevil".encode()
HOSTILE_HEADER = b"<script>window.pwned='header'</script>\xe2\x80\xae"
HOSTILE_BODY = (
    b"<script>window.pwned='body'</script><img src=x onerror=\"window.pwned='img'\">"
    b"\x1b[31mred\x1b[0m \xe2\x80\xaeevil.exe\n"
)
HOSTILE_METADATA = {"note": "\x1b[2J<script>window.pwned='metadata'</script>\u202eevil"}


def hostile(connection: Connection) -> None:
    head = connection.read_request()
    request_line = head.split(b"\r\n", 1)[0]
    if b"/slow" in request_line:
        connection.wait_until_client_gone(limit=20)
        return
    if b"/plain" in request_line:
        connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        return
    connection.send(
        b"HTTP/1.1 500 " + HOSTILE_REASON + b"\r\n"
        b"Content-Type: text/html\r\n"
        b"X-Evil: " + HOSTILE_HEADER + b"\r\n"
        b"Content-Length: " + str(len(HOSTILE_BODY)).encode() + b"\r\n"
        b"Connection: close\r\n\r\n" + HOSTILE_BODY
    )


@pytest.fixture
def server() -> Any:
    with ScriptedServer(hostile) as scripted:
        yield scripted


@pytest.fixture
def client(rabbitmq_settings: Settings) -> Any:
    with BackgroundHttpClient(rabbitmq_settings) as submitter:
        yield submitter


def screenshot(driver: Any, artifacts: Path, name: str) -> None:
    """Save the page as an artifact; with BGHTTP_UPDATE_DOCS_IMAGES=1, also as the docs' picture."""
    import os

    path = artifacts / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("BGHTTP_UPDATE_DOCS_IMAGES") == "1":
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_IMAGES / f"dashboard-{name}.png")


def click(driver: Any, element_id: str, by: str = "id") -> None:
    """Click a button or link and wait until the browser has left the page (a form's answer has loaded)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(by, element_id).click()

    def left(_: Any) -> bool:
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as error:
            # chromedriver may say this of a node whose page was just replaced, instead of
            # "stale element" (seen once in CI, from expected_conditions.staleness_of).
            if "does not belong to the document" in str(error):
                return True
            raise
        return False

    WebDriverWait(driver, 20).until(left)


def assert_inert(driver: Any) -> None:
    """No script ran (the flag a hostile script would set is unset), none is in the page, no alert."""
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    assert driver.execute_script("return typeof window.pwned") == "undefined"
    assert driver.find_elements(By.TAG_NAME, "script") == []
    assert driver.find_elements(By.TAG_NAME, "img") == []
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018


def test_pages_load_and_a_hostile_response_renders_inert(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., Any],
    start_dashboard: Callable[..., Any],
    client: BackgroundHttpClient,
    server: ScriptedServer,
    browser: Any,
    artifacts_dir: Path,
) -> None:
    from selenium.webdriver.common.by import By

    start_worker(rabbitmq_settings)
    beat = HeartbeatWriter(
        rabbitmq_settings.store_dir,
        queue=rabbitmq_settings.queue_name,
        broker=rabbitmq_settings.broker_url,
        host="host-a",
        pid=4242,
        state=lambda: WorkerState(in_flight=1, online=False),
    )
    beat.start()
    gone = HeartbeatWriter(  # a worker that died: its record stays and goes stale after 3 intervals
        rabbitmq_settings.store_dir,
        queue=rabbitmq_settings.queue_name,
        broker=rabbitmq_settings.broker_url,
        host="host-b",
        pid=77,
        interval=0.1,
    )
    gone.start()
    gone.stop(remove=False)
    forged = HeartbeatWriter(  # anyone who can write the store can write a heartbeat
        rabbitmq_settings.store_dir,
        queue="<script>window.pwned='queue'</script>",
        broker=rabbitmq_settings.broker_url,
        host="\x1b[2J<script>window.pwned='worker'</script>\u202e",
        pid=1,
    )
    forged.start()
    try:
        evil = client.get(
            server.url("/h/<script>window.pwned='url'</script>?q=\u202eexe.txt"),
            metadata=HOSTILE_METADATA,
            request_id="hostile-1",
        )
        for number in range(3):
            client.get(server.url(f"/plain/{number}"), request_id=f"plain-{number}")
        for number in range(3):
            client.wait(f"plain-{number}", timeout=30)
        record = client.wait(evil.request_id, timeout=30)
        assert record.status is RequestStatus.FAILED
        dashboard = start_dashboard(rabbitmq_settings)

        browser.get(dashboard.url + "/")
        assert "Overview" in browser.title
        queues = browser.find_element(By.ID, "queues").text
        assert rabbitmq_settings.queue_name in queues and ".DQ" in queues and ".submit" in queues
        assert browser.find_element(By.ID, "offline-count").text == "1"
        assert_inert(browser)
        assert "127.0.0.1" in browser.find_element(By.ID, "failures-by-host").text
        screenshot(browser, artifacts_dir, "overview")

        browser.get(dashboard.url + "/workers")
        workers = browser.find_element(By.ID, "workers").text
        assert "host-a" in workers and "offline" in workers
        assert "host-b" in workers and "stale" in workers
        assert socket.gethostname() in workers  # the real worker group's own heartbeats
        assert "\\x1b[2J<script>window.pwned='worker'</script>\\u202e" in workers
        assert_inert(browser)
        screenshot(browser, artifacts_dir, "workers")

        browser.get(dashboard.url + "/requests")
        listed = browser.find_element(By.ID, "requests").text
        assert all(name in listed for name in ("hostile-1", "plain-0", "plain-2"))
        assert_inert(browser)
        screenshot(browser, artifacts_dir, "requests")

        click(browser, "hostile-1", by=By.LINK_TEXT)
        assert_inert(browser)
        page = browser.find_element(By.TAG_NAME, "main").text
        # Every hostile string shows as text, its control and bidi characters as escapes.
        assert "<script>window.pwned='reason'</script>" in browser.find_element(By.ID, "response-status").text
        assert "\u202e" not in page and "\x1b" not in page
        assert "\\x1b[31mred" in browser.find_element(By.ID, "body-preview").text
        assert "\\u202eevil.exe" in browser.find_element(By.ID, "body-preview").text
        assert "<script>window.pwned='header'</script>" in browser.find_element(By.ID, "response-headers").text
        assert "\\x1b[2J<script>window.pwned='metadata'</script>\\u202eevil" in browser.find_element(
            By.ID, "metadata"
        ).text
        assert "<script>window.pwned='url'</script>?q=\\u202eexe.txt" in browser.find_element(By.ID, "target").text
        assert "window.pwned='reason'" in browser.find_element(By.ID, "last-error").text
        assert browser.find_element(By.ID, "queue").text == rabbitmq_settings.queue_name  # as submitted
        screenshot(browser, artifacts_dir, "request")
    finally:
        beat.stop()
        forged.stop()


def test_cancel_and_retry_by_clicking_change_the_store(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., Any],
    start_dashboard: Callable[..., Any],
    client: BackgroundHttpClient,
    server: ScriptedServer,
    browser: Any,
    artifacts_dir: Path,
) -> None:
    from selenium.webdriver.common.by import By

    start_worker(rabbitmq_settings)
    failed = client.get(server.url("/fails"), request_id="fails-1")
    assert client.wait(failed.request_id, timeout=30).status is RequestStatus.FAILED
    running = client.get(server.url("/slow"), request_id="slow-1", timeout=60)
    wait_until(lambda: (client.get_request_status("slow-1") or failed).phase.value == "running", timeout=30)
    dashboard = start_dashboard(rabbitmq_settings, secret=SECRET)

    browser.get(dashboard.url + "/login")
    browser.find_element(By.ID, "secret").send_keys(SECRET)
    click(browser, "login")
    assert browser.find_elements(By.ID, "logout") != []  # logged in
    cookie = browser.get_cookie("bghttp_dashboard_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"

    browser.get(dashboard.url + f"/requests/{running.request_id}")
    screenshot(browser, artifacts_dir, "request-actions")
    click(browser, "cancel")
    assert "cancelled" in browser.find_element(By.ID, "message").text
    assert client.get_request_status("slow-1").status is RequestStatus.CANCELLED  # type: ignore[union-attr]

    browser.get(dashboard.url + f"/requests/{failed.request_id}")
    before = client.get_request_status("fails-1")
    click(browser, "retry")
    assert "again" in browser.find_element(By.ID, "message").text
    after = wait_until(lambda: (r := client.get_request_status("fails-1")) and r.is_terminal and r.replays == 1 and r)
    assert after.attempt_count == before.attempt_count + 1  # type: ignore[union-attr]
    assert_inert(browser)

    browser.get(dashboard.url + "/")  # retry every request that failed within the last hour
    click(browser, "retry-failed")
    assert "Retried 1 failed request(s)." in browser.find_element(By.ID, "message").text
    wait_until(lambda: (r := client.get_request_status("fails-1")) and r.is_terminal and r.replays == 2)


def test_actions_are_refused_without_the_secret(
    rabbitmq_settings: Settings,
    start_dashboard: Callable[..., Any],
    client: BackgroundHttpClient,
    server: ScriptedServer,
    browser: Any,
    artifacts_dir: Path,
) -> None:
    """Started without a secret, the dashboard has no action buttons and refuses a forged POST;
    started with one, a visitor who has not logged in, or a form without its CSRF token, is refused."""
    from selenium.webdriver.common.by import By

    queued = client.get(server.url("/never"), request_id="queued-1")  # no worker: it stays queued
    readonly = start_dashboard(rabbitmq_settings)
    browser.get(readonly.url + f"/requests/{queued.request_id}")
    assert browser.find_elements(By.ID, "cancel") == []
    forge = (
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "document.body.appendChild(f); f.submit();"
    )
    browser.execute_script(forge, f"{readonly.url}/requests/{queued.request_id}/cancel")
    wait_until(lambda: "Actions are off" in browser.page_source, timeout=10)
    screenshot(browser, artifacts_dir, "refused")
    assert client.get_request_status("queued-1").status is RequestStatus.IN_PROGRESS  # type: ignore[union-attr]

    guarded = start_dashboard(rabbitmq_settings, secret=SECRET)
    browser.get(guarded.url + f"/requests/{queued.request_id}")
    click(browser, "cancel")  # a CSRF token, but not logged in
    assert "Log in" in browser.find_element(By.ID, "message").text
    browser.get(guarded.url + "/login")
    browser.find_element(By.ID, "secret").send_keys("not the secret at all")
    click(browser, "login")
    assert "not the dashboard's secret" in browser.find_element(By.ID, "login-error").text
    browser.find_element(By.ID, "secret").send_keys(SECRET)
    click(browser, "login")
    browser.execute_script(forge, f"{guarded.url}/requests/{queued.request_id}/cancel")  # logged in, no token
    wait_until(lambda: "CSRF token" in browser.page_source, timeout=10)
    assert client.get_request_status("queued-1").status is RequestStatus.IN_PROGRESS  # type: ignore[union-attr]
    assert SECRET not in browser.page_source
    assert SECRET not in Path(guarded.log_path).read_text()


