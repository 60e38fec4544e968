"""Making the store's writes durable: one object, :class:`Durability`, decides when to fsync.

Outside a unit of work every write is fsynced (with its new directory entry)
before it counts. Inside one (:meth:`Durability.batch`, the store's
``batch()``), the writes of that thread skip their fsyncs and the
:class:`Batch` makes them durable at once when it commits:

* ``shared=True`` (the worker, a bulk submit): one ``syncfs`` of the store's
  filesystem, started after the writes, shared by every thread that commits
  meanwhile (:class:`GroupCommit`). A ``syncfs`` that fails (EIO, ENOSPC, ...)
  fails the commit (StoreError); only where ``syncfs`` does not exist (ENOSYS)
  is each file the batch wrote fsynced instead, never ``sync(2)``, which
  reports no error. A worker thread that finished a request
  has written a few files (response body, metadata, status); the message is
  acked only after the commit, so "acked" still means "on disk".
* ``shared=False`` (a single submit): an fsync of just the files and
  directories the batch wrote, which the submit runs on a helper thread while it
  waits for the broker.

Callers open a batch and nothing else; the store asks :meth:`Durability.must_sync`
before each fsync of its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import StoreError
from .store_files import open_nofollow

_libc: Any = None


class NotDurable(StoreError):
    """A commit failed: the batch's writes may not survive a power cut (nothing may be acked on them)."""


class SyncUnavailable(OSError):
    """The kernel has no ``syncfs`` (ENOSYS) or libc does not export it: fsync each file instead."""


def sync_filesystem(path: Path, fd: int | None = None) -> None:
    """Make every write on the filesystem holding ``path`` durable (``syncfs``), or raise OSError.

    ``fd``: an open fd of ``path`` to sync through (else ``path`` is opened for it).
    Never ``sync(2)``: it reports no error, so a failing disk (EIO) would pass
    for a durable one. SyncUnavailable where ``syncfs`` does not exist at all.
    """
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    syncfs = getattr(_libc, "syncfs", None)
    if syncfs is None:
        raise SyncUnavailable(errno.ENOSYS, "libc has no syncfs")
    opened = open_nofollow(path, os.O_RDONLY) if fd is None else None
    try:
        if syncfs(fd if opened is None else opened) != 0:
            error = ctypes.get_errno()
            if error == errno.ENOSYS:
                raise SyncUnavailable(error, os.strerror(error))
            raise OSError(error, f"syncfs of {path}: {os.strerror(error)}")
    finally:
        if opened is not None:
            os.close(opened)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class GroupCommit:
    """Threads call :meth:`wait_durable` after their writes; one sync serves all waiting.

    A sync that fails fails every waiter it was to serve (each raises its error),
    and every batch whose writes it may have written back (see ``_last_failure``).
    """

    #: Failed syncs remembered for their waiters (by sync number); older ones are forgotten.
    FAILURES_KEPT = 64

    def __init__(self, path: Path) -> None:
        self.path = path
        self._condition = threading.Condition()
        self._started = 0  # syncs started so far
        self._finished = 0  # the highest sync number that has finished
        self._running = False
        self._failures: dict[int, OSError] = {}
        #: The latest failed sync, and its error. ``syncfs`` reports a writeback error once per
        #: open file, and every sync goes through one fd: the sync that reports it may be one that
        #: served another batch, and the next sync returns 0 with the pages lost.
        self._last_failure: tuple[int, OSError] | None = None
        self._fd: int | None = None  # the store root, open for every sync (not opened and closed per sync)

    def _root_fd(self) -> int:
        if self._fd is None:
            fd = self._fd = open_nofollow(self.path, os.O_RDONLY)
            weakref.finalize(self, _close_quietly, fd)
        return self._fd

    def first_sync_from_now(self) -> int:
        """The number of the first sync that may write back (and so report the loss of) what is written from now:
        the one running, else the next."""
        with self._condition:
            return self._started if self._running else self._started + 1

    def wait_durable(self, since: int | None = None) -> None:
        """Return once a sync that started after this call has finished; its OSError if it failed.

        ``since`` (from :meth:`first_sync_from_now` before the writes): also the OSError of
        any sync numbered from it on that failed, whoever it served.
        """
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
                failure: OSError | None = None
                try:
                    sync_filesystem(self.path, self._root_fd())
                except OSError as error:
                    failure = error
                finally:
                    self._condition.acquire()
                    self._running = False
                    self._finished = max(self._finished, number)
                    if failure is not None:
                        self._failures[number] = failure
                        if self._last_failure is None or number > self._last_failure[0]:
                            self._last_failure = (number, failure)
                        for old in [n for n in self._failures if n <= number - self.FAILURES_KEPT]:
                            del self._failures[old]
                    self._condition.notify_all()
            # Syncs run one at a time and are numbered in order: sync ``needed`` is the one that served us.
            failure = self._failures.get(needed)
            if failure is not None:
                raise failure
            if since is not None and self._last_failure is not None and self._last_failure[0] >= since:
                raise self._last_failure[1]


