"""A store on a shared filesystem, without one: mount detection, the start-up check, uncached reads.

The real thing (GlusterFS, several mounts) is in ``tests/fleet``; these run anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bghttp import ConfigError, record_log, shared_fs


def fake_mountinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: Path, fstype: str) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        f"90 22 0:50 / {point} rw,relatime shared:50 - {fstype} vm:/vol rw,user_id=0\n"
    )
    monkeypatch.setattr(shared_fs, "MOUNTINFO", mountinfo)
    shared_fs.check.cache_clear()


def fake_gluster_meta(point: Path, cmdline: str, translators: list[str]) -> None:
    (point / ".meta" / "graphs" / "active").mkdir(parents=True)
    (point / ".meta" / "cmdline").write_text(cmdline)
    for name in translators:
        (point / ".meta" / "graphs" / "active" / name).mkdir()


def test_a_store_under_a_local_mount_is_not_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_mountinfo(tmp_path, monkeypatch, tmp_path / "elsewhere", "fuse.glusterfs")
    assert shared_fs.check(tmp_path / "store") is None


def test_the_deepest_mount_holding_a_store_that_does_not_exist_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    point = tmp_path / "nfs"
    point.mkdir()
    fake_mountinfo(tmp_path, monkeypatch, point, "nfs4")
    mount = shared_fs.check(point / "a" / "store")
    assert mount is not None and mount.point == point and mount.fstype == "nfs4"


SAFE = "/usr/sbin/glusterfs --attribute-timeout=0 --entry-timeout=0 --negative-timeout=0 --volfile-id=/vol /m"


@pytest.mark.parametrize(
    ("cmdline", "translators", "named"),
    [
        (SAFE.replace("--attribute-timeout=0 ", ""), ["vol-quick-read"], "attribute-timeout=0"),
        (SAFE.replace("--entry-timeout=0 ", ""), ["vol-quick-read"], "entry-timeout=0"),
        (SAFE.replace("--negative-timeout=0", "--negative-timeout=5"), [], "negative-timeout=0"),
        (SAFE, ["vol-md-cache", "vol-quick-read"], "performance.stat-prefetch off"),
        (SAFE, ["vol-quick-read"], None),
    ],
)
def test_a_glusterfs_mount_is_checked_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cmdline: str, translators: list[str], named: str | None
) -> None:
    point = tmp_path / "gluster"
    fake_gluster_meta(point, cmdline, translators)
    fake_mountinfo(tmp_path, monkeypatch, point, "fuse.glusterfs")
    if named is None:
        assert shared_fs.check(point / "store") is not None
        return
    with pytest.raises(ConfigError, match=named) as refused:
        shared_fs.check(point / "store")
    assert "\n" not in str(refused.value) and str(point / "store") in str(refused.value)


def test_an_uncached_read_finds_the_last_version_and_the_true_end(tmp_path: Path) -> None:
    path = tmp_path / "r.log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for n in range(3000):  # past one 64 KiB read
            record_log.append(fd, {"n": n}, sync=False)
        os.pwrite(fd, b"deadbeef {", os.fstat(fd).st_size)  # a torn end: a crash cut the last append
        tail = record_log.read_uncached(path)
        assert tail.record == {"n": 2999} and tail.size == os.fstat(fd).st_size and tail.last_byte == b"{"
        # An append after the torn end starts a new line, at the end the read found.
        record_log.append(fd, {"n": 3000}, sync=False, tail=tail)
        assert record_log.read_uncached(path).record == {"n": 3000}
    finally:
        os.close(fd)


def test_an_uncached_read_of_an_empty_or_garbage_file(tmp_path: Path) -> None:
    empty, garbage = tmp_path / "empty", tmp_path / "garbage"
    empty.write_bytes(b"")
    garbage.write_bytes(b"not a record\nnor this\n")
    assert record_log.read_uncached(empty) == record_log.Tail(None, 0, None)
    with pytest.raises(record_log.CorruptRecord):
        record_log.read_uncached(garbage)
