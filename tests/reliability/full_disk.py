"""A small tmpfs of a test's own, and filling it up: a real full disk, with short writes at its edge."""

from __future__ import annotations

import contextlib
import dataclasses
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


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


@dataclasses.dataclass(frozen=True)
class FailingDisk:
    """An ext4 filesystem on a loop device whose backing file lives on a small tmpfs (``backing``)."""

    mountpoint: Path
    backing: Path
    device: str

    def remount(self) -> None:
        """Unmount and mount again, as after a power cut: the page cache goes, what is on the disk stays."""
        unmounted = _run("umount", str(self.mountpoint))
        assert unmounted.returncode == 0, unmounted.stderr
        mounted = _run("mount", "-o", "errors=continue", self.device, str(self.mountpoint))
        assert mounted.returncode == 0, mounted.stderr


@contextlib.contextmanager
def failing_disk(base: Path) -> Iterator[FailingDisk]:
    """An ext4 mount whose writes fail at writeback (EIO) once its backing tmpfs is filled (``fill_leaving``)."""
    with mounted_tmpfs(base / "backing", "12m") as backing:
        image = backing / "disk.img"
        with open(image, "wb") as handle:
            handle.truncate(64 << 20)  # sparse: its blocks take tmpfs pages only as they are written
        attached = _run("losetup", "--find", "--show", str(image))
        if attached.returncode != 0:
            if IN_CI:
                pytest.fail(f"cannot attach a loop device in CI: {attached.stderr}")
            pytest.skip(f"no loop device here: {attached.stderr.strip()}")
        device = attached.stdout.strip()
        mountpoint = base / "ext4"
        mountpoint.mkdir()
        try:
            made = _run("mkfs.ext4", "-q", "-O", "^has_journal", "-E", "lazy_itable_init=1,nodiscard", device)
            assert made.returncode == 0, made.stderr
            mounted = _run("mount", "-o", "errors=continue", device, str(mountpoint))
            assert mounted.returncode == 0, mounted.stderr
            try:
                yield FailingDisk(mountpoint, backing, device)
            finally:
                _run("umount", "-l", str(mountpoint))
        finally:
            _run("losetup", "-d", device)
