"""Attack: a URL's password (``https://user:password@host/``) must stay out of what bghttp writes and shows.

bghttp treats the userinfo password as a secret (``redaction.request_secrets``
scrubs it from error text), but it also reaches the saved response metadata
(``url``), ``Response.url`` and the CLI's ``status``/``ls``/``response`` output.
The request file keeps it: the worker needs it to send the request.
"""

from __future__ import annotations

from pathlib import Path

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from tests.cli.helpers import run_cli
from tests.conftest import local_settings
from tests.reliability.scripted_server import Connection, ScriptedServer
from tests.support import capture_logs

PASSWORD = "pw-s3cr3t-9f2"


def answer_ok(conn: Connection) -> None:
    conn.read_request()
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


def test_a_url_password_is_not_in_the_saved_response_nor_in_what_the_cli_shows(store_dir: Path) -> None:
    settings: Settings = local_settings(store_dir)
    with ScriptedServer(answer_ok) as server, capture_logs() as logs:
        with BackgroundHttpClient(settings) as client:
            url = f"http://alice:{PASSWORD}@127.0.0.1:{server.port}/orders"
            info = client.get(url)
            assert client.wait(info.request_id, timeout=20).status is RequestStatus.COMPLETED
            response = client.get_response(info.request_id)
        assert server.hits == 1
    assert response is not None and response.url is not None
    assert PASSWORD not in response.url, response.url
    assert response.url.startswith("http://alice:") and response.url.endswith(f"127.0.0.1:{server.port}/orders")
    metadata_file = store_dir / "responses" / f"{info.request_id}.meta.log"
    assert PASSWORD not in metadata_file.read_text()
    assert PASSWORD not in (store_dir / "status" / f"{info.request_id}.log").read_text()
    assert not [event for event in logs if PASSWORD in repr(event)]
    for command in (["status", info.request_id], ["ls"], ["response", info.request_id]):
        for output in ([], ["--json"]):
            result = run_cli(settings, *command, *output)
            assert result.returncode == 0, result.stderr
            assert PASSWORD not in result.stdout + result.stderr, (command, output, result.stdout)
