"""A sync that fails under the CLI's write actions (issue 21, items 2 and 6): an update stands or raises.

``bghttp retry`` and ``bghttp cancel`` run under a seccomp filter that makes
``fsync``, ``fdatasync`` and ``syncfs`` fail with EIO. The status log's append
was written, its fsync failed, and the command said "cannot write ... EIO"
(exit 6) while the new version stayed in the file for every reader: a retry
left the request ``in_progress/queued`` under a token no message was ever
published for (the queue stayed empty) and every later ``retry`` was refused
as "in progress", so the request waited for ever; a cancel that said it failed
had cancelled.
"""

from __future__ import annotations

import errno
import resource
import subprocess
from pathlib import Path

import pika.exceptions
import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.models import Phase
from bghttp.store import FileStore
from tests import syscall_faults
from tests.cli.helpers import bghttp_command, cli_env
from tests.support import PROJECT_ROOT, queue_counts

pytestmark = [pytest.mark.rabbitmq]

ALL_SYNCS_FAIL = {"syncfs": errno.EIO, "fsync": errno.EIO, "fdatasync": errno.EIO}


@pytest.fixture(autouse=True)
def _needs_seccomp() -> None:
    if not syscall_faults.available():
        pytest.fail("libseccomp is not installed (.ci/run installs libseccomp2)")


def _cli_with_failing_syncs(settings: Settings, *args: str) -> tuple[int, str]:
    result = subprocess.run(
        syscall_faults.command(ALL_SYNCS_FAIL, [*bghttp_command(), *args]),
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(settings),
        cwd=PROJECT_ROOT,
    )
    return result.returncode, result.stderr


def _published(queue_name: str) -> int:
    try:
        return queue_counts(queue_name)[0]
    except pika.exceptions.ChannelClosedByBroker:
        return 0  # never declared: nothing was published


def test_a_retry_whose_status_sync_fails_leaves_the_request_as_it_ended(rabbitmq_settings: Settings) -> None:
    with BackgroundHttpClient(rabbitmq_settings) as client:
        client.get("http://127.0.0.1:9/never", request_id="replayed")
        assert client.cancel("replayed").status is RequestStatus.CANCELLED
    before = _published(rabbitmq_settings.queue_name)

    code, stderr = _cli_with_failing_syncs(rabbitmq_settings, "retry", "replayed")

    assert code == 6, stderr
    assert "Input/output error" in stderr
    store = FileStore(Path(rabbitmq_settings.store_dir))
    record = store.read_status("replayed")
    assert record is not None
    assert _published(rabbitmq_settings.queue_name) == before, "the retry published a message after all"
    # Refused, so nothing changed: the request is as it ended, and can be retried once the disk is fine.
    assert record.status is RequestStatus.CANCELLED, (record.status, record.phase, record.token)
    with BackgroundHttpClient(rabbitmq_settings) as client:
        assert client.retry("replayed").phase is Phase.QUEUED
    assert _published(rabbitmq_settings.queue_name) == before + 1


def test_a_cancel_whose_status_sync_fails_cancels_nothing(rabbitmq_settings: Settings) -> None:
    with BackgroundHttpClient(rabbitmq_settings) as client:
        client.get("http://127.0.0.1:9/never", request_id="kept")

    code, stderr = _cli_with_failing_syncs(rabbitmq_settings, "cancel", "kept")

    assert code == 6, stderr
    record = FileStore(Path(rabbitmq_settings.store_dir)).read_status("kept")
    assert record is not None
    assert record.status is RequestStatus.IN_PROGRESS, "a cancel that reported failure cancelled the request"
    with BackgroundHttpClient(rabbitmq_settings) as client:
        assert client.cancel("kept").status is RequestStatus.CANCELLED


def test_a_retry_that_was_published_is_not_reported_as_failed(rabbitmq_settings: Settings) -> None:
    """The replay is written and its message confirmed; only the ``published`` mark after it cannot be
    appended (the status log reaches a file-size limit). The retry was reported as failed (exit 6,
    "cannot write ... File too large") while its message was on the queue and the request ran."""
    with BackgroundHttpClient(rabbitmq_settings) as client:
        client.get("http://127.0.0.1:9/never", request_id="marked")
        assert client.cancel("marked").status is RequestStatus.CANCELLED
    log = FileStore(Path(rabbitmq_settings.store_dir))._path("status", "marked")
    lines = log.read_bytes().splitlines(keepends=True)
    # Room for the replay's version (a little longer than the cancel's), not for one more.
    limit = len(b"".join(lines)) + len(lines[-1]) + 200
    before = _published(rabbitmq_settings.queue_name)

    result = subprocess.run(
        [*bghttp_command(), "retry", "marked"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(rabbitmq_settings),
        cwd=PROJECT_ROOT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )

    record = FileStore(Path(rabbitmq_settings.store_dir)).read_status("marked")
    assert record is not None
    assert record.phase is Phase.QUEUED and record.replays == 1, "the replay's version was not written: no test"
    assert _published(rabbitmq_settings.queue_name) == before + 1
    assert result.returncode == 0, f"a retry that is on its way was reported as failed: {result.stderr}"


def test_a_submit_that_was_published_is_not_reported_as_failed(rabbitmq_settings: Settings) -> None:
    """The request is stored and durable, its message confirmed; only the ``published`` mark after it
    cannot be appended (the status log reaches a file-size limit). The submit said "cannot write ...
    File too large" (exit 6) while the request was on its way: a caller that submits again sends it twice."""
    limit = 515  # the request file (~320 bytes) and the first status version (~415) fit; a second version not
    before = _published(rabbitmq_settings.queue_name)

    result = subprocess.run(
        [*bghttp_command(), "post", "http://127.0.0.1:9/pay", "--id", "paid"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(rabbitmq_settings),
        cwd=PROJECT_ROOT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )

    record = FileStore(Path(rabbitmq_settings.store_dir)).read_status("paid")
    assert record is not None, f"not stored: no test ({result.stderr})"
    assert _published(rabbitmq_settings.queue_name) == before + 1
    assert result.returncode == 0, f"a submit that is on its way was reported as failed: {result.stderr}"
    assert result.stdout.strip() == "paid"


def test_a_recover_that_re_sent_a_request_says_so(rabbitmq_settings: Settings) -> None:
    """``bghttp recover`` publishes a request's new run, then cannot append its new token (a file-size
    limit). It said "cannot write ... File too large" (exit 6) after re-sending it, and went no further."""
    with BackgroundHttpClient(rabbitmq_settings) as client:
        client.get("http://127.0.0.1:9/never", request_id="lost-message")
    size = FileStore(Path(rabbitmq_settings.store_dir))._path("status", "lost-message").stat().st_size
    limit = size + 100  # no room for one more version
    before = _published(rabbitmq_settings.queue_name)

    result = subprocess.run(
        [*bghttp_command(), "--json", "recover"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(rabbitmq_settings),
        cwd=PROJECT_ROOT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )

    assert _published(rabbitmq_settings.queue_name) == before + 1
    assert result.returncode == 0, f"a recover that re-sent the request was reported as failed: {result.stderr}"
    assert '"recovered": 1' in result.stdout
