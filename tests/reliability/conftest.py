"""Fixtures for the fault tests: a counting HTTP server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.server import CountingServer


@pytest.fixture
def counting_server() -> Iterator[CountingServer]:
    server = CountingServer().start()
    yield server
    server.stop()