class Batch:
    """A unit of work: writes made in its thread skip their fsyncs until :meth:`commit`.

    :meth:`commit` may run on another thread (a submit commits beside its publish).
    """

    def __init__(
        self,
        group_commit: GroupCommit,
        *,
        shared: bool,
        enabled: bool,
        request_files: Callable[[str], Iterable[Path]],
    ) -> None:
        self._group_commit = group_commit
        self._shared = shared
        self._enabled = enabled
        self._request_files = request_files
        self._lock = threading.Lock()
        #: The first sync that may have written back (and reported the loss of) this batch's writes.
        self._first_sync = group_commit.first_sync_from_now() if shared and enabled else None
        self._files: set[Path] = set()
        self._directories: set[Path] = set()
        self._requests: list[str] = []

    def note(self, path: Path, *, new_entry: bool) -> None:
        """``path`` was written (``new_entry``: created or renamed, so its directory changed too)."""
        with self._lock:
            self._files.add(path)
            if new_entry:
                self._directories.add(path.parent)

    def add_request(self, request_id: str) -> None:
        """Make every file of this stored request durable at the commit (also ones another submitter wrote)."""
        with self._lock:
            self._requests.append(request_id)

    @property
    def needs_commit(self) -> bool:
        with self._lock:
            return self._enabled and bool(self._files or self._directories or self._requests)

    def commit(self) -> None:
        """Make what the batch wrote (and its requests' files) durable; StoreError if the disk fails."""
        with self._lock:
            files, directories, requests = self._files, self._directories, self._requests
            self._files, self._directories, self._requests = set(), set(), []
        if not self._enabled or not (files or directories or requests):
            return
        what = f"request {', '.join(requests)}" if requests else "the store's writes"
        if self._shared:
            try:
                self._group_commit.wait_durable(since=self._first_sync)
                return
            except SyncUnavailable:
                pass  # no syncfs on this kernel: fsync each file the batch wrote, below
            except OSError as error:
                raise NotDurable(f"cannot make {what} durable: {error}") from error
        try:
            for request_id in requests:
                for path in self._request_files(request_id):
                    files.add(path)
                    directories.add(path.parent)
            for path in [*sorted(files), *sorted(directories - files)]:
                with contextlib.suppress(FileNotFoundError):  # removed meanwhile: nothing to keep
                    fsync_path(path)
        except OSError as error:
            raise NotDurable(f"cannot make {what} durable: {error}") from error


class Durability:
    """When the store fsyncs: at once, or at the commit of the thread's open batch."""

    def __init__(
        self,
        root: Path,
        *,
        enabled: bool,
        request_files: Callable[[str], Iterable[Path]],
        per_file_only: bool = False,
    ) -> None:
        """``per_file_only``: every batch fsyncs the files it wrote, never one shared ``syncfs``
        (which does not reach the server of a FUSE filesystem such as GlusterFS)."""
        self.enabled = enabled
        self.per_file_only = per_file_only
        self._group_commit = GroupCommit(root)
        self._request_files = request_files
        self._current = threading.local()

    @contextlib.contextmanager
    def batch(self, *, shared: bool = True) -> Iterator[Batch]:
        """Open a unit of work in this thread; leaving it commits what is left to commit.

        A batch opened inside another joins it (the outer one commits).
        """
        outer: Batch | None = getattr(self._current, "batch", None)
        if outer is not None:
            yield outer
            return
        batch = Batch(
            self._group_commit,
            shared=shared and not self.per_file_only,
            enabled=self.enabled,
            request_files=self._request_files,
        )
        self._current.batch = batch
        try:
            yield batch
        finally:
            self._current.batch = None
            batch.commit()

    def must_sync(self, path: Path, *, durable: bool = True, new_entry: bool = False) -> bool:
        """Whether the store must fsync ``path`` now: False when fsync is off, the change may be
        undone by a power loss (``durable=False``), or a batch of this thread commits it later."""
        if not (self.enabled and durable):
            return False
        batch: Batch | None = getattr(self._current, "batch", None)
        if batch is not None:
            batch.note(path, new_entry=new_entry)
            return False
        return True


def fsync_path(path: Path) -> None:
    """fsync a file or directory by name (fsync applies to the inode, whichever fd names it)."""
    fd = open_nofollow(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
