"""Fixtures for the CLI tests: a runner bound to this test's settings."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bghttp import Settings
from tests.cli.helpers import SlowBodyServer, run_cli

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(rabbitmq_settings: Settings) -> Cli:
    """``cli("get", url, ...)`` runs the real console script against this test's queue and store."""

    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(rabbitmq_settings, *args, **kwargs)

    return run


@pytest.fixture
def slow_server_factory() -> Iterator[Callable[..., SlowBodyServer]]:
    servers: list[SlowBodyServer] = []

    def start(chunks: int, chunk_size: int, delay: float, burst: int = 0) -> SlowBodyServer:
        server = SlowBodyServer(chunks, chunk_size, delay, burst)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
