"""Running the ``bghttp`` console script and ``bghttp worker`` as real subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bghttp import Settings
from tests.conftest import settings_env
from tests.support import PROJECT_ROOT, WorkerProcess, worker_env


def bghttp_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m bghttp.cli``."""
    script = Path(sys.executable).parent / "bghttp"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bghttp.cli"]


def cli_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = worker_env(settings_env(settings))
    env.pop("BGHTTP_LOG_FORMAT", None)  # let "auto" decide, as for a user: not a TTY -> JSON
    env.update(extra or {})
    return env


def run_cli(
    settings: Settings, *args: str, input: bytes | None = None, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*bghttp_command(), *args],
        input=None if input is None else input.decode(),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(settings, env),
        cwd=PROJECT_ROOT,
    )


def json_output(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> None:
    """The CLI failed with ``code`` and said why in one line, without a traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bghttp") and "error:" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


class BghttpWorker(WorkerProcess):
    """``bghttp worker`` (the Dramatiq group started by our CLI) in a subprocess."""

    def __init__(
        self,
        settings: Settings,
        *args: str,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path = PROJECT_ROOT,
        full_env: dict[str, str] | None = None,
    ) -> None:
        """``full_env`` replaces the environment built from ``settings`` and ``env``."""
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [*bghttp_command(), "worker", *args],
            cwd=cwd,
            env=full_env if full_env is not None else cli_env(settings, env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        """SIGTERM to the master only, as systemd's KillMode=mixed and Docker do.

        The master forwards it to its workers; a second SIGTERM sent to the whole
        group would make each worker exit at once instead of finishing cleanly.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()


class SlowBodyServer:
    """A loopback HTTP server that streams ``chunks`` × ``chunk_size`` bytes, ``delay`` s apart,
    after ``burst`` bytes sent at once.

    Records per path how many bytes it sent and whether the client hung up early,
    so a test can tell that a download really stopped.
    """

    def __init__(self, chunks: int, chunk_size: int, delay: float, burst: int = 0) -> None:
        import http.server
        import threading

        self.chunks, self.chunk_size, self.delay, self.burst = chunks, chunk_size, delay, burst
        self.total = burst + chunks * chunk_size
        self.sent: dict[str, int] = {}
        self.hung_up: dict[str, bool] = {}
        self._stopping = threading.Event()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.sent[self.path] = 0
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(owner.total))
                self.end_headers()
                chunk = b"x" * owner.chunk_size
                try:
                    if owner.burst:
                        self.wfile.write(b"x" * owner.burst)
                        self.wfile.flush()
                        owner.sent[self.path] += owner.burst
                    for _ in range(owner.chunks):
                        if owner._stopping.wait(owner.delay):
                            return
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        owner.sent[self.path] += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    owner.hung_up[self.path] = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
