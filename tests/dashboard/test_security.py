"""``bghttp dashboard`` over plain HTTP: headers, binding, IDs, forms, the secret and the CLI's errors."""

from __future__ import annotations

import http.cookiejar
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from bghttp import Settings
from bghttp.models import RequestSpec
from bghttp.store import FileStore
from tests.cli.helpers import assert_one_line_error, run_cli

pytestmark = pytest.mark.slow  # a dashboard process per test, and logins that wait 1 s when refused

SECRET = "a secret long enough 12345"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(store_dir=tmp_path / "store", broker_url="local")
    spec = RequestSpec("known-1", "GET", "http://127.0.0.1:9/x", [], 5.0, 0, time.time())
    FileStore(settings.store_dir, fsync=False).create_request(spec)
    return settings


def test_every_page_sends_a_strict_content_security_policy_and_no_framing(
    settings: Settings, start_dashboard: Callable[..., Any]
) -> None:
    dashboard = start_dashboard(settings)
    pages = ("/", "/workers", "/requests", "/requests/known-1", "/requests/unknown", "/login")
    for path in (*pages, "/static/dashboard.css"):
        status, headers, _ = dashboard.get(path)
        assert status in (200, 404), path
        policy = headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "script-src" not in policy
        assert "unsafe-inline" not in policy
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"


def test_it_listens_on_loopback_by_default_and_refuses_foreign_host_names(
    settings: Settings, start_dashboard: Callable[..., Any]
) -> None:
    dashboard = start_dashboard(settings)
    addresses = {c.laddr for c in psutil.Process(dashboard.process.pid).net_connections() if c.status == "LISTEN"}
    assert addresses == {("127.0.0.1", dashboard.port)}
    # A DNS-rebinding page (evil.example resolving to 127.0.0.1) must not read the dashboard.
    status, _, body = dashboard.get("/requests", headers={"Host": f"evil.example:{dashboard.port}"})
    assert status == 421 and "known-1" not in body
    assert dashboard.get("/requests", headers={"Host": f"localhost:{dashboard.port}"})[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/requests/..%2F..%2Fetc%2Fpasswd",
        "/requests/%2e%2e",
        "/requests/.",
        "/requests/known-1%00",
        "/requests/" + "a" * 129,
    ],
)
def test_an_id_that_is_no_request_id_reads_nothing(
    settings: Settings, start_dashboard: Callable[..., Any], path: str
) -> None:
    dashboard = start_dashboard(settings)
    status, _, body = dashboard.get(path)
    assert status == 404
    assert "root:" not in body and "known-1.json" not in body


def _session(dashboard: Any) -> tuple[urllib.request.OpenerDirector, str]:
    """An opener with the dashboard's session cookie, and the CSRF token of its forms."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(dashboard.url + "/login", timeout=10).read().decode()
    token = page.split('name="csrf_token" value="', 1)[-1].split('"', 1)[0] if "csrf_token" in page else "none"
    return opener, token


def _post(
    opener: urllib.request.OpenerDirector, url: str, headers: dict[str, str] | None = None, **form: str
) -> tuple[int, str]:
    data = urllib.parse.urlencode(form).encode()
    try:
        with opener.open(urllib.request.Request(url, data=data, headers=headers or {}), timeout=20) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_actions_need_the_secret_a_login_and_the_csrf_token(
    settings: Settings, start_dashboard: Callable[..., Any]
) -> None:
    readonly = start_dashboard(settings)
    opener, token = _session(readonly)
    status, body = _post(opener, readonly.url + "/requests/known-1/cancel", csrf_token=token)
    assert status == 403 and "Actions are off" in body
    status, body = _post(opener, readonly.url + "/login", csrf_token=token, secret=SECRET)
    assert status == 403

    guarded = start_dashboard(settings, secret=SECRET)
    opener, token = _session(guarded)
    assert _post(opener, guarded.url + "/requests/known-1/cancel", csrf_token=token)[0] == 403  # not logged in
    assert _post(opener, guarded.url + "/login", csrf_token="forged", secret=SECRET)[0] == 403
    assert _post(opener, guarded.url + "/login", csrf_token=token, secret="wrong " * 5)[0] == 403
    status, body = _post(opener, guarded.url + "/login", csrf_token=token, secret=SECRET)
    assert status == 200 and "Log out" in body and SECRET not in body
    token = body.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]  # the new session's
    status, body = _post(opener, guarded.url + "/requests/known-1/cancel", csrf_token="x" + token)
    assert status == 403 and "CSRF" in body
    foreign = {"Origin": "http://evil.example"}  # a page of another site posting with the user's cookie and token
    status, body = _post(opener, guarded.url + "/requests/known-1/cancel", foreign, csrf_token=token)
    assert status == 403 and "another site" in body
    status, body = _post(opener, guarded.url + "/requests/..%2Fstatus%2Fknown-1/cancel", csrf_token=token)
    assert status == 404
    status, body = _post(opener, guarded.url + "/requests/known-1/cancel", csrf_token=token)
    assert status == 200 and "known-1 is cancelled" in body
    assert FileStore(settings.store_dir).read_status("known-1").status.value == "cancelled"  # type: ignore[union-attr]
    assert SECRET not in Path(guarded.log_path).read_text()


def test_the_secret_cannot_be_given_on_the_command_line_nor_be_short(settings: Settings, tmp_path: Path) -> None:
    assert run_cli(settings, "dashboard", "--secret", SECRET, timeout=30).returncode == 2
    short = tmp_path / "secret"
    short.write_text("short\n")
    result = run_cli(settings, "dashboard", "--secret-file", str(short), timeout=30)
    assert_one_line_error(result, 2)
    assert "at least 16 characters" in result.stderr
    result = run_cli(settings, "dashboard", env={"BGHTTP_DASHBOARD_SECRET": "tiny"}, timeout=30)
    assert_one_line_error(result, 2)
    assert "tiny" not in result.stderr


def test_without_the_extra_it_says_what_to_install(settings: Settings, tmp_path: Path) -> None:
    """As if ``bghttp[dashboard]`` were not installed: the import of starlette fails."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['starlette'] = None\n")
    path = os.pathsep.join([str(hide), os.environ.get("PYTHONPATH", "")])
    result = run_cli(settings, "dashboard", env={"PYTHONPATH": path}, timeout=30)
    assert_one_line_error(result, 2)
    assert "pip install 'bghttp[dashboard]'" in result.stderr


def test_a_port_in_use_or_a_missing_store_is_one_line(settings: Settings, tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        result = run_cli(settings, "dashboard", "--port", port, timeout=30)
    assert_one_line_error(result, 2)
    assert "cannot listen" in result.stderr
    result = run_cli(settings, "--store", str(tmp_path / "mistyped"), "dashboard", timeout=30)
    assert_one_line_error(result, 6)
    assert "no store at" in result.stderr
    assert not (tmp_path / "mistyped").exists()
