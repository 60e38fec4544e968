"""A worker environment httpx cannot use stops the worker at start: one line naming the variable, exit 2.

Before, the worker started, every message crashed inside the actor (the HTTP
client was built on a thread's first message), went through Dramatiq's retries
to the dead-letter queue, and the request stayed ``queued`` with no error.
Tried through the real ``bghttp worker`` and ``dramatiq bghttp.actors``.
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from bghttp import Settings
from bghttp.store import FileStore
from bghttp.worker.http_env import load_http_environment
from tests.cli.helpers import assert_one_line_error, bghttp_command, cli_env
from tests.support import RABBITMQ_URL, free_port, require_rabbitmq, unique_queue

#: Every case: its variables, the one the error must name, a fragment of the reason.
BAD_ENVIRONMENTS: dict[str, tuple[dict[str, str], str, str]] = {
    "socks-without-socksio": ({"ALL_PROXY": "socks5://127.0.0.1:1080"}, "ALL_PROXY", "socksio"),
    "socks-lowercase": ({"https_proxy": "socks5h://user:hunter2@127.0.0.1:1080"}, "https_proxy", "socksio"),
    "missing-ca-file": ({"SSL_CERT_FILE": "/nonexistent/ca.pem"}, "SSL_CERT_FILE", "/nonexistent/ca.pem"),
    "missing-ca-dir": ({"SSL_CERT_DIR": "/nonexistent/certs"}, "SSL_CERT_DIR", "/nonexistent/certs"),
    "malformed-http-proxy": ({"HTTP_PROXY": "http://proxy.example:notaport"}, "HTTP_PROXY", "proxy"),
    "proxy-scheme": ({"HTTPS_PROXY": "ftp://proxy.example:21"}, "HTTPS_PROXY", "http"),
    # Seen: refused, but as "SSL_CERT_DIR=None: cannot load CA certificates" (ssl reads SSLKEYLOGFILE too).
    "unwritable-key-log": ({"SSLKEYLOGFILE": "/nonexistent/dir/keys"}, "SSLKEYLOGFILE", "/nonexistent/dir/keys"),
    # Seen: accepted by httpx at start, then every request a ConnectError (a network_error, retried).
    "proxy-without-host": ({"HTTP_PROXY": "http://:3128"}, "HTTP_PROXY", "no host"),
    "proxy-port-out-of-range": ({"HTTPS_PROXY": "http://127.0.0.1:99999"}, "HTTPS_PROXY", "port"),
    "proxy-host-with-a-space": ({"HTTP_PROXY": "http://proxy.example :3128"}, "HTTP_PROXY", "host"),
    "malformed-no-proxy": (
        {"HTTP_PROXY": "http://127.0.0.1:3128", "NO_PROXY": "http://[::1"},
        "NO_PROXY",
        "http://[::1",
    ),
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    require_rabbitmq()
    settings = Settings(broker_url=RABBITMQ_URL, store_dir=tmp_path / "store", queue_name=unique_queue(), fsync=False)
    FileStore(settings.store_dir)
    return settings


@pytest.fixture
def no_socksio(tmp_path: Path) -> str:
    """A ``PYTHONPATH`` entry where ``import socksio`` fails, as on a machine without it."""
    shadow = tmp_path / "no-socksio"
    (shadow / "socksio").mkdir(parents=True)
    (shadow / "socksio" / "__init__.py").write_text("raise ImportError('socksio is not installed here')\n")
    return str(shadow)


def _environment(settings: Settings, variables: dict[str, str], no_socksio: str) -> dict[str, str]:
    env = cli_env(settings)
    for name in list(env):  # the test's own proxies must not mix in
        if name.lower().endswith("_proxy") or name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
            del env[name]
    env.update(variables)
    env["PYTHONPATH"] = os.pathsep.join([no_socksio, env["PYTHONPATH"]])
    return env


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a worker command that should stop by itself; one still running after 30 s is killed and fails."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the worker started in an environment it cannot send requests in:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.parametrize("case", sorted(BAD_ENVIRONMENTS))
def test_bghttp_worker_refuses_an_unusable_environment(settings: Settings, no_socksio: str, case: str) -> None:
    variables, variable, reason = BAD_ENVIRONMENTS[case]
    result = _run([*bghttp_command(), "worker", "--processes", "1"], _environment(settings, variables, no_socksio))

    assert_one_line_error(result, 2)
    assert variable in result.stderr and reason in result.stderr, result.stderr
    assert "hunter2" not in result.stderr
    assert "Worker process is ready" not in result.stdout + result.stderr


#: Proxy values whose password the error line printed. A password with an unencoded '/', '?' or '#'
#: ("HTTPS_PROXY='http://user:hun7er/s3cret@proxy.example:3128': not a usable proxy URL (Invalid port:
#: 'hun7er')": httpx ends the authority there, and redact_url found no password), and a value without a
#: scheme (documented as taken for http://) with a bad port: redact_url saw no "//", so no userinfo.
LEAKED_PROXY_PASSWORDS = {
    "slash-in-password": "http://user:hun7er/s3cret@proxy.example:3128",
    "question-mark-in-password": "http://user:hun7er?s3cret@proxy.example:3128",
    "hash-in-password": "http://user:hun7er#s3cret@proxy.example:3128",
    "no-scheme-bad-port": "user:hun7er-s3cret@proxy.example:35x8",
    "no-scheme-port-out-of-range": "user:hun7er-s3cret@proxy.example:99999",
    "no-scheme-slash-in-password": "user:hun7er/s3cret@proxy.example:3128",
}


@pytest.mark.parametrize("case", sorted(LEAKED_PROXY_PASSWORDS))
def test_a_proxy_password_is_never_printed(settings: Settings, no_socksio: str, case: str) -> None:
    variables = {"HTTPS_PROXY": LEAKED_PROXY_PASSWORDS[case]}
    result = _run([*bghttp_command(), "worker", "--processes", "1"], _environment(settings, variables, no_socksio))

    assert_one_line_error(result, 2)
    assert "HTTPS_PROXY" in result.stderr and "proxy.example" in result.stderr, result.stderr
    assert "hun7er" not in result.stderr and "s3cret" not in result.stderr, result.stderr


@pytest.mark.parametrize("case", ["socks-without-socksio", "missing-ca-file", "malformed-http-proxy"])
def test_dramatiq_entry_refuses_an_unusable_environment(settings: Settings, no_socksio: str, case: str) -> None:
    variables, variable, reason = BAD_ENVIRONMENTS[case]
    command = [sys.executable, "-m", "dramatiq", "bghttp.actors", "--processes", "1", "--threads", "1"]
    result = _run(command, _environment(settings, variables, no_socksio))

    # Dramatiq's master logs its own lines ("booting up", "exited unexpectedly"); ours is one line.
    assert result.returncode == 2, result.stderr
    ours = [line for line in result.stderr.splitlines() if "bghttp: error:" in line]
    assert len(ours) == 1, result.stderr
    assert variable in ours[0] and reason in ours[0], ours
    assert "Traceback" not in result.stderr


def test_local_worker_refuses_an_unusable_environment(tmp_path: Path, no_socksio: str) -> None:
    settings = Settings(broker_url="local", store_dir=tmp_path / "store", fsync=False)
    result = _run(
        [*bghttp_command(), "worker"],
        _environment(settings, {"SSL_CERT_FILE": "/nonexistent/ca.pem"}, no_socksio),
    )

    assert_one_line_error(result, 2)
    assert "SSL_CERT_FILE" in result.stderr and "/nonexistent/ca.pem" in result.stderr


class _Proxy(http.server.BaseHTTPRequestHandler):
    """Answers every request itself and remembers its request line (absolute-form through a proxy)."""

    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.requestline)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_worker_sends_through_the_proxy_variables_it_read_at_start() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        environment = load_http_environment(
            use_proxies=True,
            environ={"HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": proxy, "NO_PROXY": "direct.invalid"},
        )
        with environment.client(1) as client:
            assert client.get("http://through.invalid/x").status_code == 200
            with pytest.raises(httpx.ConnectError):  # not proxied: its own name does not resolve
                client.get("http://direct.invalid/y")
    finally:
        server.shutdown()
        server.server_close()
    # Lower-case wins, as in urllib; NO_PROXY's host went direct.
    assert _Proxy.seen == ["GET http://through.invalid/x HTTP/1.1"]
    assert load_http_environment(use_proxies=False, environ={"HTTP_PROXY": proxy}).proxies == {}


class _Health(http.server.BaseHTTPRequestHandler):
    """A connectivity probe's target: counts the HEAD requests that reach it."""

    heads: list[str] = []

    def do_HEAD(self) -> None:
        self.heads.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_with_the_egress_policy_on_a_probe_ignores_the_proxy_variables_as_requests_do(
    settings: Settings, no_socksio: str, tmp_path: Path
) -> None:
    # Seen: the HTTP probe (httpx.head, trust_env) went through HTTP_PROXY although the egress
    # policy makes the worker ignore every proxy variable; with that proxy down the worker logged
    # network_offline ("no probe answered: http://127.0.0.1:…/health: ConnectError") and held
    # every request waiting for the network, while its requests would have gone direct.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    variables = {
        "HTTP_PROXY": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "BGHTTP_BLOCK_PRIVATE_ADDRESSES": "1",
        "BGHTTP_CONNECTIVITY_PROBES": f"http://127.0.0.1:{server.server_address[1]}/health",
        "BGHTTP_CONNECTIVITY_INTERVAL": "0.5",
    }
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        worker = subprocess.Popen(
            [*bghttp_command(), "worker", "--processes", "1"],
            env=_environment(settings, variables, no_socksio),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while len(_Health.heads) < 2 and "network_offline" not in log.read_text(errors="replace"):
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.1)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        server.shutdown()
        server.server_close()
    assert "network_offline" not in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]
    assert _Health.heads[:2] == ["/health", "/health"]
