"""``AsyncBackgroundHttpClient``: the client's methods as awaitables for asyncio services.

Every call that touches the broker or the disk runs on a small thread pool of
the client's own, so the event loop never blocks: a submit waits for RabbitMQ's
publisher confirm in a pool thread, and ``wait()`` sleeps with ``asyncio.sleep``
between status reads. Dramatiq keeps one RabbitMQ connection per thread, so a
bounded pool (``max_threads``) also bounds the connections.

    async with AsyncBackgroundHttpClient() as client:
        info = await client.post("https://api.example.com/orders", data={"id": 7})
        record = await client.wait(info.request_id, timeout=60)

A submit whose await is cancelled (``asyncio.wait_for`` timing out) still
finishes in its thread: a thread cannot be stopped half-way through storing and
publishing. A request the caller can never find (its ID was generated, and the
caller got no ``RequestInfo``) is then cancelled, so nothing runs unseen; one
with the caller's own ``request_id`` stays, and submitting that ID again
returns it (it is sent once).
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, Unpack

import dramatiq

from .bulk import BulkRequest
from .client import BackgroundHttpClient, OnConflict
from .config import Settings
from .errors import BghttpError, InvalidArgument
from .models import RequestInfo, RequestStatus, Response, StatusRecord
from .validation import RequestDict, RequestOptions, SubmitOptions
from .waiting import WaitOptions

T = TypeVar("T")

DEFAULT_MAX_THREADS = 4


class AsyncBackgroundHttpClient:
    """The async twin of :class:`~bghttp.BackgroundHttpClient`; same arguments, same results."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        broker: str | dramatiq.Broker | None = None,
        store_dir: str | Path | None = None,
        on_conflict: OnConflict = "return",
        max_threads: int = DEFAULT_MAX_THREADS,
        client: BackgroundHttpClient | None = None,
    ) -> None:
        """Build a sync client from the arguments, or wrap ``client`` (then the others are ignored)."""
        if max_threads < 1:
            raise InvalidArgument(f"max_threads must be at least 1, not {max_threads!r}")
        self.sync = client or BackgroundHttpClient(
            settings, broker=broker, store_dir=store_dir, on_conflict=on_conflict
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(max_threads, thread_name_prefix="bghttp-aio")
        self._closed = False

    async def _run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise RuntimeError("the client is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(function, *args, **kwargs))

    async def _submit(self, function: Callable[[], T], generated_ids: Callable[[T], builtins.list[str]]) -> T:
        """Run a submit; if the caller stops awaiting it, cancel the requests it can never find."""
        if self._closed:
            raise RuntimeError("the client is closed")
        # In the caller's context (its current trace span, for one), not the pool thread's empty one.
        future = asyncio.get_running_loop().run_in_executor(self._pool, contextvars.copy_context().run, function)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(functools.partial(self._cancel_unseen, generated_ids))
            raise

    def _cancel_unseen(self, generated_ids: Callable[[Any], builtins.list[str]], future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            return  # nothing was accepted
        # On the event loop, blocking for a status write or two: rare, and it must
        # happen even when the client is being closed right after.
        self._cancel_quietly(generated_ids(future.result()))

    def _cancel_quietly(self, request_ids: builtins.list[str]) -> None:
        for request_id in request_ids:
            with contextlib.suppress(BghttpError):  # already final, or removed: nothing runs unseen
                self.sync.cancel(request_id)

    # ------------------------------------------------------------- submits
    async def request(self, method: str, url: str, **options: Unpack[RequestOptions]) -> RequestInfo:
        """Submit any request; returns once it is stored and the broker confirmed it.

        If the await is cancelled, the submit still finishes; without a
        ``request_id`` of the caller's, the request is then cancelled (see the module docstring).
        """
        generated = options.get("request_id") is None
        return await self._submit(
            functools.partial(self.sync.request, method, url, **options),
            lambda info: [info.request_id] if generated else [],
        )

    async def get(self, url: str, **options: Unpack[RequestOptions]) -> RequestInfo:
        return await self.request("GET", url, **options)

    async def head(self, url: str, **options: Unpack[RequestOptions]) -> RequestInfo:
        return await self.request("HEAD", url, **options)

    async def delete(self, url: str, **options: Unpack[RequestOptions]) -> RequestInfo:
        """Submit an HTTP DELETE. (To remove a request from the store, use ``remove``.)"""
        return await self.request("DELETE", url, **options)

    async def post(self, url: str, **options: Unpack[RequestOptions]) -> RequestInfo:
        return await self.request("POST", url, **options)

    async def put(self, url: str, **options: Unpack[RequestOptions]) -> RequestInfo:
        return await self.request("PUT", url, **options)

    async def patch(self, url: str, **options: Unpack[RequestOptions]) -> RequestInfo:
        return await self.request("PATCH", url, **options)

    async def post_multipart(self, url: str, **options: Unpack[SubmitOptions]) -> RequestInfo:
        return await self.request("POST", url, multipart=True, **options)

    async def submit_many(self, requests: Iterable[BulkRequest | RequestDict]) -> list[RequestInfo]:
        """Submit many requests at once, all or nothing (see ``BackgroundHttpClient.submit_many``).

        If the await is cancelled, the requests submitted without a ``request_id`` are cancelled.
        """
        items = builtins.list(requests)
        generated = [_request_id_of(item) is None for item in items]
        return await self._submit(
            functools.partial(self.sync.submit_many, items),
            lambda infos: [info.request_id for info, gen in zip(infos, generated, strict=True) if gen],
        )

    # --------------------------------------------------------------- reads
    async def get_request_status(self, request_id: str) -> StatusRecord | None:
        return await self._run(self.sync.get_request_status, request_id)

    async def get_response(self, request_id: str) -> Response | None:
        return await self._run(self.sync.get_response, request_id)

    async def list(self, status: RequestStatus | str | None = None, limit: int | None = None) -> list[StatusRecord]:
        return await self._run(self.sync.list, status, limit)

    async def wait(
        self, request_id: str, timeout: float | None = None, **options: Unpack[WaitOptions]
    ) -> StatusRecord:
        """Wait until the request is terminal without blocking the loop; WaitTimeout after ``timeout`` s."""
        waiting = self.sync._wait_loop(request_id, timeout, **options)
        return await waiting.run_async(functools.partial(self.get_request_status, request_id))

    async def received_bytes(self, request_id: str) -> int | None:
        """How much of the response a running attempt has streamed so far (None if nothing is streaming)."""
        return await self._run(self.sync.received_bytes, request_id)

    # -------------------------------------------------------------- changes
    async def cancel(self, request_id: str) -> StatusRecord:
        return await self._run(self.sync.cancel, request_id)

    async def retry(self, request_id: str) -> StatusRecord:
        """Replay a failed or cancelled request (see ``BackgroundHttpClient.retry``)."""
        return await self._run(self.sync.retry, request_id)

    async def remove(self, request_id: str) -> bool:
        return await self._run(self.sync.remove, request_id)

    async def gc(self, older_than: float, *, dry_run: bool = False) -> builtins.list[str]:
        """Remove finished requests older than ``older_than`` seconds (see ``BackgroundHttpClient.gc``)."""
        return await self._run(self.sync.gc, older_than, dry_run=dry_run)

    async def recover(self) -> int:
        """Re-send every unfinished request nobody runs (see ``BackgroundHttpClient.recover``)."""
        return await self._run(self.sync.recover)

    async def close(self) -> None:
        """Wait for calls in flight, then close the pool and the client's broker connections."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._close_sync)

    def _close_sync(self) -> None:
        self._pool.shutdown(wait=True)
        self.sync.close()

    async def __aenter__(self) -> AsyncBackgroundHttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


__all__ = ["AsyncBackgroundHttpClient"]


def _request_id_of(item: BulkRequest | RequestDict) -> str | None:
    request_id = item.request_id if isinstance(item, BulkRequest) else item.get("request_id")
    return request_id if isinstance(request_id, str) else None
