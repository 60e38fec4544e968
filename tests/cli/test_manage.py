"""``ls``, ``wait`` progress, ``cancel``, ``delete``/``rm``, ``gc`` and ``recover`` as subprocesses."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from dramatiq.brokers.stub import StubBroker
from pytest_httpserver import HTTPServer

from bghttp import BackgroundHttpClient, Phase, RequestStatus, Settings
from bghttp.store import FileStore
from tests.cli.conftest import Cli
from tests.cli.helpers import SlowBodyServer, json_output, run_cli
from tests.support import WorkerProcess, wait_until


def _submit(cli: Cli, *args: str) -> str:
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _terminal(store: FileStore, *request_ids: str) -> bool:
    records = [store.read_status(request_id) for request_id in request_ids]
    return all(record is not None and record.is_terminal for record in records)


def test_ls_filters_and_limits_newest_first(
    cli: Cli, worker: WorkerProcess, httpserver: HTTPServer, rabbitmq_settings: Settings
) -> None:
    httpserver.expect_request("/ok").respond_with_data("fine")
    httpserver.expect_request("/missing").respond_with_data("no", status=404)
    first = _submit(cli, "get", httpserver.url_for("/ok"))
    second = _submit(cli, "get", httpserver.url_for("/missing"))
    third = _submit(cli, "get", httpserver.url_for("/ok"), "-q", "n=3")
    wait_until(lambda: _terminal(FileStore(rabbitmq_settings.store_dir), first, second, third), timeout=60)

    listed = json_output(cli("ls", "--json"))
    assert [item["request_id"] for item in listed] == [third, second, first]
    assert listed[0]["url"].endswith("/ok?n=3") and listed[0]["method"] == "GET"
    failed = json_output(cli("ls", "--status", "failed", "--json"))
    assert [(item["request_id"], item["last_status_code"]) for item in failed] == [(second, 404)]
    assert [item["request_id"] for item in json_output(cli("ls", "--limit", "2", "--json"))] == [third, second]

    table = cli("ls").stdout.splitlines()
    assert table[0].split() == ["ID", "STATUS", "PHASE", "ATTEMPTS", "CODE", "CREATED", "METHOD", "URL"]
    assert table[2].split()[:5] == [second, "failed", "done", "1", "404"]


def test_wait_shows_download_progress(
    cli: Cli, worker: WorkerProcess, slow_server_factory: Callable[..., SlowBodyServer]
) -> None:
    server = slow_server_factory(chunks=120, chunk_size=64 * 1024, delay=0.04)  # 7.5 MiB over ~5 s
    request_id = _submit(cli, "get", server.url("/big"))

    result = cli("wait", request_id, "--timeout", "120")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{request_id} completed (HTTP 200)"
    sizes = [int(size) for size in re.findall(rf"^{request_id}: running, .* received .*\[(\d+) bytes\]$",
                                               result.stderr, re.MULTILINE)]  # fmt: skip
    assert sizes, result.stderr
    assert any(size > 0 for size in sizes) and sizes == sorted(sizes)
    assert json_output(cli("response", request_id, "--json"))["size"] == server.total


def test_cancel_running_request_stops_the_download(
    cli: Cli, worker: WorkerProcess, slow_server_factory: Callable[..., SlowBodyServer], rabbitmq_settings: Settings
) -> None:
    server = slow_server_factory(chunks=1200, chunk_size=16 * 1024, delay=0.05)  # a minute of body
    store = FileStore(rabbitmq_settings.store_dir)
    request_id = _submit(cli, "get", server.url("/slow"), "--timeout", "300")
    wait_until(lambda: server.sent.get("/slow", 0) > 0, timeout=30)
    record = store.read_status(request_id)
    assert record is not None and record.phase is Phase.RUNNING

    cancelled = cli("cancel", request_id)

    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"{request_id} cancelled"
    waited = cli("wait", request_id, "--timeout", "60", "--no-progress")
    # The line may add what the running attempt saw (e.g. "(HTTP 200): cancelled while reading the response body").
    assert waited.returncode == 1 and waited.stdout.startswith(f"{request_id} cancelled")
    # The worker notices within its 0.5 s check and hangs up long before the body ends.
    wait_until(lambda: server.hung_up.get("/slow"), timeout=30)
    assert server.sent["/slow"] < server.total
    wait_until(lambda: '"request_cancelled"' in worker.log_path.read_text(), timeout=30)
    assert not store.response_part_path(request_id).exists()
    assert cli("response", request_id).returncode == 3  # a cancelled download keeps no response
    again = cli("cancel", request_id, "--json")  # already final: this cancel changed nothing (exit 1)
    assert again.returncode == 1, again.stderr
    assert json.loads(again.stdout) == {"request_id": request_id, "status": "cancelled", "cancelled": False}


def test_cancel_queued_request_never_runs(
    cli: Cli,
    httpserver: HTTPServer,
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    httpserver.expect_request("/never").respond_with_data("should not run")
    httpserver.expect_request("/later").respond_with_data("ran")
    store = FileStore(rabbitmq_settings.store_dir)
    queued = _submit(cli, "post", httpserver.url_for("/never"), "-d", "x")  # no worker yet: stays queued

    assert cli("cancel", queued).stdout.strip() == f"{queued} cancelled"
    worker = start_worker(rabbitmq_settings)
    later = _submit(cli, "get", httpserver.url_for("/later"))
    wait_until(lambda: _terminal(store, later), timeout=60)
    wait_until(lambda: "message_dropped" in worker.log_path.read_text(), timeout=30)

    assert [request.path for request, _ in httpserver.log] == ["/later"]
    record = store.read_status(queued)
    assert record is not None and record.status is RequestStatus.CANCELLED and record.attempt_count == 0
    finished = cli("cancel", later)
    assert finished.returncode == 1 and "already completed" in finished.stdout


def test_delete_id_and_rm_remove_every_file(
    cli: Cli, worker: WorkerProcess, httpserver: HTTPServer, rabbitmq_settings: Settings, tmp_path: Path
) -> None:
    httpserver.expect_request("/up").respond_with_data("stored")
    upload = tmp_path / "doc.txt"
    upload.write_text("attachment")
    with_files = _submit(cli, "post", httpserver.url_for("/up"), "-F", f"doc=@{upload}", "--id", "to-delete")
    other = _submit(cli, "get", httpserver.url_for("/up"))
    root = rabbitmq_settings.store_dir
    wait_until(lambda: _terminal(FileStore(root), with_files, other), timeout=60)
    assert any(with_files in path.name for path in root.rglob("*"))

    deleted = cli("delete", with_files)
    assert deleted.returncode == 0 and deleted.stdout.strip() == "to-delete deleted"
    assert [path for path in root.rglob("*") if with_files in path.name] == []
    assert cli("status", with_files).returncode == 3

    assert json_output(cli("rm", other, "--json")) == {"request_id": other, "deleted": True}
    assert [path for path in root.rglob("*") if other in path.name] == []


def test_gc_removes_only_finished_requests_older_than_the_age(tmp_path: Path) -> None:
    settings = Settings(store_dir=tmp_path / "store", fsync=False)
    with BackgroundHttpClient(settings, broker=StubBroker()) as client:  # nothing consumes: they stay queued
        old_a, old_b, running = (client.get(f"http://127.0.0.1:9/{n}").request_id for n in range(3))
        client.cancel(old_a)
        client.cancel(old_b)
    store = FileStore(settings.store_dir)

    kept = run_cli(settings, "gc", "--older-than", "1h", "--json")
    assert json_output(kept)["removed"] == 0
    time.sleep(0.05)  # "older than 0 s" must be strictly in the past
    dry = json_output(run_cli(settings, "gc", "--older-than", "0s", "--dry-run", "--json"))
    assert dry["dry_run"] is True and sorted(dry["request_ids"]) == sorted([old_a, old_b])
    assert sorted(store.request_ids()) == sorted([old_a, old_b, running])

    removed = run_cli(settings, "gc", "--older-than", "0s")

    assert removed.returncode == 0 and sorted(removed.stdout.split()) == sorted([old_a, old_b])
    assert "removed 2 finished request(s)" in removed.stderr
    assert list(store.request_ids()) == [running]  # an unfinished request is never collected
    assert not store.request_path(old_a).exists() and store.request_path(running).exists()


def test_recover_twice_sends_each_request_once(
    cli: Cli, httpserver: HTTPServer, rabbitmq_settings: Settings, start_worker: Callable[..., WorkerProcess]
) -> None:
    paths = [f"/recover/{n}" for n in range(3)]
    for path in paths:
        httpserver.expect_request(path).respond_with_data("done")
    ids = [_submit(cli, "post", httpserver.url_for(path), "-d", "once") for path in paths]  # queued, no worker yet

    first = cli("recover")
    second = cli("recover", "--json")

    assert first.returncode == 0 and first.stdout.strip() == "re-sent 3 unfinished request(s)"
    assert json_output(second) == {"recovered": 3}
    # The queue now holds three messages per request (tokens 1, 2, 3); only the newest may run.
    worker = start_worker(rabbitmq_settings)
    store = FileStore(rabbitmq_settings.store_dir)
    try:
        wait_until(lambda: _terminal(store, *ids), timeout=60)
        wait_until(lambda: worker.log_path.read_text().count('"message_dropped"') >= 6, timeout=30)
    except AssertionError:
        raise AssertionError(f"worker log:\n{worker.log_path.read_text()}") from None
    hits = [request.path for request, _ in httpserver.log]
    assert sorted(hits) == sorted(paths)  # each request reached the server exactly once
    assert cli("recover").stdout.strip() == "re-sent 0 unfinished request(s)"
