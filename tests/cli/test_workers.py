"""``bghttp workers``, and ``status``/``wait`` saying when no live worker serves a request's queue and store.

Heartbeats are real records: from a real worker group, or written by the
library's own writer as another host would (a hostile host name, a clock two
minutes ahead, a worker that died).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bghttp import BackgroundHttpClient, Settings
from bghttp.heartbeats import HeartbeatWriter, WorkerState
from tests.cli.conftest import Cli
from tests.cli.helpers import assert_one_line_error, bghttp_command, cli_env, run_cli
from tests.support import PROJECT_ROOT, WorkerProcess, wait_until

HOSTILE_HOST = "evil\x1b]52;c;SGVsbG8=\x07\u202ehost"


def plant(settings: Settings, *, host: str, pid: int, queue: str | None = None, **state: object) -> Path:
    """A heartbeat record as a worker on ``host`` would write it now."""
    writer = HeartbeatWriter(
        settings.store_dir,
        queue=settings.queue_name if queue is None else queue,
        broker="amqp://guest:guest@rabbit.internal:5672/",
        state=lambda: WorkerState(**state),  # type: ignore[arg-type]
        host=host,
        pid=pid,
    )
    assert writer.beat()
    return writer.path


def shift(path: Path, *, clock_by: float = 0.0, written_ago: float = 0.0) -> None:
    """Make a record's clock ``clock_by`` s off its file time, and the file ``written_ago`` s old."""
    record = json.loads(path.read_text())
    written = time.time() - written_ago
    record["clock"] = written + clock_by
    path.write_text(json.dumps(record))
    os.utime(path, (written, written))


@pytest.mark.rabbitmq
def test_workers_lists_live_and_stale_workers_escaped_and_as_json(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess], cli: Cli
) -> None:
    settings = dataclasses.replace(rabbitmq_settings, heartbeat_interval=0.5)
    start_worker(settings)
    wait_until(lambda: (settings.store_dir / "workers").is_dir() and any((settings.store_dir / "workers").iterdir()))
    plant(settings, host=HOSTILE_HOST, pid=7, in_flight=2, taken=5, completed=3, failed=1)
    shift(plant(settings, host="dead-host", pid=8), written_ago=3600)

    table = cli("workers")
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout and "\u202e" not in table.stdout and "\x07" not in table.stdout
    assert "evil\\x1b]52;c;SGVsbG8=\\x07\\u202ehost" in table.stdout
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["HOST", "PID", "QUEUE", "STATE"]
    assert [line.split()[3] for line in lines[1:]] == ["live", "live", "stale"]  # stale ones last
    assert "dead-host" in lines[-1] and "60m ago" in lines[-1]
    assert "guest" not in table.stdout and "rabbit.internal:5672" in table.stdout
    assert table.stderr == ""

    document = json.loads(cli("workers", "--json").stdout)
    workers = document["workers"]
    assert len(workers) == 3
    hostile = next(w for w in workers if w["pid"] == 7)
    assert hostile["host"] == HOSTILE_HOST  # JSON stays exact
    assert (hostile["in_flight"], hostile["taken"], hostile["completed"], hostile["failed"]) == (2, 5, 3, 1)
    assert [w["stale"] for w in workers if w["host"] == "dead-host"] == [True]
    assert {w["queue"] for w in workers} == {settings.queue_name}


def test_workers_warns_about_clocks_more_than_a_second_off(tmp_path: Path) -> None:
    settings = Settings(broker_url="local", store_dir=tmp_path / "store", queue_name="q")
    shift(plant(settings, host="fast", pid=1), clock_by=120)
    shift(plant(settings, host="fine", pid=2), clock_by=0.2)
    shift(plant(settings, host="dead-and-slow", pid=3), clock_by=-300, written_ago=600)  # stale: not compared
    for args in (("workers",), ("workers", "--json")):
        result = run_cli(settings, *args)
        assert result.returncode == 0, result.stderr
        assert result.stderr.splitlines() == ["warning: the clock of worker fast pid 1 is 120.0 s ahead of the store's"]
    assert json.loads(run_cli(settings, "workers", "--json").stdout)["clock_warnings"] == [
        "the clock of worker fast pid 1 is 120.0 s ahead of the store's"
    ]


