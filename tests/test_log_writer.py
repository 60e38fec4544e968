"""The one log writer: records from many threads, a forked child and a multiprocessing child all reach stderr,
the last ones too, and no handler lock is taken on the logging threads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import logging, multiprocessing, os, sys, threading
    from bghttp.logs import configure_logging, get_logger

    configure_logging("json", "INFO")
    root = logging.getLogger()
    assert [type(h).__name__ for h in root.handlers] == ["_HandOff"], root.handlers
    # A lock taken on a logging thread would show here: the hand-off must never acquire it.
    taken_on = []
    class WatchedLock:
        def __init__(self): self.lock = threading.RLock()
        def acquire(self, *a, **k):
            taken_on.append(threading.current_thread().name)
            return self.lock.acquire(*a, **k)
        def release(self): self.lock.release()
        def _at_fork_reinit(self): self.lock = threading.RLock()
    root.handlers[0].lock = WatchedLock()

    def many(n):
        log = get_logger(thread=n)
        for i in range(50):
            log.info("line", i=i)
    threads = [threading.Thread(target=many, args=(n,), name=f"logging-{n}") for n in range(20)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not [name for name in taken_on if name.startswith("logging-")], taken_on

    def child():
        get_logger().info("from_multiprocessing_child")
    process = multiprocessing.get_context("fork").Process(target=child)
    process.start(); process.join()

    pid = os.fork()
    if pid == 0:
        get_logger().info("from_forked_child")
        sys.exit(0)
    os.waitpid(pid, 0)
    get_logger().info("last_line")
    """
)


def test_every_record_is_written_once_by_the_one_writer() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    lines = [e for e in events if e["event"] == "line"]
    assert len(lines) == 20 * 50
    assert len({(e["thread"], e["i"]) for e in lines}) == 20 * 50
    names = [e["event"] for e in events]
    assert names.count("from_multiprocessing_child") == 1
    assert names.count("from_forked_child") == 1
    assert names[-1] == "last_line"
