"""Stores on a filesystem that several hosts mount: which one it is, and whether it is safe.

A network or FUSE filesystem caches file attributes, directory entries and
file contents in each client. Measured with two mounts of one GlusterFS volume
(``benchmarks/RESULTS.md``, "Several machines"): a line appended and fsynced
through one mount was invisible through the other for about a second to a
reader that used ``fstat`` + ``pread``, even under the writer's ``flock``; a
file renamed over or removed through one mount was still opened (the old one)
through the other for a second. ``O_EXCL``, ``flock`` and directory listings
were always current.

So on such a store the record logs are read around the client's caches
(``record_log.read_uncached``: ``O_DIRECT``, to the end of the file, no cached
size), every append is flushed to the server before its lock is let go, and a
record log is never replaced by a rename. Directory entries cannot be read
around the cache from user space, so for GlusterFS the entry and attribute
caches must be off: :func:`check` refuses a mount that has them, with the
option to change.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from pathlib import Path

from .errors import ConfigError

#: Filesystem types (as in /proc/self/mountinfo) whose clients cache what other hosts wrote.
SHARED_TYPES = ("fuse.glusterfs", "nfs", "nfs4", "ceph", "fuse.ceph-fuse", "fuse.cephfs")
#: GlusterFS client options (``mount -o``) that must be 0 for a bghttp store, and why.
GLUSTER_MOUNT_OPTIONS = {
    "attribute-timeout": "the size of a record log appended on another host would be a second old",
    "entry-timeout": "a request file removed or replaced on another host would still open for a second",
}
#: Off by default; when set, a request created on another host would look missing to a worker.
GLUSTER_NEGATIVE_TIMEOUT = "negative-timeout"
MOUNTINFO = Path("/proc/self/mountinfo")


@dataclasses.dataclass(frozen=True)
class Mount:
    point: Path
    fstype: str
    source: str

    @property
    def shared(self) -> bool:
        return self.fstype in SHARED_TYPES


def mount_of(path: Path) -> Mount | None:
    """The mount holding ``path`` (or, if it does not exist yet, its nearest existing parent)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    real = os.path.realpath(path)
    try:
        lines = MOUNTINFO.read_text().splitlines()
    except OSError:
        return None  # not Linux, or no /proc: treated as a local store
    best: Mount | None = None
    for line in lines:
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        point = _unescape(fields[4])
        if (real == point or real.startswith(point.rstrip("/") + "/")) and (
            best is None or len(point) >= len(str(best.point))
        ):
            best = Mount(Path(point), fields[dash + 1], _unescape(fields[dash + 2]))
    return best


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return field.encode().decode("unicode_escape") if "\\" in field else field


@functools.lru_cache(maxsize=32)
def check(root: str | Path) -> Mount | None:
    """The shared mount holding the store ``root``, or None for a local one.

    Raises ConfigError (one line naming the option) for a GlusterFS mount whose
    caches would let a host act on a record another host already changed.
    """
    mount = mount_of(Path(root))
    if mount is None or not mount.shared:
        return None
    if mount.fstype == "fuse.glusterfs":
        _check_glusterfs(mount, Path(root))
    return mount


def _check_glusterfs(mount: Mount, root: Path) -> None:
    """GlusterFS shows its client's command line and translator graph under ``<mount>/.meta``."""
    meta = mount.point / ".meta"
    try:
        cmdline = (meta / "cmdline").read_text()
        translators = os.listdir(meta / "graphs" / "active")
    except OSError:
        return  # no meta translator (an old or a patched client): nothing to check against
    for option, why in GLUSTER_MOUNT_OPTIONS.items():
        if f"--{option}=0" not in cmdline:
            raise ConfigError(
                f"BGHTTP_STORE_DIR {root}: the GlusterFS mount {mount.point} needs the mount option "
                f"{option}=0 (else {why})"
            )
    negative = re.search(rf"--{GLUSTER_NEGATIVE_TIMEOUT}=([0-9.]+)", cmdline)
    if negative is not None and float(negative.group(1)) != 0:
        raise ConfigError(
            f"BGHTTP_STORE_DIR {root}: the GlusterFS mount {mount.point} needs the mount option "
            f"{GLUSTER_NEGATIVE_TIMEOUT}=0 (else a request created on another host would look missing)"
        )
    if any(name.endswith("-md-cache") for name in translators):
        raise ConfigError(
            f"BGHTTP_STORE_DIR {root}: the GlusterFS volume {mount.source} needs "
            "'gluster volume set <volume> performance.stat-prefetch off' (its metadata cache would show "
            "a record log's size of a second ago)"
        )
