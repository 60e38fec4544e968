"""The public API is typed: a typo'd keyword is a mypy error; response headers are a case-insensitive mapping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bghttp import RequestStatus, Response
from bghttp.models import Headers

SNIPPET = '''
from bghttp import AsyncBackgroundHttpClient, BackgroundHttpClient, BulkRequest


def submit(client: BackgroundHttpClient) -> None:
    client.post("https://api.example.com/orders", data={"id": 7}, retries=2)  # fine
    client.post("https://api.example.com/orders", dat={"id": 7})  # line 7: typo
    client.get("https://api.example.com/", timeout="soon")  # line 8: wrong type
    client.submit_many([{"method": "GET", "url": "https://api.example.com/", "retires": 1}])  # line 9
    BulkRequest("GET", "https://api.example.com/", header={"a": "b"})  # line 10


async def submit_async(client: AsyncBackgroundHttpClient) -> None:
    await client.put("https://api.example.com/", request_ids="x")  # line 14
'''


@pytest.mark.slow
def test_a_typo_in_a_keyword_is_a_mypy_error(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"),
         str(snippet)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    errors = {int(line.split(":")[1]) for line in result.stdout.splitlines() if ": error:" in line}
    assert errors == {7, 8, 9, 10, 14}, result.stdout
    assert 'Unexpected keyword argument "dat"' in result.stdout


def test_response_headers_are_a_case_insensitive_mapping_keeping_repeated_values(tmp_path: Path) -> None:
    pairs = [("Content-Type", "text/plain"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    response = Response("r1", 200, pairs, tmp_path / "body", RequestStatus.COMPLETED)  # type: ignore[arg-type]
    headers = response.headers
    assert isinstance(headers, Headers)
    assert headers["content-type"] == "text/plain" and headers["CONTENT-TYPE"] == "text/plain"
    assert headers.get_list("set-cookie") == ["a=1", "b=2"] and headers["set-cookie"] == "a=1, b=2"
    assert headers.get("x-missing") is None and "set-cookie" in headers and "x-missing" not in headers
    with pytest.raises(KeyError):
        headers["x-missing"]
    # Still the pairs, in order, for everything that iterated them before (JSON, the CLI).
    assert list(headers) == pairs and headers == pairs
    assert [list(pair) for pair in headers] == [list(pair) for pair in pairs]
    assert headers.keys() == ["content-type", "set-cookie"] and len(headers) == 3
    assert response.header("SET-COOKIE") == "a=1"
