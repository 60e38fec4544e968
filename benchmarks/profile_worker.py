"""Profile the worker's per-message path in-process: ``RequestRunner.run`` against the target server.

    python -m benchmarks.profile_worker [--count 2000] [--fsync on|off] [--top 25] [--store-dir DIR]

No broker and no Dramatiq: this isolates what bghttp itself does per message
(load the spec, claim, status writes, the HTTP call, streaming the body,
committing the response). It prints the wall time per message, how many
files each message writes and fsyncs, the file operations (system calls) per
message, and cProfile's top functions. ``--store-dir`` puts the store under DIR
(a shared mount, where each file operation is a network round trip).
"""

from __future__ import annotations

import argparse
import cProfile
import fcntl
import io
import os
import pstats
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bghttp import Settings
from bghttp.logs import configure_logging
from bghttp.store import FileStore
from bghttp.validation import prepare_request
from bghttp.worker.execution import build_http_client
from bghttp.worker.runner import RequestRunner

from .target import start_target


class _Counter:
    """Counts calls of a few store primitives (writes and fsyncs) while the runs go."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[name] = self.counts.get(name, 0) + 1
            return original(*args, **kwargs)

        setattr(owner, name, counted)


#: The file operations counted per message (each a round trip to the server on a shared filesystem).
FILE_OPERATIONS = ("open", "close", "read", "pread", "preadv", "write", "pwrite", "fsync", "stat", "fstat",
                   "replace", "rename", "unlink", "scandir", "mkdir")


def profile(url: str, count: int, fsync: bool, top: int, use_profiler: bool = True,
            store_root: Path | None = None) -> str:
    store_dir = Path(tempfile.mkdtemp(prefix="bghttp-bench-profile-", dir=store_root))
    try:
        return _profile(store_dir, url, count, fsync, top, use_profiler)
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)


def _profile(store_dir: Path, url: str, count: int, fsync: bool, top: int, use_profiler: bool) -> str:
    settings = Settings(broker_url="local", store_dir=store_dir, fsync=fsync)
    store = FileStore(store_dir, fsync=fsync)
    ids = []
    for _ in range(count):
        prepared = prepare_request("GET", url)
        store.create_request(prepared.spec)
        ids.append(prepared.spec.request_id)
    runner = RequestRunner(store, settings, build_http_client(), publish=lambda *a: None)
    counter = _Counter()
    counter.wrap(store, "_write_atomic")
    counter.wrap(store, "_write_status")
    for name in FILE_OPERATIONS:
        counter.wrap(os, name)
    counter.wrap(fcntl, "flock")
    profiler = cProfile.Profile()
    started = time.perf_counter()
    if use_profiler:
        profiler.enable()
    for request_id in ids:
        runner.run(request_id, 1)
    profiler.disable()
    elapsed = time.perf_counter() - started
    per = {name: round(value / count, 2) for name, value in sorted(counter.counts.items())}
    out = io.StringIO()
    out.write(f"{count} messages, BGHTTP_FSYNC={int(fsync)}: {elapsed / count * 1000:.3f} ms per message "
              f"({'profiled' if use_profiler else 'not profiled'}), per message: {per}\n")
    if not use_profiler:
        return out.getvalue()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--fsync", choices=("on", "off"), default="on")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-profile", action="store_true", help="only time the runs")
    parser.add_argument("--log-level", default="INFO", help="worker log level (JSON logs go to stderr)")
    parser.add_argument("--store-dir", type=Path, help="make the store under this directory (default: a temp dir)")
    args = parser.parse_args()
    configure_logging("json", args.log_level, force=True)
    with start_target() as target:
        print(profile(target.small_url, args.count, args.fsync == "on", args.top, not args.no_profile,
                      args.store_dir))


if __name__ == "__main__":
    main()
