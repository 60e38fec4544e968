"""``store_files.write_all``: a short write is continued, a write that makes no progress raises."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from bghttp import store_files


def test_short_writes_are_continued_to_the_last_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write, real_pwrite = os.write, os.pwrite
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: real_pwrite(fd, bytes(data[:5]), offset))
    data = bytes(range(256)) * 3
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        store_files.write_all(fd, data)
        store_files.write_all(fd, data, len(data))
        assert os.pread(fd, 4 * len(data), 0) == data * 2
    finally:
        os.close(fd)


def test_a_write_of_nothing_is_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError) as raised:
            store_files.write_all(fd, b"abc")
        assert raised.value.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_symlink_is_never_opened(tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(b"secret")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(OSError) as raised:
        store_files.open_nofollow(tmp_path / "link", os.O_WRONLY | os.O_TRUNC)
    assert raised.value.errno == errno.ELOOP
    assert (tmp_path / "target").read_bytes() == b"secret"
