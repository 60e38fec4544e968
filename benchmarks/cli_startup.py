"""How long ``bghttp ls`` takes to start, against a bare start of the same interpreter.

    python -m benchmarks.cli_startup [--runs 7]

Runs ``python -c pass`` and ``bghttp ls`` (the console script next to this
interpreter, else ``python -m bghttp.cli ls``) on an empty store, interleaved,
after one warm-up run of each (byte-code compiled), and prints the median wall
time of each and their ratio. The target (issue 21, item 17) is a ratio of at
most 4. What ``ls`` may import is kept by a structural test
(tests/cli/test_startup.py), not by this timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 4.0


def bghttp_ls_command() -> list[str]:
    script = Path(sys.executable).parent / "bghttp"
    return [str(script), "ls"] if script.exists() else [sys.executable, "-m", "bghttp.cli", "ls"]


def _seconds(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(runs: int) -> tuple[float, float]:
    """Median seconds of a bare start and of ``bghttp ls``, ``runs`` each."""
    with tempfile.TemporaryDirectory(prefix="bghttp-startup-") as scratch:
        store = Path(scratch) / "store"
        store.mkdir(mode=0o700)
        # The defaults a user gets (a RabbitMQ broker URL), but this empty store; byte code
        # is written (PYTHONDONTWRITEBYTECODE would compile every changed module on every run).
        env = {key: value for key, value in os.environ.items() if not key.startswith("BGHTTP_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["BGHTTP_STORE_DIR"] = str(store)
        bare, ls = [sys.executable, "-c", "pass"], bghttp_ls_command()
        _seconds(bare, env), _seconds(ls, env)  # warm-up: byte code, the page cache
        bare_times, ls_times = [], []
        for _ in range(runs):
            bare_times.append(_seconds(bare, env))
            ls_times.append(_seconds(ls, env))
    return statistics.median(bare_times), statistics.median(ls_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each command (7)")
    runs = parser.parse_args().runs
    bare, ls = measure(runs)
    ratio = ls / bare
    verdict = "within" if ratio <= TARGET_RATIO else "over"
    print(f"python -c pass: {bare * 1000:.1f} ms (median of {runs})")
    print(f"{' '.join(Path(part).name for part in bghttp_ls_command())}: {ls * 1000:.1f} ms (median of {runs})")
    print(f"ratio: {ratio:.2f}x ({verdict} the target of {TARGET_RATIO:g}x)")


if __name__ == "__main__":
    main()
