"""A small tmpfs of a test's own, and filling it up: a real full disk, with short writes at its edge."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import IN_CI

PAGE = 4096


@contextlib.contextmanager
def mounted_tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (mode 0700) at ``mountpoint``; unmounted when the block ends."""
    mountpoint.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        if IN_CI:
            pytest.fail(f"cannot mount a tmpfs in CI: {mounted.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def free_pages(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize // PAGE


def fill_leaving(path: Path, pages: int) -> Path:
    """Fill the filesystem of ``path`` with a file of its own, then free ``pages`` pages of it."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        chunk = b"\0" * PAGE
        while True:
            try:
                if os.write(fd, chunk) < PAGE:
                    break
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break
        size = os.fstat(fd).st_size // PAGE * PAGE
        os.ftruncate(fd, max(0, size - pages * PAGE))
    finally:
        os.close(fd)
    return filler
