"""URL-to-host, written once: every URL form a request may hold (no I/O)."""

from __future__ import annotations

import pytest

from bghttp.core.urls import origin_key, url_host
from bghttp.worker.in_flight import host_key


@pytest.mark.parametrize(
    ("url", "host", "key"),
    [
        ("http://example.test/a", "example.test", ("http", "example.test", 80)),
        ("https://example.test/a", "example.test", ("https", "example.test", 443)),
        ("HTTPS://Example.TEST:8443/a?b=1#c", "example.test", ("https", "example.test", 8443)),
        ("http://user:secret@example.test:81/", "example.test", ("http", "example.test", 81)),
        ("http://[::1]:8080/", "::1", ("http", "::1", 8080)),
        ("http://127.0.0.1/", "127.0.0.1", ("http", "127.0.0.1", 80)),
        ("ftp://files.test/x", "files.test", ("ftp", "files.test", 0)),
        ("example.test/no-scheme", None, ("", "", 0)),
        ("http://example.test:99999/", "example.test", ("", "", 0)),  # a port out of range does not parse
        ("http://[::1/", None, ("", "", 0)),  # an unclosed IPv6 bracket
        ("", None, ("", "", 0)),
    ],
)
def test_each_url_form_has_one_host_and_one_key(url: str, host: str | None, key: tuple[str, str, int]) -> None:
    assert url_host(url) == host
    assert origin_key(url) == key
    assert host_key(url) == key  # the per-host limits key by the same function
