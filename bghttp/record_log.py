"""Record logs: every version of one small JSON record, appended to one file.

Why not rewrite the record through a temporary file and ``os.replace``? On ext4
each such write creates an inode and frees another, which costs 20–700 µs of
CPU on the machines we measured, while appending to an open file costs ~10 µs.
A status record changes two or three times per attempt, and those rewrites
were the largest part of a worker's time (see ``benchmarks/RESULTS.md``).

Format: one line per version, ``<crc32 of the JSON, 8 hex digits> <JSON object>\\n``
(the JSON is ASCII with no raw newline). The current version is the last line
whose checksum matches; a file with no complete line yet has no version. A
reader racing an append, or a file whose end a crash tore, sees an incomplete
or bad last line; it is skipped, so the version before it is current, exactly
as if that append had not happened. The next append after a torn end starts
with a newline, so the fragment stays a line of its own and never swallows it.

Appends must be serialized by the caller (the store holds the request's status
lock, or its claim). A file past ``COMPACT_BYTES`` is replaced by the store
with a new file holding only its latest version, written aside and renamed
over it; a reader that opened the old file still finds that same latest
version at its end. (Shrinking the file in place was tried: a reader racing
the rewrite and the truncate could read a torn first line and nothing else.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import mmap
import os
import zlib
from typing import Any

from .store_files import open_nofollow, write_all

#: A file is replaced by one holding only its latest version once it grows past this size.
COMPACT_BYTES = 32 * 1024
#: Readers look for the last version in this many trailing bytes first.
TAIL_BYTES = 64 * 1024
_CHECKSUM_DIGITS = 8


class CorruptRecord(ValueError):
    """The file has content but no valid version."""


def encode(record: dict[str, Any]) -> bytes:
    """One version as a line of the log."""
    payload = json.dumps(record, separators=(",", ":")).encode("ascii")
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def read_last(fd: int) -> dict[str, Any] | None:
    """The latest version in the open file ``fd``; None for an empty file."""
    return tail_at(fd, os.fstat(fd).st_size).record


def tail_at(fd: int, size: int) -> Tail:
    """The latest version in the open file ``fd`` whose size is ``size``, and its last byte."""
    if size == 0:
        return Tail(None, 0, None)
    window = min(size, TAIL_BYTES)
    data = os.pread(fd, window, size - window)
    last_byte = data[-1:] if len(data) == window else None  # None: the file shrank (read again to append)
    record = last_valid(data)
    if record is None and window < size:  # the record is longer than the window
        data = _read_all(fd)
        record = last_valid(data)
    if record is None:
        if b"\n" not in data.strip(b"\0"):
            return Tail(None, size, last_byte)  # the first version is being written, or a crash cut it
        raise CorruptRecord("no valid record in the file")
    return Tail(record, size, last_byte)


def tail_from_start(fd: int) -> Tail | None:
    """``tail_at`` for a file just opened (not locked) on a local store: one read from its start, no ``fstat``.

    A read of a local regular file returns less than asked only at its end, so a
    short read is the whole file. None if the file is longer than ``TAIL_BYTES``
    (then ``tail_at`` with its size).
    """
    data = os.pread(fd, TAIL_BYTES, 0)
    if len(data) == TAIL_BYTES:
        return None
    record = last_valid(data)
    if record is None and b"\n" in data.strip(b"\0"):
        raise CorruptRecord("no valid record in the file")
    return Tail(record, len(data), data[-1:] or None)


def last_valid(data: bytes) -> dict[str, Any] | None:
    """The last complete line of ``data`` with a matching checksum, decoded."""
    end = data.rfind(b"\n")
    while end > 0:
        start = data.rfind(b"\n", 0, end) + 1
        record = _decode(data[start:end])
        if record is not None:
            return record
        end = start - 1
    return None


def _decode(line: bytes) -> dict[str, Any] | None:
    if len(line) <= _CHECKSUM_DIGITS + 1 or line[_CHECKSUM_DIGITS : _CHECKSUM_DIGITS + 1] != b" ":
        return None
    payload = line[_CHECKSUM_DIGITS + 1 :]
    try:
        if int(line[:_CHECKSUM_DIGITS], 16) != zlib.crc32(payload):
            return None
        record = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser recurses
        return None
    return record if isinstance(record, dict) else None


@dataclasses.dataclass(frozen=True)
class Tail:
    """What a read under the file's lock (or an uncached one) found: the latest version, the file's size
    and its last byte (None: unknown, the next append starts with a newline)."""

    record: dict[str, Any] | None
    size: int
    last_byte: bytes | None


def read_uncached(file: str | os.PathLike[str] | int) -> Tail:
    """The latest version in the file at a path (or an fd opened ``O_DIRECT``), read around the client's caches.

    For a store on a filesystem shared by several hosts (see ``shared_fs``): a
    client there may cache the file's size and pages, so ``read_last`` could
    miss a line appended through another host. Here the file is opened with
    ``O_DIRECT`` (so every read goes to the server) and read to its end, never
    trusting a size. Buffers and offsets are page-aligned, as ``O_DIRECT``
    requires on block devices; FUSE and NFS accept any. A filesystem that
    refuses ``O_DIRECT`` is read the ordinary way.
    """
    if isinstance(file, int):
        data = _read_direct(file)
    else:
        try:
            fd = open_nofollow(file, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
        except OSError as error:
            if error.errno != errno.EINVAL:
                raise
            fd = open_nofollow(file, os.O_RDONLY)
        try:
            data = _read_direct(fd)
        finally:
            os.close(fd)
    record = last_valid(data)
    if record is None and b"\n" in data.strip(b"\0"):
        raise CorruptRecord("no valid record in the file")
    return Tail(record, len(data), data[-1:] or None)


def _read_direct(fd: int) -> bytes:
    buffer = mmap.mmap(-1, TAIL_BYTES)  # page-aligned
    chunks = []
    offset = 0
    with buffer:
        while True:
            count = os.preadv(fd, [buffer], offset)
            chunks.append(buffer[:count])
            offset += count
            if count < TAIL_BYTES:  # the end of the file (the next offset would not be aligned)
                return b"".join(chunks)


def append(fd: int, record: dict[str, Any], *, sync: bool, tail: Tail | None = None) -> int:
    """Append ``record`` to the open file ``fd`` (opened for reading and writing, not O_APPEND).

    Returns the new size. A file whose end a crash tore (part of a line, or
    zeros) gets a newline first: the fragment becomes a bad line of its own that
    readers skip, instead of the prefix of this line, which would then fail its
    checksum and be lost. ``tail``, from ``read_uncached`` under the same lock,
    gives the file's real end where ``fstat`` may answer from a cache.
    """
    line = encode(record)
    if tail is not None:
        size, last = tail.size, tail.last_byte
    else:
        size = os.fstat(fd).st_size
        last = _last_byte(fd, size) if size else None
    if size and last != b"\n":
        line = b"\n" + line
    try:
        write_all(fd, line, size)
        if sync:
            os.fsync(fd)
    except BaseException:
        # An append that raises must not stand: a version written whose fsync failed is
        # read by everyone until a power cut takes it (a replay that said "cannot write"
        # left its request queued under a token no message was published for). Cut back.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise
    return size + len(line)


def _last_byte(fd: int, size: int) -> bytes | None:
    """The file's last byte; None if ``fd`` was opened write-only (then an empty line is the safe choice)."""
    try:
        return os.pread(fd, 1, size - 1)
    except OSError as error:
        if error.errno == errno.EBADF:
            return None
        raise


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
