"""CPU seconds per request of HTTP clients, each holding many requests in flight to a slow server.

    python -m benchmarks.transport_cpu [--in-flight 500] [--requests 2000] [--delay 0.5] [--shards 20] [--only V,...]

A local ``benchmarks.slowserver`` (its own process) answers every GET after
``--delay`` s. Each client runs in a fresh Python process of its own, opens its
``--in-flight`` connections with one unmeasured wave, then sends ``--requests``
GETs keeping ``--in-flight`` of them waiting at once; the figure is that
process's CPU time (user + system, ``os.times``, all threads), not wall time,
divided by the requests. The clients:

* ``threads``: ``httpx.Client`` shared by ``--in-flight`` threads (how the worker sends today);
* ``async``: ``httpx.AsyncClient`` in one event loop;
* ``async-sharded``: ``--shards`` ``httpx.AsyncClient`` in one event loop, each with its share of
  the connections (does a small pool per client avoid the cost of one large pool?);
* ``httpx-aiohttp``: ``httpx.AsyncClient`` on ``httpx_aiohttp.AiohttpTransport`` (skipped if not installed);
* ``aiohttp``: a bare ``aiohttp.ClientSession``, for reference (skipped if not installed).

The server's own count of requests waiting at once is printed beside each, to
show the client really had them all in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from .infra import load
from .target import start_delay_server

VARIANTS = ("threads", "async", "async-sharded", "httpx-aiohttp", "aiohttp")
#: The module each variant needs beyond httpx: without it the variant is skipped, not failed.
_NEEDS = {"httpx-aiohttp": "httpx_aiohttp", "aiohttp": "aiohttp"}


class Meter:
    """CPU seconds (user + system, all threads of this process) and wall seconds since it was made."""

    def __init__(self) -> None:
        self.cpu, self.wall = self._cpu(), time.perf_counter()

    @staticmethod
    def _cpu() -> float:
        times = os.times()
        return times.user + times.system

    def read(self) -> tuple[float, float]:
        return self._cpu() - self.cpu, time.perf_counter() - self.wall


# ------------------------------------------------------------ one client, in its own process
def run_threads(url: str, in_flight: int, requests: int) -> tuple[float, float]:
    """``httpx.Client`` in ``in_flight`` threads; CPU and wall seconds of the measured requests."""
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    with httpx.Client(limits=limits, timeout=60) as client, ThreadPoolExecutor(in_flight) as pool:

        def one(_: int) -> None:
            client.get(url).raise_for_status()

        list(pool.map(one, range(in_flight)))  # warm-up: every thread and connection exists
        meter = Meter()
        list(pool.map(one, range(requests)))
        return meter.read()


async def _drive(send: Callable[[int], Awaitable[None]], in_flight: int, requests: int) -> tuple[float, float]:
    """``in_flight`` coroutines sending until ``requests`` were sent, after a warm-up wave; CPU and wall seconds.

    ``send`` gets the number of the coroutine that calls it (0 to ``in_flight`` - 1).
    """
    await asyncio.gather(*(send(number) for number in range(in_flight)))
    remaining = requests

    async def sender(number: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await send(number)

    meter = Meter()
    await asyncio.gather(*(sender(number) for number in range(in_flight)))
    return meter.read()


async def run_async(
    url: str, in_flight: int, requests: int, transport: httpx.AsyncBaseTransport | None
) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(limits=limits, timeout=60, transport=transport) as client:

        async def send(_: int) -> None:
            (await client.get(url)).raise_for_status()

        return await _drive(send, in_flight, requests)


async def run_async_sharded(url: str, in_flight: int, requests: int, shards: int) -> tuple[float, float]:
    """Coroutine ``n`` sends through client ``n % shards``: each pool holds about ``in_flight / shards``."""
    size = -(-in_flight // shards)
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    clients = [httpx.AsyncClient(limits=limits, timeout=60) for _ in range(shards)]
    try:

        async def send(number: int) -> None:
            (await clients[number % shards].get(url)).raise_for_status()

        return await _drive(send, in_flight, requests)
    finally:
        for client in clients:
            await client.aclose()


async def run_aiohttp(url: str, in_flight: int, requests: int) -> tuple[float, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def send(_: int) -> None:
            async with session.get(url) as response:
                response.raise_for_status()
                await response.read()

        return await _drive(send, in_flight, requests)


def run_variant(variant: str, url: str, in_flight: int, requests: int, shards: int) -> tuple[float, float]:
    if variant == "threads":
        return run_threads(url, in_flight, requests)
    if variant == "async":
        return asyncio.run(run_async(url, in_flight, requests, None))
    if variant == "async-sharded":
        return asyncio.run(run_async_sharded(url, in_flight, requests, shards))
    if variant == "httpx-aiohttp":
        from httpx_aiohttp import AiohttpTransport

        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        return asyncio.run(run_async(url, in_flight, requests, AiohttpTransport(limits=limits)))
    if variant == "aiohttp":
        return asyncio.run(run_aiohttp(url, in_flight, requests))
    raise SystemExit(f"unknown variant {variant!r}")


# ------------------------------------------------------------------------------ the driver
def measure(variant: str, url: str, in_flight: int, requests: int, shards: int) -> dict[str, Any]:
    """Run one variant in a fresh process; the CPU and wall seconds of its measured requests."""
    command = [sys.executable, "-m", "benchmarks.transport_cpu", "--child", variant, "--url", url,
               "--in-flight", str(in_flight), "--requests", str(requests), "--shards", str(shards)]
    done = subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _child(variant: str, url: str, in_flight: int, requests: int, shards: int) -> None:
    cpu, wall = run_variant(variant, url, in_flight, requests, shards)
    print(json.dumps({"cpu": cpu, "wall": wall}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in-flight", type=int, default=500)
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per client (after warm-up)")
    parser.add_argument("--delay", type=float, default=0.5, help="the server's delay before each answer (s)")
    parser.add_argument("--shards", type=int, default=20, help="clients of async-sharded (20)")
    parser.add_argument("--only", default=",".join(VARIANTS))
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.url, args.in_flight, args.requests, args.shards)
        return
    print(f"{args.requests:,} GETs after a warm-up wave, {args.in_flight} in flight, server delay {args.delay:g} s; "
          f"load {load()}")
    print(f"{'client':16s} {'CPU ms/request':>15s} {'requests/s':>11s} {'most waiting at server':>23s}")
    with start_delay_server(args.delay) as server:
        for variant in (v.strip() for v in args.only.split(",") if v.strip()):
            module = _NEEDS.get(variant)
            if module and importlib.util.find_spec(module) is None:
                print(f"{variant:16s} skipped: {module} is not installed")
                continue
            server.stats(reset=True)
            figures = measure(variant, server.url, args.in_flight, args.requests, args.shards)
            peak = server.stats()["peak"]
            print(f"{variant:16s} {figures['cpu'] / args.requests * 1000:15.3f} "
                  f"{args.requests / figures['wall']:11,.0f} {peak:23,}", flush=True)
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
