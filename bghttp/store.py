"""The file store: the record of truth for requests, statuses and responses.

Layout under the store root (directories 0700, files 0600)::

    requests/<id>.json        the request spec (method, URL, headers, ...)
    bodies/<id>.body          the request body, when there is one
    bodies/<id>.files/<n>     copies of multipart files
    status/<id>.log           the status record: a record log (see ``record_log``)
    responses/<id>.meta.log   the last response's metadata, a record log too
    responses/<id>.body       the last response's body
    locks/ids.<nn>.lock       the ID locks: creation and removal of an ID hold one
    removed/<digest>          an empty mark: this store removed the request (``delete``), so a
                              late message of it is dropped, not taken for another store's
                              (named by a digest: a removed ID leaves no file named after it)

Readers never see half a file that counts. A request file is created in place,
but counts only once its status record exists (the status record is written
last, and nothing reads a request without one); request bodies and response
bodies are written under another name and moved into place. The two records
that change (status, response metadata) are record logs: each change is
appended, and a reader ignores a line not yet complete. Rewriting them through
a temporary file created and freed an inode per change, the worker's largest
cost. Locks are ``flock`` on files that exist anyway: the request's claim on
``requests/<id>.json`` (never rewritten), its status lock on ``status/<id>.log``
(appended to; replaced by a compacted copy past 32 KiB, and a waiter then locks
the new file). ``_path`` is the
only place that joins a request ID into a path.

Ownership. Creating and removing an ID both hold its ID lock, so each sees the
other's work whole or not at all. Removal also holds the request's claim, so it
never runs while an attempt does, and every write of an attempt happens under
the claim: an attempt never writes into a request that is gone. A new request
gets a new ``generation`` (in its spec and its status record); a runner whose
spec is of another generation than the record it claimed runs nothing.

Reading never writes: the directories are created by the first write (a
submit), so a store on a read-only mount can be listed and read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import threading
import time
import zlib
from collections.abc import Callable, Hashable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from . import record_log, shared_fs
from .durability import Batch, Durability, fsync_path
from .errors import InvalidRequestId, RequestRunning, StoreError, UnknownRequest
from .held_files import HeldFiles, HeldStatus, read_to_end, still_linked
from .lifecycle import is_untouched, new_record
from .models import RequestSpec, StatusRecord
from .quoting import quoted
from .store_files import check_root, make_private_dirs, make_shared_dirs, open_nofollow, write_all

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

_LOCATIONS = {
    "request": ("requests", ".json"),
    "body": ("bodies", ".body"),
    "files": ("bodies", ".files"),
    "status": ("status", ".log"),
    "response": ("responses", ".meta.log"),
    "response_body": ("responses", ".body"),
    "response_part": ("responses", ".body.part"),
}
_DIRECTORIES = sorted({location for location, _ in _LOCATIONS.values()} | {"locks"})
#: Where ``delete`` marks the IDs it removed (made by the first removal).
REMOVED_DIRECTORY = "removed"
#: Every store directory ``check_root`` looks at: ``removed/`` too, whose old files gc deletes.
_CHECKED_DIRECTORIES = [*_DIRECTORIES, REMOVED_DIRECTORY]

#: ID locks are spread over this many lock files (one per ID would pile up forever).
ID_LOCK_STRIPES = 64
#: How often a removal that waits for a running attempt looks again.
CLAIM_POLL_SECONDS = 0.01


def is_valid_request_id(request_id: object) -> bool:
    """True if ``request_id`` may name a request (what :func:`validate_request_id` accepts)."""
    return isinstance(request_id, str) and bool(_REQUEST_ID.fullmatch(request_id)) and request_id not in {".", ".."}


def validate_request_id(request_id: object) -> str:
    """Return ``request_id`` if it is a safe file name, else raise InvalidRequestId."""
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise InvalidRequestId(f"request_id must be 1-128 characters of A-Z a-z 0-9 . _ -, got {quoted(request_id)}")
    if request_id in {".", ".."}:
        raise InvalidRequestId(f"request_id must not be {request_id!r}")
    return request_id


#: Why a file of JSON nested deeper than the parser recurses (edited by hand) cannot be read: a
#: ValueError, as for any invalid JSON, not the RecursionError no reader of the store expects.
_NESTED_TOO_DEEP = "JSON nested deeper than the parser recurses"


class FileStore:
    """Request, status and response files under one root directory."""

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = Path(root).absolute()
        self.fsync = fsync
        self._layout_ready = False  # nothing on disk is touched until the first write
        # On a filesystem several hosts mount, records are read around the client's caches
        # (see ``shared_fs``); a mount whose caches cannot be read around is refused here.
        self.shared = shared_fs.check(self.root) is not None
        check_store_root(self.root)
        # One syncfs for many writes does not reach a FUSE filesystem's server: a shared
        # store's batches fsync each file they wrote instead.
        self._durability = Durability(
            self.root, enabled=fsync, request_files=self._request_files, per_file_only=self.shared
        )
        self._held = threading.local()  # this thread's HeldFiles while a batch is open (a local store only)

    def _ensure_layout(self) -> None:
        """Create the store's directories (0700); called by writes only, once per instance."""
        if self._layout_ready:
            return
        try:
            for directory in _DIRECTORIES:
                (make_shared_dirs if self.shared else make_private_dirs)(self.root / directory)
        except OSError as error:
            raise StoreError(f"cannot create the store at {self.root}: {error}") from error
        check_root(self.root, _CHECKED_DIRECTORIES)  # a directory someone else made meanwhile
        self._layout_ready = True

    # ----------------------------------------------------------------- paths
    def _path(self, kind: str, request_id: str) -> Path:
        directory, suffix = _LOCATIONS[kind]
        return self.root / directory / (validate_request_id(request_id) + suffix)

    def request_path(self, request_id: str) -> Path:
        return self._path("request", request_id)

    def body_path(self, request_id: str) -> Path:
        return self._path("body", request_id)

    def files_dir(self, request_id: str) -> Path:
        return self._path("files", request_id)

    def response_body_path(self, request_id: str) -> Path:
        return self._path("response_body", request_id)

    def response_part_path(self, request_id: str) -> Path:
        return self._path("response_part", request_id)

    def request_file_path(self, request_id: str) -> Path:
        """Where the request is saved (what a submit's ``RequestInfo`` names)."""
        return self.request_path(request_id)

    def response_file_path(self, request_id: str) -> Path:
        """Where the last response's body is saved (what ``Response.response_file_path`` names)."""
        return self.response_body_path(request_id)

    def files_of(self, request_id: str) -> dict[str, Path]:
        """Where each file of a request is, by kind (``request``, ``status``, ``body`` ...), those that exist."""
        return {kind: path for kind in _LOCATIONS if (path := self._path(kind, request_id)).exists()}

    @property
    def location(self) -> str:
        return str(self.root)

    # ----------------------------------------------------------- durability
    @contextlib.contextmanager
    def batch(self, *, shared: bool = True) -> Iterator[Batch]:
        """A unit of work: this thread's writes inside skip their fsyncs, and the batch commits
        them at once when it is left (or earlier, by ``commit()``; see ``durability``).

        ``shared``: one filesystem sync shared with other threads' batches (many
        writes, many threads: the worker, a bulk submit); else an fsync of just
        the files the batch wrote (a few files, committed beside something else).
        On a local store the batch also keeps the request file and status log it
        uses open until it ends (``held_files``).
        """
        if self.shared or getattr(self._held, "files", None) is not None:
            with self._durability.batch(shared=shared) as batch:
                yield batch
            return
        files = self._held.files = HeldFiles()
        try:
            with self._durability.batch(shared=shared) as batch:
                yield batch
        finally:
            self._held.files = None
            files.close()

    def _held_files(self) -> HeldFiles | None:
        files: HeldFiles | None = getattr(self._held, "files", None)
        return files

    #: The worker's name for a shared batch (kept for callers of the first version).
    group_commit = batch

    def _request_files(self, request_id: str) -> list[Path]:
        """Every file and directory entry ``create_request`` makes for ``request_id`` that exists."""
        files = [self.request_path(request_id), self._path("status", request_id)]
        body, copies = self.body_path(request_id), self.files_dir(request_id)
        if body.exists():
            files.append(body)
        if copies.exists():
            files += [*copies.iterdir(), copies]
        return files

    # ------------------------------------------------------------ raw files
    def _write_file(self, path: Path, data: bytes, *, sync: bool, verify: bool = False) -> None:
        """Create ``path`` with all of ``data`` (or raise OSError), fsynced if ``sync``.

        FileExistsError if anything is at ``path`` (a symlink included: ``O_EXCL``
        never follows one). ``verify`` reads the file back and raises unless it
        holds exactly ``data``.
        """
        fd = open_nofollow(path, (os.O_RDWR if verify else os.O_WRONLY) | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            write_all(fd, data)
            if sync:
                os.fsync(fd)
            if verify and (os.fstat(fd).st_size != len(data) or os.pread(fd, len(data) + 1, 0) != data):
                raise OSError(errno.EIO, f"{path} does not read back as written")
        except BaseException:
            # Created by the O_EXCL open above: ours to take back. Only here: an open that
            # failed (EMFILE comes before EEXIST) says nothing about a file already at ``path``.
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        finally:
            os.close(fd)

    def _write_atomic(self, path: Path, data: bytes, *, compaction: bool = False) -> None:
        """Write ``data`` beside ``path`` and rename it over ``path``; StoreError and ``path`` untouched if not whole.

        A ``compaction`` copy replaces a record log with all its history: it is
        fsynced (when the store fsyncs) and read back before the rename, whatever
        batch is open, so the log is never replaced by less than a complete copy.
        """
        sync = self._durability.must_sync(path, new_entry=True) or (compaction and self._durability.enabled)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # a leftover of this thread's (pid reused) write that died
            self._write_file(tmp, data, sync=sync, verify=compaction)
            os.replace(tmp, path)
            if sync:
                fsync_path(path.parent)
        except OSError as error:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"cannot write {path}: {error}") from error

    def _write_new(self, path: Path, data: bytes) -> bool:
        """Create ``path`` with ``data`` unless it exists; False if it existed.

        Written in place, not through a temporary name: cheaper (no link or
        rename), but a reader may see the file while it is being written. Only
        used where nobody reads the file before a later write says it is whole:
        a request file before its status record exists, a record log (whose
        reader ignores a line not yet complete).
        """
        sync = self._durability.must_sync(path, new_entry=True)
        try:
            self._write_file(path, data, sync=sync)  # takes back a file it created and could not write
        except FileExistsError:
            return False
        except OSError as error:
            raise StoreError(f"cannot write {path}: {error}") from error
        try:
            if sync:
                fsync_path(path.parent)
        except OSError as error:  # the file was created above: ours
            with contextlib.suppress(OSError):
                path.unlink()
            raise StoreError(f"cannot write {path}: {error}") from error
        return True

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            with os.fdopen(open_nofollow(path, os.O_RDONLY), "rb") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise StoreError(f"cannot read {path}: {error}") from error
        except RecursionError:
            raise StoreError(f"cannot read {path}: {_NESTED_TOO_DEEP}") from ValueError(_NESTED_TOO_DEEP)
        if not isinstance(data, dict):
            raise StoreError(f"{path} does not hold a JSON object")
        return data

    @staticmethod
    def _open_private(path: Path) -> IO[bytes]:
        """Open a new file for writing with mode 0600 (a buffered writer: it writes all, or raises)."""
        return os.fdopen(open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")

    # ------------------------------------------------------------- requests
    def create_request(
        self,
        spec: RequestSpec,
        *,
        body: bytes | None = None,
        files: list[tuple[Path, str]] | None = None,
    ) -> StatusRecord | None:
        """Save a new request and its ``queued`` status record.

        ``files`` are (source path, stored name) pairs, copied in chunks. Returns
        the new status record, or None when the ID exists already (nothing is
        changed then). If anything fails, nothing of the new request is left.
        The record says ``published=False`` until the submit confirmed its
        first message (``lifecycle.mark_published``).
        """
        with self._id_lock(spec.request_id):
            return self._create_locked(
                dataclasses.replace(spec, generation=secrets.token_hex(8)), body=body, files=files
            )

    def _create_locked(
        self, spec: RequestSpec, *, body: bytes | None, files: list[tuple[Path, str]] | None
    ) -> StatusRecord | None:
        request_id = spec.request_id
        # The spec file reserves the ID (created exclusively) before the body is
        # written. The status record, written last, says the request is whole:
        # nothing reads a request whose status record does not exist yet.
        spec_bytes = json.dumps(spec.to_json()).encode()
        if not self._write_new(self.request_path(request_id), spec_bytes):
            if self._status_is_whole(request_id):
                return None
            # A request file without a status record, or with one whose first
            # version never got complete (empty, cut short, zero-filled), seen
            # under the ID lock, is no creation in progress: a submitter died
            # half-way (or a removal did). Nobody was told it was accepted;
            # clear it and take the ID.
            self._remove_request_files(request_id)
            if not self._write_new(self.request_path(request_id), spec_bytes):
                return None
        try:
            if body is not None:
                self._write_atomic(self.body_path(request_id), body)
            if files:
                self._copy_files(request_id, files)
            record = new_record(spec)
            self._write_status(record)
            return record
        except BaseException:
            self._remove_request_files(request_id)
            raise

    def _copy_files(self, request_id: str, files: list[tuple[Path, str]]) -> None:
        directory = self.files_dir(request_id)
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
            if directory.is_symlink():  # a planted one: the copies would go wherever it points
                raise OSError(errno.ELOOP, f"{directory} is a symlink")
            sync_directory = self._durability.must_sync(directory, new_entry=True)
            for source, stored_name in files:
                copy = directory / stored_name
                with open(source, "rb") as src, self._open_private(copy) as dst:
                    shutil.copyfileobj(src, dst, 1024 * 1024)
                    dst.flush()
                    if self._durability.must_sync(copy, new_entry=True):
                        os.fsync(dst.fileno())
            if sync_directory:
                fsync_path(directory)
                fsync_path(directory.parent)
        except OSError as error:
            raise StoreError(f"cannot copy multipart files into the store: {error}") from error

    def load_request(self, request_id: str) -> RequestSpec | None:
        held = self._held_files()
        path = self.request_path(request_id)
        data = self._read_json(path) if held is None else self._read_json_held(path, request_id, held)
        return None if data is None else RequestSpec.from_json(data)

    def _read_json_held(self, path: Path, request_id: str, held: HeldFiles) -> dict[str, Any] | None:
        """Read the request file through an fd the batch keeps for the claim that follows."""
        try:
            # Opened for writing (nothing is written), as ``claim`` opens it: that claim locks this fd.
            fd = open_nofollow(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        except OSError:
            return self._read_json(path)  # not writable here (a read-only mount): read it the plain way
        held.keep_request(request_id, fd)
        try:
            data = json.loads(read_to_end(fd))
        except (OSError, ValueError) as error:
            raise StoreError(f"cannot read {path}: {error}") from error
        except RecursionError:
            raise StoreError(f"cannot read {path}: {_NESTED_TOO_DEEP}") from ValueError(_NESTED_TOO_DEEP)
        if not isinstance(data, dict):
            raise StoreError(f"{path} does not hold a JSON object")
        return data

    def read_request_body(self, request_id: str) -> bytes:
        """The stored body of a request that has one; StoreError if it cannot be read."""
        path = self.body_path(request_id)
        try:
            with os.fdopen(open_nofollow(path, os.O_RDONLY), "rb") as handle:
                return handle.read()
        except OSError as error:
            raise StoreError(f"cannot read {path}: {error}") from error

    def open_request_file(self, request_id: str, stored_name: str) -> IO[bytes]:
        """Open the stored copy of a multipart file; StoreError if it cannot be opened."""
        if not stored_name or "/" in stored_name or stored_name in {".", ".."}:
            # The name comes from the request file, which may have been edited by hand.
            raise StoreError(f"{stored_name!r} is not the name of a stored file")
        path = self.files_dir(request_id) / stored_name
        try:
            return os.fdopen(open_nofollow(path, os.O_RDONLY), "rb")
        except OSError as error:
            raise StoreError(f"cannot read {path}: {error}") from error

    def _status_is_whole(self, request_id: str) -> bool:
        """Whether the status log holds a complete version (an unreadable one counts: a person must look)."""
        try:
            return self.read_status(request_id) is not None
        except StoreError:
            return True

    def status_path_exists(self, request_id: str) -> bool:
        return self._path("status", request_id).exists()

    # ------------------------------------------------------------- statuses
    def read_status(self, request_id: str) -> StatusRecord | None:
        held = self._held_files()
        if held is not None:
            status = self._held_status(held, request_id, locked=False)
            if status is not None:
                data = None if status.tail is None else status.tail.record
                return None if data is None else StatusRecord.from_json(data)
        data = self._read_record(self._path("status", request_id))
        return None if data is None else StatusRecord.from_json(data)

    def _held_status(self, held: HeldFiles, request_id: str, *, locked: bool) -> HeldStatus | None:
        """The batch's fd of the status log, read again only if its size moved since this thread saw it.

        ``locked``: hold the status lock (an ``flock`` the caller lets go). None if the
        log cannot be opened for writing here (the caller takes the plain path); a
        log that does not exist is held as an empty file (its tail says no record).
        """
        path = self._path("status", request_id)
        status = held.status_of(request_id)
        while True:
            if status is None:
                try:
                    fd = open_nofollow(path, os.O_RDWR)
                except FileNotFoundError:
                    return HeldStatus(request_id, -1, record_log.Tail(None, 0, None))
                except OSError:
                    return None
                status = held.hold_status(request_id, fd)
                if not locked:
                    # Just opened by its path, so it is the one there: no fstat for identity or size.
                    try:
                        status.tail = record_log.tail_from_start(fd)
                    except (OSError, record_log.CorruptRecord) as error:
                        held.drop_status()
                        raise StoreError(f"cannot read {path}: {error}") from error
                    if status.tail is not None:
                        return status
            try:
                if locked:
                    fcntl.flock(status.fd, fcntl.LOCK_EX)
                info = os.fstat(status.fd)
                if info.st_nlink == 0:  # compacted (renamed over) or removed: open the one at the path
                    held.drop_status()  # closing lets the lock go
                    status = None
                    continue
                if status.tail is None or status.tail.size != info.st_size:
                    status.tail = None
                    status.tail = record_log.tail_at(status.fd, info.st_size)
                return status
            except (OSError, record_log.CorruptRecord) as error:
                held.drop_status()
                raise StoreError(f"cannot read {path}: {error}") from error

    def status_stamp(self, request_id: str) -> Hashable | None:
        """(inode, size, mtime) of the status log: every version is an append, a compaction a new file.

        None on a shared store: another host's append may not show in the
        client's cached attributes yet, so the caller must read the record.
        """
        if self.shared:
            return None
        try:
            info = os.stat(self._path("status", request_id))
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StoreError(f"cannot read {self._path('status', request_id)}: {error}") from error
        return info.st_ino, info.st_size, info.st_mtime_ns

    def _write_status(self, record: StatusRecord) -> None:
        """The first version of a status record (the file is new, or replaces a leftover)."""
        path, line = self._path("status", record.request_id), record_log.encode(record.to_json())
        if not self._write_new(path, line):
            self._write_atomic(path, line)  # a leftover of a removal that did not finish

    def update_status(
        self,
        request_id: str,
        change: Callable[[StatusRecord], StatusRecord | None],
        *,
        durable: bool = True,
        amend_terminal: bool = False,
    ) -> StatusRecord:
        """Apply ``change`` to the current record under the request's status lock.

        ``change`` returns the new record, or None to leave it as it is. A
        terminal record is final: ``change`` is not called for one, unless
        ``amend_terminal`` (the worker recording how an attempt that was running
        when the request was cancelled ended, where ``change`` keeps the status;
        or ``lifecycle.replay`` starting a failed or cancelled request again).
        ``durable=False`` skips the fsync: for a change that a power loss may
        undo without harm (the record then shows the state before it).
        """
        path = self._path("status", request_id)
        held = self._held_files()
        status = None if held is None else self._held_status(held, request_id, locked=True)
        if held is not None and status is not None:
            return self._update_held(held, status, path, change, durable=durable, amend_terminal=amend_terminal)
        try:
            fd = self._open_locked(path)
        except FileNotFoundError:
            raise UnknownRequest(f"no request {request_id!r} in the store") from None
        except OSError as error:
            raise StoreError(f"cannot open {path}: {error}") from error
        try:
            tail = self._read_tail(path)
            data = self._read_record_fd(fd, path) if tail is None else tail.record
            current, new = _changed(data, request_id, change, amend_terminal=amend_terminal)
            if new is None:
                return current
            self._append_record(fd, path, new.to_json(), durable=durable, tail=tail)
            return new
        finally:
            os.close(fd)

    def _update_held(
        self,
        held: HeldFiles,
        status: HeldStatus,
        path: Path,
        change: Callable[[StatusRecord], StatusRecord | None],
        *,
        durable: bool,
        amend_terminal: bool,
    ) -> StatusRecord:
        """``update_status`` on the batch's held status log, whose lock ``_held_status`` took."""
        try:
            data = None if status.tail is None else status.tail.record
            current, new = _changed(data, status.request_id, change, amend_terminal=amend_terminal)
            if new is None:
                return current
            record = new.to_json()
            tail, status.tail = status.tail, None  # unknown until the append is whole
            size = self._append_record(status.fd, path, record, durable=durable, tail=tail)
            # What a reader of the file finds now: the line as written, decoded.
            status.tail = record_log.Tail(record_log.last_valid(record_log.encode(record)), size, b"\n")
            if new.is_terminal:
                # A final record ends the run's changes: closing lets the lock go (no unlock, no later close).
                held.drop_status()
            return new
        finally:
            if status.fd >= 0 and held.status is status:
                with contextlib.suppress(OSError):
                    fcntl.flock(status.fd, fcntl.LOCK_UN)

    # ------------------------------------------------------------- records
    def _open_locked(self, path: Path) -> int:
        """Open ``path`` and hold an exclusive ``flock`` on it until the fd is closed.

        A record log is replaced by a compacted copy now and then; whoever
        waited for the lock on the replaced file must lock the new one instead.
        """
        while True:
            fd = open_nofollow(path, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if self._is_at(fd, path):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # replaced while we waited: lock the file that is there now

    def _read_tail(self, path: Path) -> record_log.Tail | None:
        """A shared store's record, read around the client's caches (None: a local store reads its fd).

        Through an ``O_DIRECT`` fd of its own: the caller's fd is for appending, and an
        ``O_DIRECT`` write must be block-aligned on the server (GlusterFS passes the flag on).
        """
        if not self.shared:
            return None
        try:
            return record_log.read_uncached(path)
        except (OSError, record_log.CorruptRecord) as error:
            raise StoreError(f"cannot read {path}: {error}") from error

    def _read_record(self, path: Path) -> dict[str, Any] | None:
        if self.shared:
            try:
                tail = self._read_tail(path)
            except StoreError as error:
                if isinstance(error.__cause__, FileNotFoundError):
                    return None
                raise
            return None if tail is None else tail.record
        try:
            fd = open_nofollow(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise StoreError(f"cannot read {path}: {error}") from error
        try:
            return self._read_record_fd(fd, path, just_opened=True)
        finally:
            os.close(fd)

    @staticmethod
    def _read_record_fd(fd: int, path: Path, *, just_opened: bool = False) -> dict[str, Any] | None:
        """The latest version in the record log open at ``fd``. ``just_opened`` (not locked, local):
        read from its start, with no ``fstat`` for the size (``record_log.tail_from_start``)."""
        try:
            tail = record_log.tail_from_start(fd) if just_opened else None
            return record_log.read_last(fd) if tail is None else tail.record
        except (OSError, record_log.CorruptRecord) as error:
            raise StoreError(f"cannot read {path}: {error}") from error

    def _append_record(
        self, fd: int, path: Path, record: dict[str, Any], *, durable: bool = True, tail: record_log.Tail | None = None
    ) -> int:
        """Append a version (the caller holds the file's lock); compact a file grown too long.

        On a shared store the append goes at the end an uncached read found, and
        is flushed to the server before the caller lets the lock go (else the
        next host to take it could read the version before it). Its files are
        never compacted: another host could still open the replaced file.
        """
        try:
            if self.shared and tail is None:
                tail = record_log.read_uncached(path)
            # A shared store flushes every append to its server before the lock is let go
            # (else the next host to take the lock could read the version before it).
            sync = True if self.shared else self._durability.must_sync(path, durable=durable)
            size = record_log.append(fd, record, sync=sync, tail=tail)
        except (OSError, record_log.CorruptRecord) as error:
            raise StoreError(f"cannot write {path}: {error}") from error
        if size > record_log.COMPACT_BYTES and not self.shared:
            # A new file with the latest version only, renamed over the old one (which
            # ends with the same version, for readers that have it open). A copy that
            # cannot be written whole (a full disk) leaves the log as it is: the
            # version is appended already, and the next append tries again.
            with contextlib.suppress(StoreError):
                self._write_atomic(path, record_log.encode(record), compaction=True)
        return size

    # --------------------------------------------------------------- claims
    @contextlib.contextmanager
    def claim(self, request_id: str) -> Iterator[bool]:
        """Hold the request's claim for the ``with`` block; yields False if another holds it.

        The claim is an ``flock`` on the request file: the kernel releases it
        when the holding process dies, so a crashed worker never blocks a
        request. A request whose file is gone (removed) cannot be held by
        anyone, so its claim is granted. A claim is always on the file that is
        at the path now: one removed (and maybe created again) while we locked
        it is let go and the current one claimed instead.
        """
        path = self.request_path(request_id)
        held = self._held_files()
        if held is not None:
            with self._claim_held(request_id, path, held) as claimed:
                yield claimed
            return
        while True:
            fd = _open_for_claim(path, request_id)
            if fd is None:
                yield True
                return
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
                if self._is_at(fd, path):
                    yield True
                    return
            finally:
                os.close(fd)  # releases the flock

    @contextlib.contextmanager
    def _claim_held(self, request_id: str, path: Path, held: HeldFiles) -> Iterator[bool]:
        """``claim`` on the request file the batch holds (the one ``load_request`` read), kept after it."""
        fd = held.take_request(request_id)
        while True:
            if fd is None:
                fd = _open_for_claim(path, request_id)
                if fd is None:
                    yield True
                    return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                linked = still_linked(fd)
            except BlockingIOError:
                held.keep_request(request_id, fd)
                yield False
                return
            except BaseException:
                os.close(fd)
                raise
            if not linked:  # removed (and maybe created again) since it was opened
                os.close(fd)
                fd = None
                continue
            try:
                yield True
            finally:
                os.close(fd)  # releases the claim (the run reads the spec before it claims, not after)
            return

    # ------------------------------------------------------------ responses
    def commit_response(self, request_id: str, metadata: dict[str, Any]) -> Path:
        """Save the metadata of the streamed ``.part`` body, then move the body into place.

        Called under the request's claim, so there is one writer at a time. The
        metadata goes first: if it cannot be saved (StoreError), the previous
        response stays as it was, its body under its own metadata. If the body then
        cannot be moved into place, no response is left (the new metadata must not
        describe the previous body). A worker that dies between the two leaves the
        ``.part``: the next run moves it into place if it is whole (``move_response_body``).
        """
        path = self._path("response", request_id)
        if not self._write_new(path, record_log.encode(metadata)):  # not the first response of this request
            try:
                fd = open_nofollow(path, os.O_RDWR)  # readable too: an append looks at the file's last byte
            except OSError as error:
                raise StoreError(f"cannot write {path}: {error}") from error
            try:
                self._append_record(fd, path, metadata)
            finally:
                os.close(fd)
        return self.move_response_body(request_id)

    def move_response_body(self, request_id: str) -> Path:
        """Move the streamed ``.part`` into place as the response body: the second half of
        ``commit_response``, or the end of one whose worker died after the first half.

        If it cannot be moved, no response is left (its metadata must not describe
        the previous body): StoreError. Called under the request's claim.
        """
        body, part = self.response_body_path(request_id), self.response_part_path(request_id)
        try:
            if self._durability.must_sync(body, new_entry=True):
                fsync_path(part)
                os.replace(part, body)
                fsync_path(body.parent)
            else:
                os.replace(part, body)
        except OSError as error:
            self._remove_response(request_id)
            raise StoreError(f"cannot save the response body of {request_id}: {error}") from error
        held = self._held_files()
        if held is not None:
            held.part_committed = request_id
        return body

    def abandon_response(self, request_id: str) -> None:
        """No response is left: an answer's metadata was saved but its streamed ``.part`` body is not
        whole (its worker died between the two halves of ``commit_response``). The metadata must not
        stay to describe the previous answer's body, nor the cut body stay behind. Under the claim."""
        with contextlib.suppress(FileNotFoundError):
            self.response_part_path(request_id).unlink()
        self._remove_response(request_id)

    def _remove_response(self, request_id: str) -> None:
        """Remove the response's metadata and body (StoreError if one cannot be)."""
        body = self.response_body_path(request_id)
        for leftover in (self._path("response", request_id), body):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                raise StoreError(f"cannot remove {leftover}: {error}") from error
        self._durability.must_sync(body, new_entry=True)  # the removals go with the batch's commit

    def rewrite_final(self, request_id: str) -> None:
        """Write the status record, the response metadata (their latest versions) and the response
        body again, each as a new file fsynced before it replaces the old one; StoreError if one cannot be.
        (A shared store's record logs are never replaced: their latest versions are appended again.)

        For a run whose commit failed: after a failed writeback the kernel keeps the
        pages in its cache as clean (readers see them) and drops them later, so a
        sync afterwards returns 0 and writes nothing. Called under the claim.
        """
        with self._status_lock(request_id):
            for kind in ("status", "response"):
                path = self._path(kind, request_id)
                if self.shared:
                    self._append_again(path)
                    continue
                record = self._read_record(path)
                if record is not None:
                    self._write_atomic(path, record_log.encode(record), compaction=True)
        body = self.response_body_path(request_id)
        try:
            source = open_nofollow(body, os.O_RDONLY)
        except FileNotFoundError:
            return
        except OSError as error:
            raise StoreError(f"cannot read {body}: {error}") from error
        tmp = body.with_name(f"{body.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            copy = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                while chunk := os.read(source, 1 << 20):
                    write_all(copy, chunk)
                if self._durability.enabled:
                    os.fsync(copy)
            finally:
                os.close(copy)
            os.replace(tmp, body)
            if self._durability.enabled:
                fsync_path(body.parent)
        except OSError as error:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(f"cannot write {body}: {error}") from error
        finally:
            os.close(source)

    def _append_again(self, path: Path) -> None:
        """Append the latest version of the record log at ``path`` once more (flushed to the server):
        ``rewrite_final`` on a shared store, whose record logs are never replaced by a rename (another
        host may still open the replaced file for a second, ``shared_fs``)."""
        try:
            fd = open_nofollow(path, os.O_RDWR)
        except FileNotFoundError:
            return
        except OSError as error:
            raise StoreError(f"cannot write {path}: {error}") from error
        try:
            tail = self._read_tail(path)
            if tail is not None and tail.record is not None:
                self._append_record(fd, path, tail.record, tail=tail)
        finally:
            os.close(fd)

    def read_response_metadata(self, request_id: str) -> dict[str, Any] | None:
        return self._read_record(self._path("response", request_id))

    def open_response_part(self, request_id: str) -> IO[bytes]:
        """Open the file a response body is streamed into; ``commit_response`` moves it into place.

        Buffered as ``open()`` would, but without its ``fstat``, ``ioctl`` and
        ``lseek`` (3 syscalls of a small response's 7).
        """
        fd = open_nofollow(self.response_part_path(request_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        held = self._held_files()
        if held is not None:
            held.part_committed = None
        return io.BufferedWriter(_WholeWrites(fd))

    def partial_response_size(self, request_id: str) -> int | None:
        """Bytes of the response an attempt is streaming now; None if none is."""
        try:
            return self.response_part_path(request_id).stat().st_size
        except OSError:
            return None

    def discard_partial_response(self, request_id: str) -> None:
        held = self._held_files()
        if held is not None and held.part_committed == request_id:
            return  # this batch moved it into place and opened none since: there is none
        with contextlib.suppress(FileNotFoundError):
            self.response_part_path(request_id).unlink()

    # ------------------------------------------------------------- listing
    def request_ids(self) -> Iterator[str]:
        """IDs of every request with a status record, in no particular order."""
        try:
            entries = os.scandir(self.root / "status")
        except FileNotFoundError:
            return  # nothing was ever submitted to this store
        except OSError as error:
            raise StoreError(f"cannot list {self.root / 'status'}: {error}") from error
        with entries:
            for entry in entries:
                name = entry.name
                if name.endswith(".log"):  # temporary files end in .tmp
                    yield name[: -len(".log")]

    def request_file_ids(self) -> list[str]:
        """IDs of every request file, from one ``listdir`` (no stat, no read).

        A request file exists a moment before its status record (a creation in
        progress) and may stay a moment after it (a removal half-way): a caller
        reads the status and skips an ID that has none.
        """
        directory, suffix = _LOCATIONS["request"]
        try:
            names = os.listdir(self.root / directory)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise StoreError(f"cannot list {self.root / directory}: {error}") from error
        cut = len(suffix)
        return [name[:-cut] for name in names if name.endswith(suffix)]

    def created_times(self, request_ids: Iterable[str]) -> dict[str, float]:
        """When each request's file was written (its mtime: a request file is never rewritten), by ID;
        an ID whose file is gone is left out. With :meth:`request_file_ids`, a listing newest first that
        reads no record: for a reader that wants the newest few of very many (the dashboard)."""
        directory, suffix = _LOCATIONS["request"]
        times: dict[str, float] = {}
        try:
            directory_fd = os.open(self.root / directory, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return times
        except OSError as error:
            raise StoreError(f"cannot list {self.root / directory}: {error}") from error
        try:  # relative to the directory's fd: no path built and resolved per file (100,000s of them)
            for request_id in request_ids:
                if is_valid_request_id(request_id):
                    with contextlib.suppress(FileNotFoundError):
                        times[request_id] = os.stat(request_id + suffix, dir_fd=directory_fd).st_mtime
        finally:
            os.close(directory_fd)
        return times

    def status_change_times(self) -> list[tuple[float, str]]:
        """``(mtime, ID)`` of every status log, latest change first (one ``scandir``, a stat each, no read)."""
        directory, suffix = _LOCATIONS["status"]
        found: list[tuple[float, str]] = []
        try:
            entries = os.scandir(self.root / directory)
        except FileNotFoundError:
            return found
        except OSError as error:
            raise StoreError(f"cannot list {self.root / directory}: {error}") from error
        cut = len(suffix)
        with entries:
            for entry in entries:
                if entry.name.endswith(suffix):
                    try:
                        found.append((entry.stat().st_mtime, entry.name[:-cut]))
                    except FileNotFoundError:  # removed while listed
                        continue
        found.sort(reverse=True)
        return found

    def statuses(self) -> Iterator[StatusRecord]:
        for request_id in self.request_ids():
            with contextlib.suppress(StoreError):
                record = self.read_status(request_id)
                if record is not None:
                    yield record

    # ---------------------------------------------------------- ownership
    @contextlib.contextmanager
    def _id_lock(self, request_id: str) -> Iterator[None]:
        """Hold the lock that creation and removal of ``request_id`` both take.

        An ``flock`` on one of ``ID_LOCK_STRIPES`` files (per open file, so it
        excludes threads of one process as well as other processes, and the
        kernel drops it with a dead process). Taken before a claim or a status
        lock, never after one.
        """
        self._ensure_layout()
        stripe = zlib.crc32(validate_request_id(request_id).encode()) % ID_LOCK_STRIPES
        path = self.root / "locks" / f"ids.{stripe:02d}.lock"
        try:
            fd = _open_or_create(path)
        except OSError as error:
            raise StoreError(f"cannot open the lock file {path}: {error}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _is_at(self, fd: int, path: Path) -> bool:
        """Whether ``fd`` is the file at ``path`` now (not one removed or replaced meanwhile).

        A local store's files are only ever removed or renamed over, never linked
        twice: one still linked is the one at its path (one ``fstat``, no ``stat``).
        A network client may keep a removed file that is still open linked under
        another name, so a shared store compares inodes with the path's.
        """
        return _is_at_path(fd, path) if self.shared else still_linked(fd)

    @contextlib.contextmanager
    def _status_lock(self, request_id: str) -> Iterator[None]:
        """Hold the status lock while the block runs (nothing to hold if there is no record)."""
        path = self._path("status", request_id)
        try:
            fd = self._open_locked(path)
        except FileNotFoundError:
            yield
            return
        except OSError as error:
            raise StoreError(f"cannot open {path}: {error}") from error
        try:
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _owned_for_removal(self, request_id: str, wait: float) -> Iterator[None]:
        """Hold the ID lock, the claim and the status lock; wait up to ``wait`` s for a running attempt.

        Raises RequestRunning if an attempt still holds the claim after ``wait``.
        The ID lock is let go between tries, so waiting blocks no submit.
        """
        deadline = time.monotonic() + wait
        while True:
            with self._id_lock(request_id), self.claim(request_id) as claimed:
                if claimed:
                    with self._status_lock(request_id):
                        yield
                    return
            if time.monotonic() >= deadline:
                raise RequestRunning(f"request {request_id!r} is running and its attempt did not stop within {wait:g}s")
            time.sleep(CLAIM_POLL_SECONDS)

    def discard_unconfirmed(self, request_id: str, generation: str) -> bool:
        """Remove a request whose submit could not publish it; False if it must stay.

        It stays when it is not that submit's to remove any more: someone else
        confirmed a message for it (a second submitter, recovery), or a worker
        took it up (its message got through after all). True also when it is
        gone or replaced already.
        """
        try:
            with self._owned_for_removal(request_id, wait=0.0):
                record = self.read_status(request_id)
                if record is None or record.generation != generation:
                    return True
                if not is_untouched(record):
                    return False
                # Its message may have got through unconfirmed: dropped when it comes, not dead-lettered.
                self._mark_removed(request_id)
                self._remove_request_files(request_id)
                return True
        except RequestRunning:
            return False  # a worker is running it: its message got through

    # ------------------------------------------------------------ deletion
    def delete(
        self,
        request_id: str,
        *,
        wait: float = 0.0,
        only_if: Callable[[StatusRecord | None], bool] | None = None,
    ) -> bool:
        """Remove every file of a request; False if it did not exist or ``only_if`` said no.

        Never while an attempt runs it: this waits up to ``wait`` seconds for the
        attempt to end (cancel it first), then raises RequestRunning. ``only_if``
        sees the status record under the locks, so nothing can change it before
        the files go.
        """
        validate_request_id(request_id)
        with self._owned_for_removal(request_id, wait):
            if only_if is not None and not only_if(self.read_status(request_id)):
                return False
            existed = self.status_path_exists(request_id) or self.request_path(request_id).exists()
            if existed:
                self._mark_removed(request_id)
            self._remove_request_files(request_id)
            return existed

    def _mark_removed(self, request_id: str) -> None:
        """Leave the mark that says this store removed ``request_id`` (before its files go).

        Best effort: without it, a late message of the request is taken for
        another store's and dead-lettered with an error, which is loud, not lossy.
        """
        marks = self.root / REMOVED_DIRECTORY
        path = self._removal_mark(request_id)
        with contextlib.suppress(OSError):
            marks.mkdir(mode=0o700, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600))
            os.utime(path)  # gc prunes marks by age: the newest removal counts

    def was_removed(self, request_id: str) -> bool:
        """Whether this store removed ``request_id`` (and gc has not pruned the mark since)."""
        return os.path.lexists(self._removal_mark(request_id))

    def keep_owed_event(self, record: StatusRecord) -> None:
        """Keep the final ``record`` whose event could not be published, beside the removal marks, until a
        retried message of its request publishes it: a caller that saw it final may remove the request
        meanwhile, and submit its ID again (whose outcomes are kept beside it, not in its place).

        Written only when a publish failed (a mark with content costs a block per removal), best effort,
        pruned with the marks by gc.
        """
        kept = [old for old in self.owed_events(record.request_id) if old.outcome != record.outcome]
        self._write_owed(record.request_id, [*kept, record])

    def _write_owed(self, request_id: str, records: list[StatusRecord]) -> None:
        data = json.dumps([record.to_json() for record in records], separators=(",", ":")).encode()
        with contextlib.suppress(OSError, StoreError):  # best effort
            (self.root / REMOVED_DIRECTORY).mkdir(mode=0o700, exist_ok=True)
            self._write_atomic(self._owed_path(request_id), data)  # a reader never sees a list cut short

    def owed_events(self, request_id: str) -> list[StatusRecord]:
        """The final records ``keep_owed_event`` kept for ``request_id``, oldest first (none if unreadable)."""
        try:
            fd = open_nofollow(self._owed_path(request_id), os.O_RDONLY)
        except OSError:
            return []
        try:
            data = json.loads(read_to_end(fd))
            items = data if isinstance(data, list) else [data]  # a single record: kept by an earlier version
            return [StatusRecord.from_json(item) for item in items if isinstance(item, dict)]
        except (OSError, ValueError, KeyError, TypeError):
            return []
        finally:
            os.close(fd)

    def forget_owed_events(self, request_id: str, announced: Iterable[StatusRecord]) -> None:
        """The events of ``announced`` are out: drop them from what ``keep_owed_event`` kept."""
        gone = {record.outcome for record in announced}
        left = [record for record in self.owed_events(request_id) if record.outcome not in gone]
        if left:
            self._write_owed(request_id, left)
            return
        with contextlib.suppress(OSError):
            os.unlink(self._owed_path(request_id))

    def _owed_path(self, request_id: str) -> Path:
        return self._removal_mark(request_id).with_suffix(".owed")

    def _removal_mark(self, request_id: str) -> Path:
        digest = hashlib.sha256(validate_request_id(request_id).encode()).hexdigest()[:40]
        return self.root / REMOVED_DIRECTORY / digest

    def prune_removal_marks(self, older_than: float) -> int:
        """Forget removals older than ``older_than`` seconds (no message of them is left by then); the count."""
        cutoff = time.time() - older_than
        pruned = 0
        try:
            entries = os.scandir(self.root / REMOVED_DIRECTORY)
        except FileNotFoundError:
            return 0
        except OSError as error:
            raise StoreError(f"cannot list {self.root / REMOVED_DIRECTORY}: {error}") from error
        with entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        pruned += 1
        return pruned

    def _remove_request_files(self, request_id: str) -> None:
        # The status record goes first: a runner that finds the request file gone
        # gets its claim granted and must then find no record to run. (A crash
        # half-way leaves a request file without a record; the next submit of the
        # ID clears it, as does ``delete``.)
        for kind in ("status", "request", "body", "response", "response_body", "response_part"):
            with contextlib.suppress(FileNotFoundError):
                self._path(kind, request_id).unlink()
        shutil.rmtree(self.files_dir(request_id), ignore_errors=True)


class _WholeWrites(io.RawIOBase):
    """A file open for writing at ``fd`` whose ``write`` writes all it is given or raises
    (``store_files.write_all``). Not seekable: a ``BufferedWriter`` over it asks the kernel nothing."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed file")
        view = memoryview(data).cast("B")
        write_all(self._fd, view)
        return len(view)

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.close(self._fd)


def check_store_root(root: Path) -> None:
    """ConfigError (one line) for a store root or directory that another user owns or may write,
    or a store directory that is a symlink: another user could have us write through a symlink."""
    check_root(root, _CHECKED_DIRECTORIES)


def _open_for_claim(path: Path, request_id: str) -> int | None:
    """The request file opened to be claimed; None when it is gone (a removed request: anyone may "hold" it).

    Opened for writing (nothing is written): on NFS, flock becomes a byte-range
    lock, and an exclusive one needs a file open for writing.
    """
    try:
        return open_nofollow(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StoreError(f"cannot open the request file of {request_id}: {error}") from error


def _open_or_create(path: Path) -> int:
    """``open(path, O_RDWR | O_CREAT)``, which GlusterFS may fail with EEXIST when another
    host creates the same file at the same moment (measured: 1-2 in 60 simultaneous
    creations); the file exists then, so opening it again succeeds."""
    for _ in range(9):
        try:
            return open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileExistsError:
            continue
        except FileNotFoundError:
            # Its directory, just made by another host, may not be visible here yet (a
            # FUSE client's cached "no such entry"): look it up afresh and try again.
            # Seen once in 200 simultaneous creations of a new store on two GlusterFS mounts.
            with contextlib.suppress(OSError):
                os.stat(path.parent)
            time.sleep(0.01)
    return open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o600)


def _is_at_path(fd: int, path: Path) -> bool:
    """Whether ``fd`` is the file at ``path`` now, compared by inode (for a shared store)."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (at_path.st_dev, at_path.st_ino)


def _changed(
    data: dict[str, Any] | None,
    request_id: str,
    change: Callable[[StatusRecord], StatusRecord | None],
    *,
    amend_terminal: bool,
) -> tuple[StatusRecord, StatusRecord | None]:
    """(the record ``data`` holds, the record ``change`` makes of it, or None when nothing is to be written).

    A final record is changed only when ``amend_terminal`` says so.
    """
    if data is None:
        raise UnknownRequest(f"no request {request_id!r} in the store")
    current = StatusRecord.from_json(data)
    if current.is_terminal and not amend_terminal:
        return current, None
    new = change(current)
    if new is None or new == current:
        return current, None
    return current, new
