"""A GlusterFS volume on this machine, mounted once per "host", for the fleet tests.

    python -m tests.fleet.gluster setup      # installs GlusterFS if missing; prints the mounts; leaves them up
    python -m tests.fleet.gluster status
    python -m tests.fleet.gluster teardown   # unmounts everything, stops and deletes the volumes

Needs root, Debian (``apt-get``) and ``/dev/fuse``. One volume (``bghttp-fleet``)
on a local brick, with the options a bghttp store needs (``performance.stat-prefetch
off``), mounted with ``attribute-timeout=0,entry-timeout=0,negative-timeout=0`` at
``/mnt/bghttp-fleet/<host>`` for each host in :data:`HOSTS`. Each mount is its own
``glusterfs`` FUSE client process with its own caches, as on separate machines;
a process of a "host" uses only its own mount as ``BGHTTP_STORE_DIR``.

Two more mounts show what bghttp refuses: ``plain`` (the same volume, mounted
with the default options: a second of attribute and entry caching) and
``cached`` (a second volume, ``bghttp-fleet-cached``, with the default
``performance.stat-prefetch on``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

VOLUME = "bghttp-fleet"
CACHED_VOLUME = "bghttp-fleet-cached"
BRICK_ROOT = Path("/srv/bghttp-fleet")
MOUNT_ROOT = Path("/mnt/bghttp-fleet")
HOSTS = ("client", "host-a", "host-b")
SAFE_OPTIONS = "attribute-timeout=0,entry-timeout=0,negative-timeout=0"
#: Volume options a bghttp store needs (bghttp checks them at start: ``bghttp/shared_fs.py``).
VOLUME_OPTIONS = {"performance.stat-prefetch": "off"}


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=120)


def missing_prerequisites() -> str | None:
    """Why the volume cannot be set up here, or None."""
    if os.geteuid() != 0:
        return "the fleet tests need root (glusterd, mount)"
    if not Path("/dev/fuse").exists():
        return "the fleet tests need /dev/fuse"
    if shutil.which("gluster") is None and shutil.which("apt-get") is None:
        return "GlusterFS is not installed and there is no apt-get to install it"
    return None


def install() -> None:
    if shutil.which("gluster") and shutil.which("mount.glusterfs"):
        return
    run("apt-get", "update", "-qq")
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "glusterfs-server", "glusterfs-client"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        capture_output=True,
        timeout=600,
    )


def glusterd_up() -> bool:
    return run("gluster", "--mode=script", "volume", "list", check=False).returncode == 0


def start_glusterd() -> None:
    if glusterd_up():
        return
    run("glusterd")
    deadline = time.monotonic() + 30
    while not glusterd_up():
        if time.monotonic() > deadline:
            raise RuntimeError("glusterd did not start")
        time.sleep(0.5)


def volumes() -> list[str]:
    return run("gluster", "--mode=script", "volume", "list").stdout.split()


def create_volume(name: str, options: dict[str, str]) -> None:
    if name not in volumes():
        brick = BRICK_ROOT / name
        brick.mkdir(parents=True, exist_ok=True)
        # ``force``: a brick on the root filesystem, and a host name that resolves to loopback.
        run("gluster", "--mode=script", "volume", "create", name, f"{socket.gethostname()}:{brick}", "force")
        for option, value in options.items():
            run("gluster", "--mode=script", "volume", "set", name, option, value)
    info = run("gluster", "--mode=script", "volume", "info", name).stdout
    if "Status: Started" not in info:
        run("gluster", "--mode=script", "volume", "start", name, "force")


def is_mounted(point: Path) -> bool:
    return any(line.split()[1] == str(point) for line in Path("/proc/mounts").read_text().splitlines())


def mount(volume: str, point: Path, options: str | None) -> None:
    if is_mounted(point):
        return
    point.mkdir(parents=True, exist_ok=True)
    extra = ["-o", options] if options else []
    run("mount", "-t", "glusterfs", *extra, f"{socket.gethostname()}:/{volume}", str(point))


def mount_point(host: str) -> Path:
    return MOUNT_ROOT / host


def store_dir(host: str) -> Path:
    """The store every host shares, as this host sees it."""
    return mount_point(host) / "store"


def setup() -> dict[str, Path]:
    """Install, start, create and mount (each step only if not done yet); return host -> mount point."""
    reason = missing_prerequisites()
    if reason:
        raise RuntimeError(reason)
    install()
    start_glusterd()
    create_volume(VOLUME, VOLUME_OPTIONS)
    create_volume(CACHED_VOLUME, {})
    mounts = {}
    for host in HOSTS:
        mount(VOLUME, mount_point(host), SAFE_OPTIONS)
        mounts[host] = mount_point(host)
    mount(VOLUME, mount_point("plain"), None)
    mount(CACHED_VOLUME, mount_point("cached"), SAFE_OPTIONS)
    return mounts


def is_set_up() -> bool:
    return all(is_mounted(mount_point(host)) for host in HOSTS)


def teardown() -> None:
    for host in (*HOSTS, "plain", "cached"):
        point = mount_point(host)
        if is_mounted(point) and run("umount", str(point), check=False).returncode != 0:
            run("umount", "-l", str(point), check=False)  # busy: detach it now, gone once unused
        if point.exists():
            point.rmdir()
    if MOUNT_ROOT.exists() and not any(MOUNT_ROOT.iterdir()):
        MOUNT_ROOT.rmdir()
    if shutil.which("gluster") is None or not glusterd_up():
        return
    present = volumes()
    for name in (VOLUME, CACHED_VOLUME):
        if name in present:
            run("gluster", "--mode=script", "volume", "stop", name, "force", check=False)
            run("gluster", "--mode=script", "volume", "delete", name, check=False)
    shutil.rmtree(BRICK_ROOT, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fleet.gluster", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["setup", "teardown", "status"])
    args = parser.parse_args(argv)
    if args.command == "setup":
        for host, point in setup().items():
            print(f"{host}: BGHTTP_STORE_DIR={point / 'store'}")
    elif args.command == "teardown":
        teardown()
    else:
        print("set up" if is_set_up() else "not set up")
        for host in (*HOSTS, "plain", "cached"):
            print(f"{host}: {'mounted' if is_mounted(mount_point(host)) else 'not mounted'} at {mount_point(host)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
