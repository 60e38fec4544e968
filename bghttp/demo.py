"""``make demo``: bghttp end to end on this machine, in well under a minute.

Starts a small HTTP server on 127.0.0.1, then uses RabbitMQ when it is
reachable at ``BGHTTP_BROKER_URL`` (with a real ``dramatiq bghttp.actors`` worker
process, a temporary store and queue), and local mode otherwise. It submits a
GET, a JSON POST, a multipart upload, a request that fails twice and then
succeeds, and one whose retries run out; prints what became of each; stops
everything it started. Exit status 0 when every request ended as expected.

Run ``python -m bghttp.demo --keep`` to keep the temporary store for a look.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .broker import delete_queues, rabbitmq_reachable
from .client import BackgroundHttpClient
from .config import LOCAL_BROKER, Settings
from .logs import configure_logging
from .models import RequestInfo, RequestStatus
from .redaction import redact_broker_url

#: Retries wait 2, 4 … s times this: the demo shows the real schedule, fast.
DEMO_BACKOFF_SCALE = 0.05
WAIT_SECONDS = 45.0
WORKER_READY_SECONDS = 30.0
_MODULE_LOADED = time.monotonic()


class DemoServer(ThreadingHTTPServer):
    """The demo's endpoints; counts the calls of each path."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()

    def count(self, path: str) -> int:
        with self.lock:
            self.calls[path] = self.calls.get(path, 0) + 1
            return self.calls[path]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: DemoServer

    def do_GET(self) -> None:
        calls = self.server.count(self.path)
        if self.path == "/hello":
            self._reply(200, {"hello": "world"})
        elif self.path == "/flaky":  # fails twice, then works
            self._reply(503, {"error": "busy"}) if calls <= 2 else self._reply(200, {"ok": True, "calls": calls})
        elif self.path == "/down":
            self._reply(500, {"error": "always down"})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        self.server.count(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/echo":
            self._reply(200, {"you_sent": json.loads(body or b"null")})
        elif self.path == "/upload":
            self._reply(201, {"received_bytes": len(body), "content_type": self.headers.get("Content-Type", "")})
        else:
            self._reply(404, {"error": "not found"})

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # the demo prints its own summary
        pass


@contextlib.contextmanager
def worker_process(settings: Settings, log_path: Path) -> Iterator[None]:
    """A real ``dramatiq bghttp.actors`` worker for the demo's queue, stopped on exit."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "bghttp.actors", "--processes", "1", "--threads", "4"],
            env={**os.environ, **settings.to_env(), "BGHTTP_LOG_FORMAT": "json"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + WORKER_READY_SECONDS
            while "Worker process is ready" not in log_path.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the demo worker did not start; its log:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


Submitted = list[tuple[str, RequestInfo, RequestStatus]]


def submit_all(client: BackgroundHttpClient, server: DemoServer, upload: Path) -> Submitted:
    """Submit the demo's requests: (label, info, the status it should end with)."""
    return [
        ("GET /hello", client.get(server.url("/hello")), RequestStatus.COMPLETED),
        ("POST /echo (JSON)", client.post(server.url("/echo"), data={"order": 42, "items": ["book", "pen"]}),
         RequestStatus.COMPLETED),
        ("POST /upload (multipart)",
         client.post_multipart(server.url("/upload"), fields={"title": "demo"}, files={"file": upload}),
         RequestStatus.COMPLETED),
        ("GET /flaky (retries=3)", client.get(server.url("/flaky"), retries=3), RequestStatus.COMPLETED),
        ("GET /down (retries=2)", client.get(server.url("/down"), retries=2), RequestStatus.FAILED),
    ]


def verdict(status: RequestStatus, expected: RequestStatus) -> str:
    """What the demo says about a request's end: never "ok" for a failure, even an expected one."""
    if status is not expected:
        return f"UNEXPECTED (expected {expected.value})"
    return "ok" if status is RequestStatus.COMPLETED else f"{status.value} as expected"


def report(client: BackgroundHttpClient, submitted: Submitted, *, show_paths: bool) -> bool:
    """Wait for every request, print one line each; True if all ended as expected.

    ``show_paths``: print the response files' paths, only when they outlive the demo (``--keep``).
    """
    all_as_expected = True
    for label, info, expected in submitted:
        record = client.wait(info.request_id, WAIT_SECONDS)
        response = client.get_response(info.request_id)
        all_as_expected &= record.status is expected
        print(
            f"  {label:<26} {record.status.value:<10} attempts={record.attempt_count} "
            f"http={record.last_status_code} {verdict(record.status, expected)}"
        )
        if response is not None:
            where = f"response file: {response.response_file_path}" if show_paths else "response"
            print(f"  {'':<26} {where} -> {response.read_text()[:60]}")
    return all_as_expected


def seconds_since_process_start() -> float:
    """The real elapsed time: since this process started (interpreter start-up and imports included).

    Linux's ``/proc/self/stat`` says when, in clock ticks since boot; elsewhere,
    since this module was loaded.
    """
    try:
        with open("/proc/self/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, "starttime"
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic() - _MODULE_LOADED


def run(keep: bool = False) -> int:
    base = Settings.from_env()
    configure_logging(base.log_format, os.environ.get("BGHTTP_LOG_LEVEL") or "CRITICAL")
    workdir = Path(tempfile.mkdtemp(prefix="bghttp-demo-"))
    settings = dataclasses.replace(
        base, store_dir=workdir / "store", queue_name=f"bghttp-demo-{uuid.uuid4().hex[:8]}",
        backoff_scale=DEMO_BACKOFF_SCALE,
    )
    use_rabbitmq = not settings.is_local and rabbitmq_reachable(settings.broker_url)
    where = redact_broker_url(settings.broker_url)
    if use_rabbitmq:
        queue = settings.queue_name
        print(f"RabbitMQ is reachable at {where}: using it, with a dramatiq worker process on queue {queue}.")
    else:
        reason = "BGHTTP_BROKER_URL=local" if settings.is_local else f"RabbitMQ is not reachable at {where}"
        print(f"{reason}: running in local mode (in-process worker, no broker needed).")
        settings = dataclasses.replace(settings, broker_url=LOCAL_BROKER)
    upload = workdir / "report.csv"
    upload.write_text("id,amount\n1,9.99\n2,20.00\n")
    server = DemoServer()
    threading.Thread(target=server.serve_forever, name="demo-http-server", daemon=True).start()
    try:
        with contextlib.ExitStack() as running:
            if use_rabbitmq:
                running.callback(delete_queues, settings.broker_url, settings.queue_name)
                running.enter_context(worker_process(settings, workdir / "worker.log"))
            client = running.enter_context(BackgroundHttpClient(settings))
            submitted_at = time.monotonic()
            submitted = submit_all(client, server, upload)
            store = f"store: {settings.store_dir}" if keep else "a temporary store (removed at exit; --keep keeps it)"
            print(f"Submitted {len(submitted)} requests to {server.url('/')}; {store}")
            ok = report(client, submitted, show_paths=keep)
            requests_took = time.monotonic() - submitted_at
            seen = sum(server.calls.values())
    finally:
        server.shutdown()
        server.server_close()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"The server saw {seen} HTTP requests; submitting them and waiting for their ends took {requests_took:.1f}s.")
    if keep:
        print(f"Kept the store at {settings.store_dir}")
    if not ok:
        print("Some requests did not end as expected.")
    # Last, so that it counts everything: start-up, the worker, the requests and the clean-up.
    print(f"Done in {seconds_since_process_start():.1f}s.")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bghttp.demo", description="bghttp end to end on this machine")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store (the demo removes it)")
    args = parser.parse_args(argv)
    return run(keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
