"""Fixtures for the dashboard: ``bghttp dashboard`` as a real subprocess, and Debian's Chromium
driven by Selenium (never a downloaded browser or driver: SE_OFFLINE and an explicit chromedriver)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bghttp import Settings
from tests.cli.helpers import bghttp_command, cli_env
from tests.support import IN_CI, PROJECT_ROOT, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``$BGHTTP_TEST_ARTIFACTS/dashboard`` or a temporary directory."""
    root = os.environ.get("BGHTTP_TEST_ARTIFACTS")
    directory = Path(root) / "dashboard" if root else tmp_path_factory.mktemp("dashboard-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium from Debian's packages (``.ci/run`` installs them)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        if IN_CI:
            pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are missing and CI=true (.ci/run installs them)")
        pytest.skip("chromium and chromium-driver are not installed")
    os.environ["SE_OFFLINE"] = "1"  # Selenium Manager must never try to download a driver or browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1500"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


class DashboardProcess:
    """``bghttp dashboard`` running in a subprocess on a free loopback port."""

    def __init__(self, settings: Settings, log_path: Path, *, secret: str | None, args: tuple[str, ...]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = cli_env(settings, {"BGHTTP_DASHBOARD_SECRET": secret} if secret else {})
        if not secret:
            env.pop("BGHTTP_DASHBOARD_SECRET", None)
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [*bghttp_command(), "dashboard", "--port", str(self.port), *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the dashboard exited:\n{self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the dashboard did not listen within {timeout}s:\n{self.log_path.read_text()}")

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=20) as answer:
                return answer.status, dict(answer.headers), answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


@pytest.fixture
def start_dashboard(tmp_path: Path) -> Iterator[Callable[..., DashboardProcess]]:
    started: list[DashboardProcess] = []

    def start(settings: Settings, *, secret: str | None = None, args: tuple[str, ...] = ()) -> DashboardProcess:
        dashboard = DashboardProcess(settings, tmp_path / f"dashboard-{len(started)}.log", secret=secret, args=args)
        started.append(dashboard)
        return dashboard

    yield start
    for dashboard in started:
        dashboard.stop()
