"""Fixtures for the connectivity tests: "the network" as a loopback probe port, and a counting server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.connectivity.support import CountingServer, ProbePort
from tests.support import free_port


@pytest.fixture
def probe() -> Iterator[ProbePort]:
    """A listening port that is the worker's only probe; ``close()`` it for an outage."""
    port = ProbePort(free_port())
    port.open()
    yield port
    port.close()


@pytest.fixture
def server() -> Iterator[CountingServer]:
    """An HTTP server on loopback that stays up and counts what it receives per path."""
    counting = CountingServer(free_port())
    counting.start()
    yield counting
    counting.stop()
