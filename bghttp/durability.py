"""Making writes durable: one filesystem sync shared by many threads (group commit).

A worker thread that finished a request has written a few files (response body,
metadata, status). Instead of an fsync for each file and directory, the runner
writes them all without syncing and then waits at :class:`GroupCommit`: one
``syncfs`` of the store's filesystem, started after the thread's writes, makes
them all durable, and threads that finish meanwhile share the next one. The
message is acked only after that, so "acked" still means "on disk".
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path
from typing import Any

_libc: Any = None


def sync_filesystem(path: Path) -> None:
    """Make every write on the filesystem holding ``path`` durable (``syncfs``; else ``sync``)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        syncfs = getattr(_libc, "syncfs", None)
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


class GroupCommit:
    """Threads call :meth:`wait_durable` after their writes; one sync serves all waiting."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._condition = threading.Condition()
        self._started = 0  # syncs started so far
        self._finished = 0  # the highest sync number that has finished
        self._running = False

    def wait_durable(self) -> None:
        """Return once a sync that started after this call has finished."""
        with self._condition:
            # A sync already running may have started before our writes: we need the next one.
            needed = self._started + 1
            while self._finished < needed:
                if self._running:
                    self._condition.wait()
                    continue
                self._running = True
                self._started += 1
                number = self._started
                self._condition.release()
                try:
                    sync_filesystem(self.path)
                finally:
                    self._condition.acquire()
                    self._running = False
                    self._finished = max(self._finished, number)
                    self._condition.notify_all()
