"""A worker process ends with its master: within a few seconds of a ``kill -9`` of ``bghttp worker``.

Dramatiq's master starts the worker processes (and the metrics exposition
process) and forwards SIGTERM to them; killed with SIGKILL (the OOM killer, an
impatient operator) it forwards nothing, and its children ran on without it:
they kept taking messages, and the next ``bghttp worker`` failed on the metrics
port an orphan still held. Each child calls :func:`end_with_parent` when it
starts: the kernel sends it SIGTERM when its parent dies (Linux's
``PR_SET_PDEATHSIG``), which starts Dramatiq's own graceful stop (consumers
stop, prefetched messages go back), and a watcher thread ends the process
:data:`GRACE_SECONDS` later whatever is still running (an unfinished attempt is
closed as interrupted by the next worker that takes its message). The watcher
alone also covers a kernel without prctl and a parent that died before it.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time

from ..logs import get_logger

#: Seconds an orphaned worker process gives its running attempts before it exits.
GRACE_SECONDS = 1.5
#: How often the watcher looks at the parent.
POLL_SECONDS = 0.25
#: Exit code of a process that ended because its master was gone.
EXIT_ORPHANED = 1
_PR_SET_PDEATHSIG = 1


def end_with_parent() -> bool:
    """In a child process of Dramatiq's master, arrange to end when the master dies; False elsewhere."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return False  # not a Dramatiq child (a library user's own process): nothing to watch
    master = parent.pid
    if multiprocessing.get_start_method() == "forkserver":
        master = os.getppid()  # the fork server, which ends with the master
    by_kernel = _ask_kernel(signal.SIGTERM)
    threading.Thread(target=_watch, args=(master, by_kernel), name="bghttp-orphan-watch", daemon=True).start()
    return True


def _ask_kernel(sig: signal.Signals) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)``: the kernel signals this process when its parent ends (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch(master: int, by_kernel: bool) -> None:
    # A dead parent's children are re-parented (to init or a subreaper) at once,
    # even before anyone reaps the parent: so the parent pid is the test, not kill(pid, 0).
    while os.getppid() == master:
        time.sleep(POLL_SECONDS)
    with contextlib.suppress(Exception):  # a log pipe to the dead master may be broken
        get_logger(pid=os.getpid()).error("worker_master_gone", master_pid=master, exit_in_s=GRACE_SECONDS)
    if not by_kernel:  # a second SIGTERM would make Dramatiq exit at once
        os.kill(os.getpid(), signal.SIGTERM)  # Dramatiq's graceful stop, as the kernel would have
    time.sleep(GRACE_SECONDS)
    os._exit(EXIT_ORPHANED)


__all__ = ["GRACE_SECONDS", "end_with_parent"]
