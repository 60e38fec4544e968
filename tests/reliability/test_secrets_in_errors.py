"""No secret reaches a log line, ``last_error`` or an attempt record, whatever wrote the text.

The request file is edited after submit (as a hand edit or an older bghttp
might leave it) so that h11 refuses a secret header at send time; its error
message quotes the value (``Illegal header value b'Bearer sk-…'``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from bghttp import BackgroundHttpClient, RequestStatus, Settings
from bghttp.redaction import REDACTED, request_secrets, scrub
from tests.reliability.server import CountingServer
from tests.support import WorkerProcess

BEARER = "sk-live-SECRET123"
PASSWORD = "pw-SECRET456"
COOKIE = "session=SECRET789"


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_a_secret_header_h11_refuses_is_not_logged_or_recorded(
    rabbitmq_settings: Settings,
    start_worker: Callable[..., WorkerProcess],
    counting_server: CountingServer,
) -> None:
    url = counting_server.url("/ok?id=secret").replace("http://", f"http://user:{PASSWORD}@")
    with BackgroundHttpClient(rabbitmq_settings) as client:
        info = client.get(
            url, headers={"Authorization": f"Bearer {BEARER}", "Cookie": COOKIE}, retries=1, request_id="secret"
        )
        spec = json.loads(info.request_file_path.read_text())
        # Illegal at send time: a form feed (h11 refuses it and quotes the whole value).
        spec["headers"] = [[name, value + "\x0c"] for name, value in spec["headers"]]
        info.request_file_path.write_text(json.dumps(spec))

        worker = start_worker(rabbitmq_settings)
        record = client.wait("secret", timeout=20)

    # A header h11 refuses cannot be sent: one `invalid` attempt, no retry spent on it.
    assert record.status is RequestStatus.FAILED and record.attempt_count == 1
    assert record.last_error is not None and "Illegal header value" in record.last_error
    assert REDACTED in record.last_error
    worker.stop()
    texts = {
        "worker log": worker.log_path.read_text(errors="replace"),
        "status record": (rabbitmq_settings.store_dir / "status" / "secret.log").read_text(),
    }
    # The scrubbed error text did reach the log (so the check below looks where the secret would be).
    assert "request_failed" in texts["worker log"] and "Illegal header value" in texts["worker log"]
    for where, text in texts.items():
        for secret in ("SECRET123", "SECRET456", "SECRET789"):
            assert secret not in text, f"{secret} in the {where}"
    assert sum(counting_server.hits.values()) == 0


SECRET = "s3cr3t/+?é"


@pytest.mark.parametrize(
    "message",
    [
        f"Illegal header value b'Bearer {SECRET}'".replace("é", "\\xc3\\xa9"),
        f"Illegal header value {('Bearer ' + SECRET).encode('utf-8')!r}",
        f"value {SECRET!r} is bad",
        "percent-encoded: http://h/?t=s3cr3t%2F%2B%3F%C3%A9 and s3cr3t%2F%2B%3F%C3%A9",
        f"json: {json.dumps({'token': SECRET})}",
        f"only the credentials: {SECRET}",
        "basic: dXNlcjpwdy1TRUNSRVQ0NTY=",  # base64 of user:pw-SECRET456, as httpx sends URL userinfo
        f"the password: {PASSWORD} in http://user:{PASSWORD}@h/",
    ],
)
def test_scrub_removes_every_form_of_a_secret(message: str) -> None:
    secrets = request_secrets([("Authorization", f"Bearer {SECRET}"), ("X-Other", "public")], f"http://user:{PASSWORD}@h/")
    scrubbed = scrub(message, secrets)
    assert "s3cr3t" not in scrubbed and "SECRET" not in scrubbed and "dXNlcjpwdy1TRUNSRVQ0NTY" not in scrubbed
    assert REDACTED in scrubbed
