"""Debian's ``prometheus`` and ``promtool`` for the tests: found on PATH, or skipped (failed in CI).

``.ci/run`` installs the ``prometheus`` package; the tests install nothing themselves.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import IN_CI, PROJECT_ROOT, free_port, wait_until

RULES = PROJECT_ROOT / "docker" / "prometheus" / "bghttp-rules.yml"
RULES_TESTS = PROJECT_ROOT / "docker" / "prometheus" / "bghttp-rules.test.yml"


def require_tool(name: str) -> str:
    """The path of ``name``; skip without it on a laptop, fail in CI (CI=true), where .ci/run installs it."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not on PATH (Debian's prometheus package has it: .ci/run installs it)"
    if IN_CI:
        pytest.fail(message + " and CI=true")
    pytest.skip(message)


class PrometheusServer:
    """A Prometheus of the test's own: loopback port, config and TSDB in ``directory``, stopped by :meth:`stop`."""

    def __init__(self, directory: Path, targets: list[str], rule_files: tuple[Path, ...] = ()) -> None:
        binary = require_tool("prometheus")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            + ("rule_files:\n" + "".join(f"  - {path}\n" for path in rule_files) if rule_files else "")
            + "scrape_configs:\n  - job_name: bghttp\n    static_configs:\n"
            + f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
        )
        self._log = open(directory / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._ready, timeout=60, interval=0.2)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}: see {self._log.name}")
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` gives now (HTTP API ``/api/v1/query``)."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", answer
        assert answer["data"]["resultType"] == "vector", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def query_api(self, path: str) -> Any:
        """The ``data`` of a GET of the HTTP API at ``path``."""
        answer = httpx.get(f"{self.url}{path}", timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]

    def value(self, expr: str) -> float | None:
        """The one value of ``expr``, None when it gives no series."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
