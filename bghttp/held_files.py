"""The files one unit of work keeps open: the request file it read and claims, the status log it updates.

Why: a worker's run read the request file, claimed it, read the status record
and changed it three times (running, sent, the outcome), and each of those
opened, locked, checked, read and closed its file again: about 40 file-system
syscalls of the 69 a message cost (``benchmarks/syscalls.py``). Kept open for
the unit of work (the store's ``batch()``, which a worker run is), the request
file is opened once for its spec and its claim, and the status log once for
every read and change; what this thread wrote or read last is remembered with
the file's size, so a change reads the log again only when its size moved
(another process appended: a client's cancel), and appends at the known end.

Only on a local store. It relies on what a local filesystem's kernel shows at
once: a file removed or renamed over while held here has ``st_nlink == 0`` (an
NFS client renames a removed file that is still open aside instead, and keeps
it linked), and another process's append shows in ``fstat`` (a network
filesystem's client may answer from its cache). A shared store takes the old
path (``shared_fs``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

from .record_log import Tail


@dataclasses.dataclass
class HeldStatus:
    """A status log held open, and what this thread last saw in it (None: read it again)."""

    request_id: str
    fd: int
    tail: Tail | None = None


class HeldFiles:
    """At most one request file and one status log per thread's unit of work."""

    def __init__(self) -> None:
        self._request: tuple[str, int] | None = None
        self.status: HeldStatus | None = None
        #: The request whose streamed response this unit moved into place, none opened since.
        self.part_committed: str | None = None

    def take_request(self, request_id: str) -> int | None:
        """The held request file of ``request_id`` (now the caller's to close or give back), if any."""
        held, self._request = self._request, None
        if held is None:
            return None
        if held[0] == request_id:
            return held[1]
        _close(held[1])
        return None

    def keep_request(self, request_id: str, fd: int) -> None:
        if self._request is not None and self._request[1] != fd:
            _close(self._request[1])
        self._request = (request_id, fd)

    def status_of(self, request_id: str) -> HeldStatus | None:
        status = self.status
        return status if status is not None and status.request_id == request_id else None

    def hold_status(self, request_id: str, fd: int) -> HeldStatus:
        self.drop_status()
        self.status = HeldStatus(request_id, fd)
        return self.status

    def drop_status(self) -> None:
        if self.status is not None:
            _close(self.status.fd)
            self.status = None

    def close(self) -> None:
        self.take_request("")
        self.drop_status()


#: A request file is read in one ``pread`` of this many bytes (a larger one in more).
READ_CHUNK = 64 * 1024


def read_to_end(fd: int) -> bytes:
    """The whole file open at ``fd``, without an ``fstat`` for its size.

    A read of a local regular file returns less than asked only at its end, so a
    short read ends it (an empty one is not needed).
    """
    chunks = []
    offset = 0
    while True:
        chunk = os.pread(fd, READ_CHUNK, offset)
        chunks.append(chunk)
        offset += len(chunk)
        if len(chunk) < READ_CHUNK:
            return b"".join(chunks)


def still_linked(fd: int) -> bool:
    """Whether the file open at ``fd`` still has a name (on a local store: is the one at its path)."""
    return os.fstat(fd).st_nlink > 0


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


__all__ = ["HeldFiles", "HeldStatus", "read_to_end", "still_linked"]
