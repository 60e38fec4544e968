"""Loopback stand-ins for "the network": a probe port the test opens and closes,
an HTTP server that counts what it received, and a worker log reader."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import struct
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bghttp import BackgroundHttpClient, RequestStatus, Settings, StatusRecord


class ProbePort:
    """A TCP port on 127.0.0.1 that accepts connections while "the network is up"."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.spec = f"tcp://127.0.0.1:{port}"
        self._sock: socket.socket | None = None

    def open(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)  # the kernel completes the handshakes; nobody needs to accept
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class CountingServer:
    """An HTTP server on 127.0.0.1 that answers 200 and counts requests per path."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.counts[self.path] += 1
                body = b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


class ResetTrap:
    """A port that "cuts the network" when the worker connects to it.

    On the first connection it closes ``probe`` (the monitor's probe now fails)
    and resets the connection, so the attempt ends with a network error exactly
    while the network is down, before the monitor's own checks could notice.
    """

    def __init__(self, port: int, probe: ProbePort) -> None:
        self.probe = probe
        self.fired = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self._sock.accept()
            self.probe.close()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()  # RST: "connection reset by peer"
            self.fired.set()
        self._sock.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()


def log_events(log_path: Path, event: str) -> list[dict[str, Any]]:
    """The worker's JSON log entries named ``event``."""
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == event:
                found.append(entry)
    return found


def statuses(client: BackgroundHttpClient, request_ids: list[str]) -> list[StatusRecord]:
    records = [client.get_request_status(request_id) for request_id in request_ids]
    assert all(record is not None for record in records)
    return records  # type: ignore[return-value]


def all_completed(client: BackgroundHttpClient, request_ids: list[str]) -> bool:
    return all(record.status is RequestStatus.COMPLETED for record in statuses(client, request_ids))


def outage_settings(base: Settings, probe: ProbePort, **changes: object) -> Settings:
    """``base`` with ``probe`` as the only connectivity probe and fast checks."""
    values: dict[str, object] = {
        "connectivity_probes": (probe.spec,),
        "connectivity_interval": 0.2,
        "offline_after_failures": 2,
        "offline_hold_seconds": 1.0,
    }
    values.update(changes)
    return dataclasses.replace(base, **values)  # type: ignore[arg-type]
