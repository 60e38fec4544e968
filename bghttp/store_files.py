"""The store's file operations that every write and open goes through.

* :func:`write_all` writes every byte or raises: write(2) on a regular file may
  write less than asked without an error (a file-size limit, ``RLIMIT_FSIZE``
  or systemd's ``LimitFSIZE=``; a nearly full filesystem). A count that was
  ignored stored a 300,000-byte body as its first 100,000 bytes.
* :func:`open_nofollow` opens with ``O_NOFOLLOW``: a symlink planted where a
  store file belongs is refused (``ELOOP``), never written through.
* :func:`make_private_dirs` creates missing directories 0700 whatever the umask.
* :func:`check_root` refuses a store root another user could change under us.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

from .errors import ConfigError


def write_all(fd: int, data: bytes | memoryview, offset: int | None = None) -> None:
    """Write all of ``data`` to ``fd`` (at ``offset``, else at the file position), or raise OSError.

    A short write is continued; the write that then cannot go on raises (ENOSPC,
    EFBIG). A write of 0 bytes is taken as a full disk rather than looped on.
    """
    view = memoryview(data)
    while view:
        written = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, f"a write stopped after {len(data) - len(view)} of {len(data)} bytes")
        view = view[written:]
        if offset is not None:
            offset += written


def open_nofollow(path: str | os.PathLike[str], flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symlink at ``path`` (ELOOP instead) and is closed on exec."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700 whatever the umask (existing ones are left as they are).

    mkdir first, look later (as ``Path.mkdir(parents=True)``): a lookup of a
    directory that another host is about to create may leave this host's
    GlusterFS client believing it missing for a moment after that host made it.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        return  # made by someone else (meanwhile, maybe): checked like any existing directory
    except FileNotFoundError:
        if path.parent == path:
            raise
        make_private_dirs(path.parent)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            return
    # mkdir's mode is masked by the umask; chmod through an fd that is surely this directory.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def make_shared_dirs(path: Path, seconds: float = 5.0) -> None:
    """``make_private_dirs`` on a filesystem other hosts mount, until ``path`` can be looked up here.

    Two GlusterFS clients making one new directory at once can leave one of them
    unable to find it for a moment: its mkdir says it exists, and a lookup or a
    file created in it fails with ENOENT (about once in 100 new stores made by two
    hosts at once). Making and looking again until it is found ends that.
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            make_private_dirs(path)
            os.stat(path)
            return
        except FileNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def check_root(root: Path, directories: list[str]) -> None:
    """Refuse (ConfigError, one line) a store root or store directory another user could change.

    Each that exists must be a real directory (not a symlink), owned by this
    process's user, and writable by nobody else (its group and others). Else
    another local user could swap a directory or plant a symlink in it and
    have this process (often root, holding ``Authorization`` headers) write
    through it. A store shared by several users is not supported: its files
    are 0600 to their creator anyway.
    """
    uid = os.geteuid()
    _check_path_to(root, uid)
    for path in [root, *(root / name for name in directories)]:
        try:
            # The root as configured may be a symlink (the operator's choice); the store's own directories not.
            info = os.stat(path) if path == root else os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError as error:
            raise ConfigError(f"BGHTTP_STORE_DIR {root}: cannot inspect {path}: {error}") from error
        problem = _problem(info, uid)
        if problem is not None:
            raise ConfigError(f"BGHTTP_STORE_DIR {root}: {path} {problem}; refusing to use it")


def _check_path_to(root: Path, uid: int) -> None:
    """Refuse a root another user could swap: one under a directory that user owns or may
    write (unless sticky, like /tmp), or reached through that user's symlink. Such a user
    could rename the checked store away while we run and put a symlink in its place; the
    ``O_NOFOLLOW`` opens guard only the last component. As ssh's StrictModes: every
    directory from ``/`` to the root (as configured and as resolved) is ours or root's."""
    for path in [*reversed(root.parents), root, *reversed(Path(os.path.realpath(root)).parents)]:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue  # created by us, private (make_private_dirs)
        except OSError as error:
            raise ConfigError(f"BGHTTP_STORE_DIR {root}: cannot inspect {path}: {error}") from error
        if info.st_uid not in (uid, 0):
            kind = "a symlink owned" if stat.S_ISLNK(info.st_mode) else "owned"
            raise ConfigError(
                f"BGHTTP_STORE_DIR {root}: {path} is {kind} by another user (uid {info.st_uid}), "
                "who could swap the store; refusing to use it"
            )
        writable_by_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if path != root and stat.S_ISDIR(info.st_mode) and writable_by_others and not info.st_mode & stat.S_ISVTX:
            raise ConfigError(
                f"BGHTTP_STORE_DIR {root}: {path} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}), "
                "who could swap the store; refusing to use it"
            )


def _problem(info: os.stat_result, uid: int) -> str | None:
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory"
    if info.st_uid != uid:
        return f"is owned by another user (uid {info.st_uid}; this process runs as uid {uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o}; make it 0700)"
    return None
