"""The one ``FileStore`` of a worker process.

The actor's runners, the connectivity gate and the message intake all write to
the store. One instance per process means one group commit (one ``syncfs`` for
every write since the last one, whoever made it) and one layout check, instead
of one of each per part. Built on first use, after Dramatiq forks the process;
a forked child builds its own.
"""

from __future__ import annotations

import os
import threading

from ..config import Settings
from ..store import FileStore

_lock = threading.Lock()
_stores: dict[tuple[str, bool], FileStore] = {}


def process_store(settings: Settings) -> FileStore:
    """This process's store for ``settings.store_dir`` (the same object for every caller)."""
    key = (str(settings.store_dir), settings.fsync)
    store = _stores.get(key)
    if store is None:
        with _lock:
            store = _stores.get(key)
            if store is None:
                store = _stores[key] = FileStore(settings.store_dir, fsync=settings.fsync)
    return store


def _forget_after_fork() -> None:
    # A parent's store carries its group-commit thread state; the child starts afresh.
    global _lock
    _lock = threading.Lock()
    _stores.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
