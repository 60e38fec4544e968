"""The one wait loop: poll a request's status until it is final, for the client, the async client and the CLI.

:class:`Wait` decides, one status read at a time, whether to return, raise or
poll again; :meth:`Wait.run` drives it with ``time.sleep`` and
:meth:`Wait.run_async` with ``asyncio.sleep``, so both clients (and the CLI,
whose progress display is the ``on_poll`` callback) wait the same way.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypedDict, Unpack

from .errors import InvalidArgument, UnknownRequest, WaitTimeout
from .models import StatusRecord

DEFAULT_POLL_SECONDS = 0.05

#: Called with each non-final record read while waiting (a progress display).
OnPoll = Callable[[StatusRecord], None]


class WaitOptions(TypedDict, total=False):
    """The keywords of ``wait``: how often to read the status, and what to call with each unfinished record."""

    poll_interval: float
    on_poll: OnPoll | None


def check_timeout(timeout: float | None) -> None:
    if timeout is not None and not 0 <= timeout < float("inf"):  # a NaN deadline would never come
        raise InvalidArgument(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")


class Wait:
    """One wait for ``request_id`` to end, ``WaitTimeout`` after ``timeout`` seconds (None: no limit)."""

    def __init__(
        self,
        request_id: str,
        timeout: float | None = None,
        *,
        where: str = "the store",
        before_read: Callable[[], None] | None = None,
        **options: Unpack[WaitOptions],
    ) -> None:
        check_timeout(timeout)
        self.request_id = request_id
        self.timeout = timeout
        self.poll_interval = options.get("poll_interval", DEFAULT_POLL_SECONDS)
        self.on_poll = options.get("on_poll")
        self.where = where
        self.before_read = before_read  # raises to stop waiting (a dead in-process worker)
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def done(self, record: StatusRecord | None) -> StatusRecord | None:
        """The final record; None to poll again; ``UnknownRequest``/``WaitTimeout`` to stop."""
        if record is None:
            raise UnknownRequest(f"no request {self.request_id!r} in {self.where}")
        if record.is_terminal:
            return record
        if self.on_poll is not None:
            self.on_poll(record)
        if self._deadline is not None and time.monotonic() >= self._deadline:
            raise WaitTimeout(f"request {self.request_id!r} is still {record.phase.value} after {self.timeout:g}s")
        return None

    def run(self, read_status: Callable[[], StatusRecord | None]) -> StatusRecord:
        while True:
            if self.before_read is not None:
                self.before_read()
            record = self.done(read_status())
            if record is not None:
                return record
            time.sleep(self.poll_interval)

    async def run_async(self, read_status: Callable[[], Awaitable[StatusRecord | None]]) -> StatusRecord:
        import asyncio  # here: the CLI's wait (``run``) need not load asyncio

        while True:
            if self.before_read is not None:
                self.before_read()
            record = self.done(await read_status())
            if record is not None:
                return record
            await asyncio.sleep(self.poll_interval)
