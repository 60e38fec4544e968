"""A target that answers late: ``python -m benchmarks.slowserver PORT [--host H] [--delay S]``.

Every request (any method, any path but ``/stats``) is answered with the 64-byte
JSON body of ``target.SMALL_BODY`` after ``--delay`` seconds, on HTTP/1.1
keep-alive. Waiting costs the server nothing but a sleeping coroutine, so
thousands of requests can wait at once and the server is never what limits a
workload (W6, W7, the memory workload, ``transport_cpu``).

``GET /stats`` answers at once with ``{"active": N, "peak": M, "answered": K}``:
the requests waiting now, the most that ever waited at once, and how many were
answered. ``GET /stats?reset=1`` zeroes the peak and the answered count. That
is how a workload sees how many requests a client really had in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from benchmarks.target import SMALL_BODY

#: Far above the 1,000+ connections the workloads open at once (the kernel caps it at somaxconn).
BACKLOG = 8192


class DelayServer:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.active = 0
        self.peak = 0
        self.answered = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ", 2)[1]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip() or 0)
                if length:
                    await reader.readexactly(length)
                body = self._stats(path) if path.startswith("/stats") else await self._late_answer()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            pass
        finally:
            writer.close()

    async def _late_answer(self) -> bytes:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        self.answered += 1
        return SMALL_BODY

    def _stats(self, path: str) -> bytes:
        body = json.dumps({"active": self.active, "peak": self.peak, "answered": self.answered}).encode()
        if "reset=1" in path:
            self.peak, self.answered = self.active, 0
        return body


async def _main(host: str, port: int, delay: float) -> None:
    handler = DelayServer(delay)
    server = await asyncio.start_server(handler.handle, host, port, backlog=BACKLOG)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds before each answer (1.0)")
    args = parser.parse_args()
    asyncio.run(_main(args.host, args.port, args.delay))
