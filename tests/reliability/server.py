"""A small threaded HTTP server that counts what it receives, per request ID.

The reliability tests compare the server's own count with the attempts the
store recorded, so the server, not bghttp, is the witness. Endpoints (``id`` is
a query parameter the tests set to the bghttp request ID):

* ``/ok?id=``                          200, a short body
* ``/flaky?id=&fail=K``                503 for the first K hits of an ID, then 200
* ``/slow?id=&chunks=N&size=S&delay=D`` 200, N chunks of S bytes, D seconds apart
* ``/big?id=&size=N``                  200, N bytes
* ``/redirect?id=&to=URL``             302 to URL
* ``/wait?id=&delay=D&fail=K``         waits D seconds; 503 for the first K hits, then 200
"""

from __future__ import annotations

import collections
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def slow_body(request_id: str, chunks: int, size: int) -> bytes:
    """The exact body ``/slow`` sends for ``request_id`` (deterministic, not repetitive)."""
    return random.Random(request_id).randbytes(chunks * size)


class CountingServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.times: dict[str, list[float]] = collections.defaultdict(list)
        self._lock = threading.Lock()
        handler = type("BoundCountingHandler", (CountingHandler,), {"counter": self})
        self._server = ThreadingHTTPServer((host, 0), handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def start(self) -> CountingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def record(self, request_id: str) -> int:
        with self._lock:
            self.hits[request_id] += 1
            self.times[request_id].append(time.time())
            return self.hits[request_id]


class CountingHandler(BaseHTTPRequestHandler):
    counter: CountingServer
    protocol_version = "HTTP/1.1"  # keep-alive: the load tests reuse connections

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # keep-alive: the body must not leak into the next request
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        request_id = query.get("id", "")
        hit = self.counter.record(request_id)
        route = getattr(self, "route_" + parts.path.strip("/"), None)
        if route is None:
            self.reply(404, b"no such route")
        else:
            route(request_id, hit, query)

    do_POST = do_GET

    def reply(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def route_ok(self, request_id: str, hit: int, query: dict[str, str]) -> None:
        self.reply(200, f"ok {request_id}".encode())

    def route_flaky(self, request_id: str, hit: int, query: dict[str, str]) -> None:
        if hit <= int(query.get("fail", "1")):
            self.reply(503, b"try again")
        else:
            self.reply(200, f"ok {request_id} after {hit}".encode())

    def route_big(self, request_id: str, hit: int, query: dict[str, str]) -> None:
        self.reply(200, b"x" * int(query["size"]))

    def route_redirect(self, request_id: str, hit: int, query: dict[str, str]) -> None:
        self.reply(302, b"", {"Location": query["to"]})

    def route_wait(self, request_id: str, hit: int, query: dict[str, str]) -> None:
        time.sleep(float(query.get("delay", "0.05")))
        if hit <= int(query.get("fail", "0")):
            self.reply(503, b"try again")
        else:
            self.reply(200, f"ok {request_id}".encode())

    def route_slow(self, request_id: str, hit: int, query: dict[str, str]) -> None:
        chunks, size, delay = int(query["chunks"]), int(query["size"]), float(query["delay"])
        body = slow_body(request_id, chunks, size)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for index in range(chunks):
                self.wfile.write(body[index * size : (index + 1) * size])
                self.wfile.flush()
                time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker was killed mid-body: that is the point
