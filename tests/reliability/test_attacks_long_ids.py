"""Attack: a request ID at the 128-character limit through every file the store makes for it.

The longest names are the response's ``.meta.log`` and ``.body.part``, the
multipart copies' directory and the request body's temporary name
(``<name>.<pid>.<thread id>.tmp``); all must stay under the 255-byte limit of
a file name.
"""

from __future__ import annotations

from pathlib import Path

from bghttp import BackgroundHttpClient, RequestStatus
from tests.conftest import local_settings
from tests.reliability.server import CountingServer


def test_a_128_character_id_runs_retries_and_is_removed(
    store_dir: Path, tmp_path: Path, counting_server: CountingServer
) -> None:
    request_id = "a" * 60 + "." + "b" * 61 + "-_x.Z9"
    assert len(request_id) == 128
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"\x00\x01" * 1000)
    with BackgroundHttpClient(local_settings(store_dir)) as client:
        info = client.post_multipart(
            counting_server.url(f"/flaky?id={request_id}&fail=3"),
            fields={"note": "x"},
            files={"file": upload},
            request_id=request_id,
            retries=3,
        )
        record = client.wait(info.request_id, timeout=60)
        response = client.get_response(request_id)
        assert record.status is RequestStatus.COMPLETED, record.last_error
        assert [a.outcome for a in record.attempts] == ["http_error"] * 3 + ["success"]
        assert response is not None and response.status_code == 200
        assert counting_server.hits[request_id] == 4
        assert client.remove(request_id) is True
    leftovers = [p.name for p in store_dir.rglob("*") if request_id in p.name]
    assert leftovers == []
