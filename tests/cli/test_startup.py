"""The reading commands start without the broker, HTTP and logging stacks (issue 21, item 17).

Structural, not timed: a fresh interpreter runs ``ls``, ``status``, ``response``
and ``wait`` through ``bghttp.cli.main`` and reports which modules it loaded.
``benchmarks/cli_startup.py`` measures the time this saves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bghttp.models import Phase, RequestStatus
from bghttp.store import FileStore
from bghttp.validation import prepare_request
from tests.support import PROJECT_ROOT

#: What a reading command must not load: the broker client, the HTTP stack, asyncio, structlog.
HEAVY = ("dramatiq", "pika", "httpx", "httpcore", "h11", "asyncio", "structlog", "psutil")

RUN_AND_REPORT = """
import json, sys
from bghttp.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
loaded = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"codes": codes, "loaded": loaded}), file=sys.stderr)
"""


def _completed_request_with_response(store_dir: Path) -> str:
    store = FileStore(store_dir, fsync=False)
    prepared = prepare_request("GET", "http://127.0.0.1:9/x", request_id="done")
    assert store.create_request(prepared.spec) is not None
    with store.open_response_part("done") as part:
        part.write(b"hello")
    store.commit_response("done", {"status_code": 200, "headers": [["Content-Type", "text/plain"]], "size": 5})
    store.update_status(
        "done", lambda r: r.evolve(status=RequestStatus.COMPLETED, phase=Phase.DONE, completed_at=time.time())
    )
    return "done"


def _run(commands: list[list[str]], env: dict[str, str]) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", RUN_AND_REPORT, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stderr.strip().splitlines()[-1])
    return report


def test_reading_commands_load_no_broker_http_asyncio_or_structlog(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    request_id = _completed_request_with_response(store_dir)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BGHTTP_STORE_DIR": str(store_dir)}
    commands = [["ls"], ["--json", "ls"], ["status", request_id], ["response", request_id], ["wait", request_id]]

    report = _run(commands, env)

    assert report["codes"] == [0] * len(commands)
    assert sorted(set(HEAVY) & set(report["loaded"])) == []  # type: ignore[arg-type]
    assert "bghttp" in report["loaded"]  # type: ignore[operator]


def test_a_submitting_command_still_loads_what_it_needs(tmp_path: Path) -> None:
    """The check above can fail: a command that builds a client loads the broker stack."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BGHTTP_STORE_DIR": str(tmp_path / "store")}
    report = _run([["--local", "get", "http://example.com/ x"]], env)  # refused (a space), after the client's import
    assert report["codes"] == [2]
    assert {"dramatiq", "pika"} <= set(report["loaded"])  # type: ignore[arg-type]


def test_import_bghttp_loads_none_of_them_until_a_name_is_used() -> None:
    code = (
        "import sys, bghttp; before = {n.split('.')[0] for n in sys.modules}; bghttp.BackgroundHttpClient;"
        " after = {n.split('.')[0] for n in sys.modules}; print(sorted(before & set(sys.argv[1:])),"
        " sorted(after & set(sys.argv[1:])))"
    )
    result = subprocess.run([sys.executable, "-c", code, *HEAVY], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.strip().split("] [")
    assert before == "["
    assert "dramatiq" in after and "pika" in after


def test_deferred_logging_prints_the_first_record_as_configured_logging_would() -> None:
    code = """
import logging, sys
from bghttp.cli.deferred_logging import configure_logging_on_first_record
configure_logging_on_first_record("json", "WARNING")
loaded_before = "structlog" in sys.modules
logging.getLogger("pika").info("not shown")
from bghttp.logs import get_logger
get_logger(request_id="r1").info("not_shown_either")
get_logger(request_id="r1").warning("store_slow", took_ms=5)
logging.getLogger("pika").warning("pika says")
print(loaded_before, file=sys.stdout)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [(line["event"], line["level"]) for line in lines] == [("store_slow", "warning"), ("pika says", "warning")]
    assert lines[0]["request_id"] == "r1" and lines[0]["took_ms"] == 5
