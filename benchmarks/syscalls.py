"""File-system syscalls and futex calls per message of one worker process, counted with strace.

    python -m benchmarks.syscalls [--count 1000] [--in-flight 16] [--fsync on|off] [--tree DIR]

Starts ``bghttp worker --processes 1`` with ``BGHTTP_MAX_IN_FLIGHT`` set, attaches
``strace -f -y`` to its one worker process (every thread), drains ``--count`` fast
GETs to the local target, detaches, and prints two numbers per message:

* file-system syscalls: every syscall that names a path (``openat``, ``rename``,
  ``unlink``, ``mkdir``, ``stat`` …) plus every syscall on a file descriptor that
  strace resolves to a path (``read``, ``write``, ``fstat``, ``fsync``, ``flock``,
  ``close`` …); calls on sockets, pipes, eventfds and epoll descriptors are not
  counted (they are the broker, the HTTP exchange and the event loop);
* futex calls: lock and condition hand-offs between threads.

``--tree DIR`` runs the worker from another source tree (``git archive REV | tar -x -C DIR``),
to count an older engine side by side. Needs ``strace`` (Debian's package) and root or ptrace rights.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bghttp import BackgroundHttpClient

from .infra import WorkerShape, bench_settings, load, worker_group
from .target import start_target
from .workloads import SUBMIT_CHUNK, wait_all_terminal

#: ``pid  name(fd<what>, ...`` as strace -f -y writes a call (also the first line of an unfinished one).
_CALL = re.compile(r"^\d+\s+(?:<\.\.\. )?(\w+)(?:\(| resumed>)(.*)$")
#: The first argument resolved by -y: ``3</path/to/file>`` or ``5<socket:[1234]>``.
_FD_ARG = re.compile(r"^(?:-?\d+|AT_FDCWD)<([^>]*)>")
#: Syscalls whose argument is a path name (strace's %file class, the ones Python uses).
_PATH_CALLS = frozenset({
    "open", "openat", "openat2", "stat", "lstat", "newfstatat", "statx", "access", "faccessat", "faccessat2",
    "rename", "renameat", "renameat2", "unlink", "unlinkat", "mkdir", "mkdirat", "rmdir", "link", "linkat",
    "symlink", "symlinkat", "readlink", "readlinkat", "chmod", "fchmodat", "chown", "fchownat", "truncate",
    "utimensat", "getcwd", "chdir",
})
#: The first quoted path of a call.
_PATH_ARG = re.compile(r'"([^"]*)"')
#: Device and kernel files (psutil's /proc reads, /dev/urandom) are not the store's work.
_NOT_STORE_PATHS = ("/dev/", "/proc/", "/sys/")


def classify(trace: Path) -> tuple[collections.Counter[str], int]:
    """(file-system syscalls by name, futex calls) in an ``strace -f -y`` output file."""
    files: collections.Counter[str] = collections.Counter()
    futex = 0
    for line in trace.read_text(errors="replace").splitlines():
        if "resumed>" in line:  # the second half of a call already counted at its start
            continue
        match = _CALL.match(line)
        if match is None:
            continue
        name, rest = match.groups()
        if name == "futex":
            futex += 1
        elif name in _PATH_CALLS:
            path = _PATH_ARG.search(rest)
            if path is None or not path.group(1).startswith(_NOT_STORE_PATHS):
                files[name] += 1
        else:
            fd = _FD_ARG.match(rest)
            if fd is not None and fd.group(1).startswith("/") and not fd.group(1).startswith(_NOT_STORE_PATHS):
                files[name] += 1
    return files, futex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--fsync", choices=("on", "off"), default="on")
    parser.add_argument("--tree", type=Path, help="run the worker from this source tree")
    args = parser.parse_args()
    strace = shutil.which("strace")
    if strace is None:
        raise SystemExit("strace is not installed (apt-get install strace)")
    shape = WorkerShape(processes=1, env=(("BGHTTP_MAX_IN_FLIGHT", str(args.in_flight)),), tree=args.tree)
    out = Path(tempfile.mkdtemp(prefix="bghttp-bench-strace-"))
    trace = out / "trace.txt"
    try:
        with start_target() as target, bench_settings(fsync=args.fsync == "on") as settings, worker_group(
            settings, shape=shape
        ) as group, BackgroundHttpClient(settings) as client:
            (worker_pid,) = group.worker_pids()
            tracer = subprocess.Popen(
                [strace, "-f", "-y", "-qq", "-o", str(trace), "-p", str(worker_pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # attached to every thread before the first message
            requests = [{"method": "GET", "url": target.small_url}] * args.count
            started = time.time()
            for offset in range(0, args.count, SUBMIT_CHUNK):
                client.submit_many(requests[offset : offset + SUBMIT_CHUNK])
            finished = wait_all_terminal(settings, args.count)
            time.sleep(0.5)  # the last acks
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=60)
        files, futex = classify(trace)
        total = sum(files.values())
        where = f" from {args.tree}" if args.tree else ""
        print(f"{args.count} fast GETs, 1 worker process{where}, BGHTTP_MAX_IN_FLIGHT={args.in_flight}, "
              f"BGHTTP_FSYNC={int(args.fsync == 'on')}, {args.count / (finished - started):,.0f} req/s under strace, "
              f"load {load()}")
        print(f"file-system syscalls per message: {total / args.count:.1f}")
        print(f"futex calls per message: {futex / args.count:.1f}")
        print("file-system syscalls by name, per message: " + ", ".join(
            f"{name} {count / args.count:.1f}" for name, count in files.most_common()))
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
