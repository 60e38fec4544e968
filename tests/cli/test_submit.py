"""``bghttp get|post|put|patch|delete|head`` against real RabbitMQ, a real worker and a real server."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_httpserver import HTTPServer
from werkzeug import Request

from bghttp import RequestStatus, Settings
from bghttp.store import FileStore
from tests.cli.conftest import Cli
from tests.cli.helpers import assert_one_line_error, json_output, run_cli
from tests.support import WorkerProcess, wait_until


def _status(store: FileStore, request_id: str) -> RequestStatus | None:
    record = store.read_status(request_id)
    return None if record is None else record.status


def _received(httpserver: HTTPServer, path: str) -> Request:
    matching = [request for request, _ in httpserver.log if request.path == path]
    assert len(matching) == 1, [request.path for request, _ in httpserver.log]
    return matching[0]


def test_get_with_headers_query_and_id_then_status_response_wait(
    cli: Cli, worker: WorkerProcess, httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/items").respond_with_data("hello body", headers={"X-Reply": "yes"})

    submit = cli(
        "get", httpserver.url_for("/items"), "-H", "X-Trace: abc", "-q", "a=1", "-q", "a=2",
        "--timeout", "10", "--retries", "2", "--id", "cli-get-1",
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    assert submit.stdout.strip() == "cli-get-1"

    waited = cli("wait", "cli-get-1", "--timeout", "60")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == "cli-get-1 completed (HTTP 200)"

    request = _received(httpserver, "/items")
    assert request.headers["X-Trace"] == "abc"
    assert request.args.getlist("a") == ["1", "2"]

    status = json_output(cli("--json", "status", "cli-get-1"))
    assert status["status"] == "completed" and status["last_status_code"] == 200
    assert status["max_retries"] == 2 and status["method"] == "GET"
    text_status = cli("status", "cli-get-1")
    assert "completed" in text_status.stdout and "retries           0/2" in text_status.stdout

    response = json_output(cli("response", "cli-get-1", "--json"))  # --json after the command works too
    assert response["status_code"] == 200 and response["size"] == len("hello body")
    assert ["x-reply", "yes"] in [[name.lower(), value] for name, value in response["headers"]]  # the server's spelling
    body = cli("response", "cli-get-1", "--body")
    assert body.returncode == 0 and body.stdout == "hello body"


def test_bodies_forms_and_methods_reach_the_server(
    cli: Cli, worker: WorkerProcess, httpserver: HTTPServer, tmp_path: Path, rabbitmq_settings: Settings
) -> None:
    for path in ("/text", "/json", "/file", "/form", "/stdin", "/put", "/patch", "/delete", "/head"):
        httpserver.expect_request(path).respond_with_data("ok")
    upload = tmp_path / "report.csv"
    upload.write_bytes(b"a,b\n1,2\n")
    raw = tmp_path / "raw.bin"
    raw.write_bytes(bytes(range(256)))

    submits = [
        ["post", httpserver.url_for("/text"), "-d", "plain text"],
        ["post", httpserver.url_for("/json"), "--json-body", '{"n": 1, "tags": ["x"]}'],
        ["post", httpserver.url_for("/file"), "--data-binary", f"@{raw}"],  # -d @FILE drops CR/LF, as curl's
        ["post", httpserver.url_for("/form"), "-F", "name=alice", "-F", f"doc=@{upload};type=text/csv"],
        ["put", httpserver.url_for("/put"), "-d", "put-body"],
        ["patch", httpserver.url_for("/patch"), "--json-body", "[1, 2]"],
        ["delete", httpserver.url_for("/delete")],
        ["head", httpserver.url_for("/head")],
    ]
    ids = []
    for args in submits:
        result = cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        ids.append(result.stdout.strip())
    from_stdin = cli("post", httpserver.url_for("/stdin"), "-d", "@-", "--json", input=b"piped bytes")
    ids.append(json_output(from_stdin)["request_id"])

    store = FileStore(rabbitmq_settings.store_dir)
    wait_until(lambda: all(_status(store, request_id) is RequestStatus.COMPLETED for request_id in ids), timeout=60)

    assert _received(httpserver, "/text").get_data() == b"plain text"
    json_request = _received(httpserver, "/json")
    assert json_request.headers["Content-Type"] == "application/json"
    assert json.loads(json_request.get_data()) == {"n": 1, "tags": ["x"]}
    assert _received(httpserver, "/file").get_data() == bytes(range(256))
    form = _received(httpserver, "/form")
    assert form.form["name"] == "alice"
    assert form.files["doc"].read() == b"a,b\n1,2\n"
    assert form.files["doc"].filename == "report.csv" and form.files["doc"].mimetype == "text/csv"
    assert _received(httpserver, "/stdin").get_data() == b"piped bytes"
    assert _received(httpserver, "/put").method == "PUT"
    assert _received(httpserver, "/patch").method == "PATCH"
    assert _received(httpserver, "/delete").method == "DELETE"
    assert _received(httpserver, "/head").method == "HEAD"


def test_failed_request_waits_with_exit_code_1(cli: Cli, worker: WorkerProcess, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/broken").respond_with_data("nope", status=500)

    result = cli("post", httpserver.url_for("/broken"), "-d", "x", "--retries", "1", "--wait", "--wait-timeout", "60")

    assert result.returncode == 1, result.stderr
    request_id = result.stdout.strip()  # stdout holds only the ID; the outcome goes to stderr
    assert f"{request_id} failed (HTTP 500): HTTP 500 INTERNAL SERVER ERROR" in result.stderr.splitlines()
    status = json_output(cli("status", request_id, "--json"))
    assert status["retries_used"] == 1 and status["attempt_count"] == 2
    assert len([r for r, _ in httpserver.log if r.path == "/broken"]) == 2
    # The last response of a failed request is kept and readable.
    assert cli("response", request_id, "--body").stdout == "nope"


def test_local_mode_submit_runs_in_the_cli_process(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/local").respond_with_data("no broker needed")
    settings = Settings(store_dir=tmp_path / "store", fsync=False)

    result = run_cli(settings, "--local", "post", httpserver.url_for("/local"), "-d", "hi", "--json")

    record = json_output(result)  # local mode waits: the worker lives in this process
    assert record["status"] == "completed" and record["last_status_code"] == 200
    assert _received(httpserver, "/local").get_data() == b"hi"
    assert run_cli(settings, "response", record["request_id"], "--body").stdout == "no broker needed"


def test_a_different_request_under_a_taken_id_fails_unless_replaced(cli: Cli, rabbitmq_settings: Settings) -> None:
    """No worker runs: the first request stays queued, so --replace may take its ID."""
    first_url, other_url = "http://127.0.0.1:9/charge", "http://127.0.0.1:9/refund"
    assert cli("post", first_url, "-d", "n=5", "--id", "order-7").stdout.strip() == "order-7"

    again = cli("post", first_url, "-d", "n=5", "--id", "order-7")  # the same request: the same ID, nothing sent
    assert again.returncode == 0 and again.stdout.strip() == "order-7", again.stderr

    different = cli("post", other_url, "-d", "n=5", "--id", "order-7")
    assert_one_line_error(different, 7)
    assert "'order-7' exists with a different request (URL differs)" in different.stderr
    assert "--replace" in different.stderr and different.stdout == ""
    store = FileStore(rabbitmq_settings.store_dir)
    spec = store.load_request("order-7")
    assert spec is not None and spec.url == first_url

    replaced = cli("post", other_url, "-d", "n=5", "--id", "order-7", "--replace")
    assert replaced.returncode == 0 and replaced.stdout.strip() == "order-7", replaced.stderr
    spec = store.load_request("order-7")
    assert spec is not None and spec.url == other_url
