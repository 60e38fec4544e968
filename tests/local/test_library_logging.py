"""bghttp used as a library: it never writes to stdout, never configures the host's logging,
always redacts, and a dead in-process worker is an error the caller sees, not a hang.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog
from dramatiq.worker import WorkerThread

from bghttp import BackgroundHttpClient, LocalWorkerDied, Settings
from bghttp.logs import get_logger
from tests.reliability.server import CountingServer
from tests.support import PROJECT_ROOT, worker_env


def _run_app(url: str, store_dir: Path, *, close_stdout_after_first_line: bool) -> tuple[int, str, str]:
    env = worker_env({"BGHTTP_BROKER_URL": "local", "BGHTTP_STORE_DIR": str(store_dir), "BGHTTP_FSYNC": "0"})
    env.pop("BGHTTP_LOG_FORMAT", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.local.library_app", url],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    assert first == "hello\n"
    if close_stdout_after_first_line:
        process.stdout.close()  # like `| head -1`: every later write to stdout fails with EPIPE
        rest = ""
    process.stdin.write("go\n")
    process.stdin.close()
    if not close_stdout_after_first_line:
        rest = process.stdout.read()
    stderr = process.stderr.read()
    return process.wait(timeout=60), rest, stderr


def test_a_closed_stdout_does_not_break_the_library(counting_server: CountingServer, tmp_path: Path) -> None:
    code, _, stderr = _run_app(counting_server.url("/ok"), tmp_path / "store", close_stdout_after_first_line=True)

    assert code == 0, stderr
    assert "BrokenPipeError" not in stderr
    assert "outcome: completed" in stderr
    assert "sk-live-library" not in stderr


def test_the_library_writes_nothing_to_stdout(counting_server: CountingServer, tmp_path: Path) -> None:
    code, rest, stderr = _run_app(counting_server.url("/ok"), tmp_path / "store", close_stdout_after_first_line=False)

    assert code == 0, stderr
    assert rest == ""


def test_creating_and_using_a_client_leaves_the_hosts_logging_alone(
    counting_server: CountingServer, tmp_path: Path
) -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    structlog_config = structlog.get_config()
    settings = Settings(broker_url="local", store_dir=tmp_path / "store", fsync=False)

    with BackgroundHttpClient(settings) as client:
        info = client.get(counting_server.url("/ok"))
        assert client.wait(info.request_id, timeout=20).status.value == "completed"

    assert root.handlers == handlers and root.level == level
    assert structlog.get_config() == structlog_config
    assert not structlog.is_configured() or structlog_config == structlog.get_config()


def test_log_events_reach_the_hosts_handlers_through_the_bghttp_logger_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="bghttp"):
        get_logger(request_id="r1").info("something_happened", authorization="Bearer sk-secret", count=2)

    records = [r for r in caplog.records if r.name == "bghttp"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "something_happened" in message and "request_id=r1" in message and "count=2" in message
    assert "sk-secret" not in message and "[REDACTED]" in message


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread we break
def test_a_dead_in_process_worker_is_an_error_not_a_hang(
    counting_server: CountingServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: WorkerThread, message: object) -> None:
        raise RuntimeError("worker loop broke")

    monkeypatch.setattr(WorkerThread, "process_message", broken)
    settings = Settings(broker_url="local", store_dir=tmp_path / "store", fsync=False, local_threads=1)
    with BackgroundHttpClient(settings) as client:
        info = client.get(counting_server.url("/ok"))
        started = time.monotonic()
        with pytest.raises(LocalWorkerDied, match="worker loop broke"):
            client.wait(info.request_id, timeout=30)
        assert time.monotonic() - started < 5
        with pytest.raises(LocalWorkerDied, match="worker loop broke"):
            client.get(counting_server.url("/ok"))
        assert client.get_request_status(info.request_id) is not None  # the first request is still in the store
