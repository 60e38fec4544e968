"""A loopback TCP server that plays a scripted (often lying or stalling) HTTP server.

Each accepted connection runs ``script(connection)`` in its own thread. The
server is the witness: it counts the requests it read (``hits``) and notes when
it saw the client give up (``client_gone_at``, ``time.monotonic()``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any


class Connection:
    """One accepted connection, with helpers for scripts."""

    def __init__(self, server: ScriptedServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock

    def read_request(self) -> bytes:
        """Read one request (head and a Content-Length body); count it as a hit."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("client closed before sending a request")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            body += chunk
        self.server.record(head + b"\r\n\r\n" + body)
        return head

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def trickle(self, data: bytes, interval: float) -> None:
        """Send ``data`` one byte every ``interval`` seconds; return when the client is gone."""
        for byte in data:
            if not self._send_or_notice_gone(bytes([byte])):
                return
            time.sleep(interval)

    def wait_until_client_gone(self, limit: float = 30.0) -> None:
        """Block until the client closes the connection (or ``limit`` passes)."""
        self.sock.settimeout(limit)
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.server.note_client_gone()

    def _send_or_notice_gone(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except OSError:
            self.server.note_client_gone()
            return False
        # A closed client may still accept one send: look for its FIN without blocking.
        self.sock.setblocking(False)
        try:
            if self.sock.recv(1, socket.MSG_PEEK) == b"":
                self.server.note_client_gone()
                return False
        except BlockingIOError:
            pass
        except OSError:
            self.server.note_client_gone()
            return False
        finally:
            self.sock.setblocking(True)
        return True


class ScriptedServer:
    def __init__(self, script: Callable[[Connection], Any], *, receive_buffer: int | None = None) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.client_gone_at: list[float] = []
        self.accepted_at: list[float] = []
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if receive_buffer is not None:  # inherited by accepted sockets: a slow upload sink
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._stopped = threading.Event()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def hits(self) -> int:
        with self._lock:
            return len(self.requests)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def record(self, request: bytes) -> None:
        with self._lock:
            self.requests.append(request)

    def note_client_gone(self) -> None:
        with self._lock:
            self.client_gone_at.append(time.monotonic())

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for sock in self._connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                self.accepted_at.append(time.monotonic())
                self._connections.append(sock)
            threading.Thread(target=self._run_script, args=(sock,), daemon=True).start()

    def _run_script(self, sock: socket.socket) -> None:
        try:
            self.script(Connection(self, sock))
        except OSError:
            self.note_client_gone()
        finally:  # one script per connection: the client must not reuse it
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def response_head(status: str = "200 OK", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