#: A ``sitecustomize`` that sets a process's wall clock off by ``BGHTTP_TEST_CLOCK_OFFSET`` seconds.
SKEWED_CLOCK = Path(__file__).parent / "skewed_clock"


@pytest.mark.rabbitmq
def test_a_real_worker_whose_clock_is_two_minutes_behind_is_reported(
    rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    settings = dataclasses.replace(rabbitmq_settings, heartbeat_interval=0.5)
    # The worker's wall clock 120 s behind; the kernel still stamps its files with the real time.
    clock = {"PYTHONPATH": str(SKEWED_CLOCK), "BGHTTP_TEST_CLOCK_OFFSET": "-120"}
    start_worker(settings, extra_env=clock)
    wait_until(lambda: (settings.store_dir / "workers").is_dir() and any((settings.store_dir / "workers").iterdir()))
    result = run_cli(settings, "workers")
    assert result.returncode == 0
    [warning] = result.stderr.splitlines()
    behind = r"warning: the clock of worker \S+ pid \d+ is 1(19|20)\.\d s behind the store's"
    assert re.fullmatch(behind, warning), warning
    [row] = result.stdout.splitlines()[1:]
    assert row.split()[3] == "live" and re.search(r" -1(19|20)\.\ds ", row), row


def test_workers_on_an_empty_store_and_on_no_store(tmp_path: Path) -> None:
    settings = Settings(broker_url="local", store_dir=tmp_path / "store")
    settings.store_dir.mkdir()
    result = run_cli(settings, "workers")
    assert (result.returncode, result.stdout) == (0, "no workers have a heartbeat in this store\n")
    assert json.loads(run_cli(settings, "workers", "--json").stdout)["workers"] == []
    assert_one_line_error(run_cli(settings, "workers", "--store", str(tmp_path / "typo")), 6)  # as status


@pytest.mark.rabbitmq
def test_status_and_wait_say_when_no_live_worker_serves_a_queued_request(rabbitmq_settings: Settings) -> None:
    settings = rabbitmq_settings
    with BackgroundHttpClient(settings) as client:
        request_id = client.get("http://127.0.0.1:9/never", retries=0).request_id
    submitted = time.monotonic()
    # Workers that do not serve it: another queue, and one of this queue that died.
    plant(settings, host="elsewhere", pid=1, queue="other-queue")
    shift(plant(settings, host="dead", pid=2), written_ago=600)

    fresh = run_cli(settings, "status", request_id)
    assert fresh.returncode == 0
    if time.monotonic() - submitted < 4.5:  # queued for less than a few seconds: not worth a word yet
        assert "no live worker" not in fresh.stderr
    time.sleep(max(0.0, submitted + 5.5 - time.monotonic()))

    status = run_cli(settings, "status", request_id)
    assert status.returncode == 0
    [warning] = status.stderr.splitlines()
    assert warning.startswith(f"warning: {request_id} has waited for a worker since ")
    assert f"no live worker serves queue {settings.queue_name} on store {settings.store_dir}" in warning
    status_json = run_cli(settings, "status", request_id, "--json")
    assert json.loads(status_json.stdout)["phase"] == "queued" and "no live worker" in status_json.stderr

    # wait: not a terminal and no --progress: only the warning, once.
    waited = run_cli(settings, "wait", request_id, "--timeout", "1")
    assert waited.returncode == 5
    assert waited.stderr.count("no live worker serves them") == 1, waited.stderr

    # A live worker of this queue on the store: nothing to warn about.
    plant(settings, host="serving", pid=3)
    assert "no live worker" not in run_cli(settings, "status", request_id).stderr
    told = run_cli(settings, "wait", request_id, "--timeout", "1", "--progress")
    assert told.stderr.count("1 live worker serves them") == 1, told.stderr


def test_a_garbage_record_neither_breaks_workers_nor_stays_live_forever(tmp_path: Path) -> None:
    """A record is a file anyone with write access to the store could have written (or a torn copy
    of one): deeply nested JSON under the size limit, or an interval that is no number of seconds,
    must be skipped like any other garbage, not crash the command or print invalid JSON."""
    settings = Settings(broker_url="local", store_dir=tmp_path / "store", queue_name="q")
    good = plant(settings, host="good", pid=1)
    workers = good.parent
    (workers / "deep-2.json").write_text("[" * 100_000 + "]" * 100_000)  # 200 kB: under the 1 MiB limit
    for pid, interval in ((3, "NaN"), (4, "Infinity"), (5, "-5"), (6, "0")):
        record = json.loads(good.read_text())
        record.update(host=f"bad-{pid}", pid=pid)
        text = json.dumps(record, separators=(",", ":")).replace('"interval":5.0', f'"interval":{interval}')
        assert f'"interval":{interval}' in text
        (workers / f"bad-{pid}.json").write_text(text)
    record = json.loads(good.read_text())
    record.update(host="bad-7", pid=7, clock=1e18)  # datetime raises OSError (EOVERFLOW) for this one
    (workers / "bad-7.json").write_text(json.dumps(record))
    table = run_cli(settings, "workers")
    assert table.returncode == 0, table.stderr
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == ["good"]
    result = run_cli(settings, "workers", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert [worker["host"] for worker in document["workers"]] == ["good"]


def _as_an_operator_the_store_denies(command: list[str]) -> list[str]:
    """``command`` run so that file permissions apply to it: root without the capabilities that bypass them."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to run a command as root without CAP_DAC_OVERRIDE")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]


def test_a_workers_directory_that_cannot_be_read_is_an_error_not_no_workers(tmp_path: Path) -> None:
    """An operator whose user may not read the store's ``workers/`` (0700, the workers' user) must not be
    told that no worker has a heartbeat there: that is a fleet that looks dead while it runs."""
    settings = Settings(broker_url="local", store_dir=tmp_path / "store", queue_name="q")
    record = plant(settings, host="live-host", pid=1)
    record.parent.chmod(0)
    try:
        _assert_workers_cannot_be_read(settings)
        # A directory opened to others for listing still holds records private to the workers' user.
        record.parent.chmod(0o755)
        if os.geteuid() == 0:
            os.chown(record, 65534, 65534)  # the workers' user is another one (nobody)
        else:
            record.chmod(0)
        _assert_workers_cannot_be_read(settings)
    finally:
        record.parent.chmod(0o700)


def _assert_workers_cannot_be_read(settings: Settings) -> None:
    for args in (("workers",), ("workers", "--json")):
        result = subprocess.run(
            _as_an_operator_the_store_denies([*bghttp_command(), *args]),
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env(settings),
            cwd=PROJECT_ROOT,
        )
        assert "no workers have a heartbeat" not in result.stdout
        assert_one_line_error(result, 6)
        assert "Permission denied" in result.stderr


@pytest.mark.rabbitmq
def test_the_notice_goes_by_the_queue_the_request_was_submitted_to_not_the_readers(
    rabbitmq_settings: Settings,
) -> None:
    submitted_to = rabbitmq_settings
    with BackgroundHttpClient(submitted_to) as client:
        request_id = client.get("http://127.0.0.1:9/never", retries=0).request_id
    submitted = time.monotonic()
    # An operator's shell without the application's BGHTTP_QUEUE: the default queue.
    reader = dataclasses.replace(submitted_to, queue_name="bghttp")
    assert reader.queue_name != submitted_to.queue_name
    plant(submitted_to, host="serving", pid=3)  # a live worker of the request's queue
    time.sleep(max(0.0, submitted + 5.5 - time.monotonic()))

    status = run_cli(reader, "status", request_id)
    assert status.returncode == 0 and "no live worker" not in status.stderr, status.stderr
    assert re.search(rf"^queue\s+{re.escape(submitted_to.queue_name)}$", status.stdout, re.M), status.stdout
    assert json.loads(run_cli(reader, "status", request_id, "--json").stdout)["queue"] == submitted_to.queue_name
    told = run_cli(reader, "wait", request_id, "--timeout", "1", "--progress")
    assert f"on queue {submitted_to.queue_name}," in told.stderr and "1 live worker serves them" in told.stderr

    # Only a worker of the reader's queue lives: the request's queue is the one named as unserved.
    (submitted_to.store_dir / "workers").joinpath(next(iter(os.listdir(submitted_to.store_dir / "workers")))).unlink()
    plant(reader, host="other", pid=4)
    warned = run_cli(reader, "status", request_id)
    assert f"no live worker serves queue {submitted_to.queue_name} on store" in warned.stderr, warned.stderr
