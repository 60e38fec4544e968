"""The fallback target server (``python -m benchmarks.pyserver PORT``): HTTP/1.1 keep-alive on asyncio.

Only what the workloads need: any method on ``/small`` (the body is read and
dropped), GET ``/files/big`` (1 GiB of zeros, streamed).
"""

from __future__ import annotations

import asyncio
import sys

from benchmarks.target import FILE_SIZES, SMALL_BODY

_CHUNK = b"\0" * (1 << 20)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _method, path, _version = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            size = FILE_SIZES.get(path.removeprefix("/files/")) if path.startswith("/files/") else None
            if size is not None:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\n\r\n" % size)
                for _ in range(size // len(_CHUNK)):
                    writer.write(_CHUNK)
                    await writer.drain()
            elif path.startswith("/small"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(SMALL_BODY), SMALL_BODY))
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _main(port: int) -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1])))
