"""Review of attack21d: ``mark_published`` that swallows a failed append where the mark is needed.

The ``published`` mark is what keeps a failing first submitter from taking back
a request someone else confirmed (``discard_unconfirmed`` removes only an
untouched request). Process A stores a request and waits for a broker that
never answers; process B submits the same ID to a healthy RabbitMQ under a
file-size limit, so its ``published`` mark cannot be appended. B was told
"accepted" (``mark_published`` never raises); A then failed and removed the
request B's caller holds an answer for: its message was dropped as "removed".
"""

from __future__ import annotations

import dataclasses
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from bghttp import Settings
from tests.conftest import settings_env
from tests.support import PROJECT_ROOT, SilentBroker, wait_until, worker_env

pytestmark = [pytest.mark.rabbitmq]

SUBMIT = """
import sys
from bghttp import BackgroundHttpClient
try:
    with BackgroundHttpClient(on_conflict="return") as client:
        client.get(sys.argv[1], request_id=sys.argv[2])
except Exception as error:
    print("failed:", type(error).__name__, error, flush=True)
    sys.exit(1)
print("accepted", flush=True)
"""


def _submitter(settings: Settings, url: str, request_id: str, limit: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SUBMIT, url, request_id],
        cwd=PROJECT_ROOT,
        env=worker_env({**settings_env(settings)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=None if limit is None else (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))),
    )


def test_a_second_submitter_whose_mark_cannot_be_written_does_not_say_accepted_for_a_request_taken_back(
    rabbitmq_settings: Settings, silent_broker: SilentBroker
) -> None:
    url = "http://127.0.0.1:9/pay"
    status = Path(rabbitmq_settings.store_dir) / "status" / "dup.log"
    silent = dataclasses.replace(rabbitmq_settings, broker_url=silent_broker.url(socket_timeout="3", stack_timeout="4"))
    a = _submitter(silent, url, "dup")
    try:
        wait_until(status.exists, timeout=30)
        limit = status.stat().st_size + 20  # no room for one more version of the status log
        b = _submitter(rabbitmq_settings, url, "dup", limit=limit)
        b_output, _ = b.communicate(timeout=60)
        a_output, _ = a.communicate(timeout=60)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    assert "failed" in a_output, f"A did not fail: no test ({a_output})"
    if b.returncode == 0:
        assert status.exists(), f"B was told accepted, A took the request back ({b_output.strip()}; {a_output})"
