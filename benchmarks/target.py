"""The local target server: Debian's nginx when installed, else a small asyncio server in its own process.

Both serve the same three things on 127.0.0.1:<free port>:

* ``/small``        a 64-byte JSON answer to any method (W1, W2 and W4);
* ``/files/big``    a 1 GiB body, ``/files/medium`` 128 MiB (sparse files for nginx, generated
                    zeros for the fallback) (W3).

The harness installs nothing: when ``nginx`` is not on PATH it says so and uses the fallback.

``start_delay_server`` runs the other kind of target, ``benchmarks.slowserver``:
every answer after a fixed delay, for the workloads with many requests waiting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

SMALL_BODY = b'{"ok":true,"pad":"' + b"x" * 44 + b'"}'
BIG_SIZE = 1 << 30
#: The files under /files/: 1 GiB for W3, 128 MiB for its --quick run.
FILE_SIZES = {"big": BIG_SIZE, "medium": 128 << 20}


@dataclasses.dataclass(frozen=True)
class Target:
    kind: str  # "nginx 1.22.1" or "python asyncio fallback"
    base_url: str

    @property
    def small_url(self) -> str:
        return f"{self.base_url}/small"

    def file_url(self, name: str) -> str:
        return f"{self.base_url}/files/{name}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"target server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"target server did not listen on port {port} within {timeout}s")


_NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        location = /small {{
            client_max_body_size 1m;
            default_type application/json;
            return 200 '{body}';
        }}
        location /files/ {{ root {tmp}; }}
    }}
}}
"""


@contextlib.contextmanager
def start_target(prefer: str = "auto") -> Iterator[Target]:
    """Start the target server for the ``with`` block; stop it and remove its files afterwards.

    ``prefer`` is ``auto`` (nginx if on PATH), or ``python`` to force the fallback.
    """
    nginx = shutil.which("nginx") if prefer == "auto" else None
    tmp = Path(tempfile.mkdtemp(prefix="bghttp-bench-target-"))
    os.chmod(tmp, 0o755)  # nginx workers may run as another user
    port = free_port()
    try:
        if nginx:
            files = tmp / "files"
            files.mkdir(mode=0o755)
            for name, size in FILE_SIZES.items():
                with open(files / name, "wb") as handle:
                    handle.truncate(size)  # sparse: costs no disk, reads as zeros
                os.chmod(files / name, 0o644)
            conf = tmp / "nginx.conf"
            conf.write_text(_NGINX_CONF.format(tmp=tmp, port=port, body=SMALL_BODY.decode()))
            command = [nginx, "-p", str(tmp), "-c", str(conf)]
            version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
            kind = version.replace("nginx version: ", "") or "nginx"
        else:
            command = [sys.executable, "-m", "benchmarks.pyserver", str(port)]
            reason = "nginx not on PATH" if prefer == "auto" else "--server python"
            kind = f"Python asyncio server in its own process ({reason})"
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            _wait_for_port(port, process)
            yield Target(kind=kind, base_url=f"http://127.0.0.1:{port}")
        finally:
            _stop(process)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class DelayTarget:
    """A running ``benchmarks.slowserver``: every request to ``url`` is answered after ``delay`` seconds."""

    delay: float
    base_url: str

    @property
    def url(self) -> str:
        return f"{self.base_url}/slow"

    def stats(self, reset: bool = False) -> dict[str, int]:
        """The server's counters: ``active`` (waiting now), ``peak`` (most at once), ``answered``."""
        response = httpx.get(f"{self.base_url}/stats" + ("?reset=1" if reset else ""), timeout=10)
        response.raise_for_status()
        return {key: int(value) for key, value in response.json().items()}


@contextlib.contextmanager
def start_delay_server(delay: float, host: str = "127.0.0.1") -> Iterator[DelayTarget]:
    """Run ``benchmarks.slowserver`` in its own process on ``host`` (any 127.x address) for the ``with`` block.

    Two servers on different loopback addresses (127.0.0.1, 127.0.0.2) are two
    hosts to a client: W7 uses that so that a per-host limit cannot group them.
    """
    port = free_port(host)
    command = [sys.executable, "-m", "benchmarks.slowserver", str(port), "--host", host, "--delay", str(delay)]
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_port(port, process, host=host)
        yield DelayTarget(delay=delay, base_url=f"http://{host}:{port}")
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server process: SIGTERM, then SIGKILL if it is still there after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
