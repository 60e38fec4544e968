"""The README's quickstart, run verbatim in a fresh clone: a real worker, real RabbitMQ, a real server.

The code blocks between the ``--8<-- [start:quickstart]`` and
``--8<-- [end:quickstart]`` markers (the section docs/quickstart.md includes)
are taken from README.md as they are, so editing the README changes what is
tested. Shell blocks run in one bash script, in order; a Python block is saved
to a file and run there with ``python``. The only changes: the server's port
(8000 may be taken on a shared machine) and the environment, which gives the
run a store and a queue of its own.

The clone is ``git clone`` of the working tree's HEAD (commit first). It gets
no virtual environment of its own: its ``.venv`` is a link to the one running
the tests, and ``PYTHONPATH`` makes that environment import the clone's code.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import PROJECT_ROOT, RABBITMQ_URL, delete_queues, free_port, require_rabbitmq, unique_queue

README = PROJECT_ROOT / "README.md"
QUICKSTART_PORT = "8000"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def quickstart_blocks(readme: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block between the quickstart markers, in order."""
    start, end = readme.index("--8<-- [start:quickstart]"), readme.index("--8<-- [end:quickstart]")
    return [(match.group(1), match.group(2)) for match in BLOCK.finditer(readme[start:end])]


def quickstart_script(blocks: list[tuple[str, str]], workdir: Path) -> str:
    """One bash script: the shell blocks verbatim, each Python block run from a file."""
    # The test's own lines: stop at the first failure, and then stop the background jobs too.
    # set -m: job control as in a terminal, where `kill %N` signals the job's whole process group.
    lines = ["set -e -m", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for number, (language, code) in enumerate(blocks):
        if language == "sh":
            lines.append(code)
        elif language == "python":
            path = workdir / f"quickstart_{number}.py"
            path.write_text(code)
            lines.append(f"python {path}")
        else:
            raise AssertionError(f"a quickstart block in {language!r}: the test runs only sh and python")
    lines.append("wait")  # for what the quickstart stopped, as a terminal shows them end (not the trap's kill)
    return "\n".join(lines) + "\n"


def test_the_quickstart_has_a_shell_part_and_a_python_part() -> None:
    languages = [language for language, _ in quickstart_blocks(README.read_text())]
    assert "sh" in languages and "python" in languages


@pytest.mark.slow
@pytest.mark.rabbitmq
def test_readme_quickstart_works_verbatim_in_a_fresh_clone(tmp_path: Path) -> None:
    require_rabbitmq()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(PROJECT_ROOT), str(clone)], check=True, timeout=120)
    subprocess.run(["git", "checkout", "--quiet", head.stdout.strip()], cwd=clone, check=True)
    (clone / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)

    # The committed README, not the working tree's: the clone is what a new user gets.
    readme = (clone / "README.md").read_text()
    port = str(free_port())
    blocks = [
        (language, code.replace(f"127.0.0.1:{QUICKSTART_PORT}", f"127.0.0.1:{port}")
                       .replace(f"http.server {QUICKSTART_PORT}", f"http.server {port}"))
        for language, code in quickstart_blocks(readme)
    ]  # fmt: skip
    assert all(QUICKSTART_PORT not in code for _, code in blocks), "the quickstart's port is not where expected"
    script = quickstart_script(blocks, tmp_path)
    queue = unique_queue()
    env = {key: value for key, value in os.environ.items() if not key.startswith("BGHTTP_")}
    env.update(
        PYTHONPATH=str(clone),
        BGHTTP_BROKER_URL=RABBITMQ_URL,
        BGHTTP_STORE_DIR=str(tmp_path / "store"),
        BGHTTP_QUEUE=queue,
        BGHTTP_LOG_FORMAT="json",
    )
    imported = subprocess.run(
        ["bash", "-c", ". .venv/bin/activate && python -c 'import bghttp; print(bghttp.__file__)'"],
        cwd=clone, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert imported.stdout.strip() == str(clone / "bghttp" / "__init__.py")  # the clone's code runs
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        _stop_what_is_left(process.pid)
        delete_queues(queue)

    assert process.returncode == 0, (stdout, stderr[-4000:])
    out = stdout.splitlines()
    request_id = next(line.split()[0] for line in out if line.endswith(" completed (HTTP 200)"))
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), stdout
    assert any(line.startswith("HTTP/1.0 200 OK") for line in out), stdout  # `bghttp response`
    assert "# bghttp" in out, stdout  # the body's first line, from the shell and from Python
    assert out.count("# bghttp") == 2, stdout
    assert any(re.fullmatch(r"completed 200 \S+/responses/[0-9a-f]{32}\.body", line) for line in out), stdout
    assert stderr.count('"GET /README.md HTTP/1.1" 200') == 2, stderr[-4000:]
    # The quickstart's way to stop the worker lets it stop as SIGTERM does: a process that gets a second
    # SIGTERM (the group's, then its master's) quits at once, cutting its running attempts.
    assert "Killing worker process" not in stderr and "Stopping worker process" in stderr, stderr[-4000:]


def _stop_what_is_left(session: int) -> None:
    """The worker group the script started in the background: wait for its SIGTERM, then kill."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(session, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(session, signal.SIGKILL)
