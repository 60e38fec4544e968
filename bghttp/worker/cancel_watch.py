"""A running attempt's cancel check, cheap enough to make five times a second per attempt.

An attempt asks "was the request cancelled?" every ``attempt_io.CHECK_SECONDS``.
With hundreds of attempts in flight, reading every status record each time
would be thousands of reads a second. The store's ``status_stamp`` (for a
local store: the file's inode, size and mtime) changes with every new version
of the record, so the record is read again only after it changed.
"""

from __future__ import annotations

from collections.abc import Hashable

from ..errors import StoreError
from ..models import RequestStatus
from ..store_api import Store

_UNREAD = object()


class CancelWatch:
    """``watch()`` is True once the request's status record says ``cancelled``."""

    def __init__(self, store: Store, request_id: str) -> None:
        self.store = store
        self.request_id = request_id
        self._seen: Hashable = _UNREAD
        self.reads = 0  # how often the record was read: tests check that an unchanged one is not

    def __call__(self) -> bool:
        try:
            stamp = self.store.status_stamp(self.request_id)
            if stamp is not None and stamp == self._seen:
                return False
            # The stamp is taken before the read: a change in between is read now and seen again next time.
            self.reads += 1
            record = self.store.read_status(self.request_id)
        except StoreError:  # cannot tell now: go on, the next check (0.2 s later) may
            return False
        cancelled = record is not None and record.status is RequestStatus.CANCELLED
        if not cancelled:
            self._seen = stamp
        return cancelled


__all__ = ["CancelWatch"]
