"""Local mode says when it takes over pending requests it did not submit: one stderr line, with how many."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker

from bghttp import BackgroundHttpClient, Settings
from tests.cli.helpers import SlowBodyServer, run_cli


@pytest.fixture
def server() -> SlowBodyServer:
    server = SlowBodyServer(chunks=1, chunk_size=10, delay=0)
    yield server  # type: ignore[misc]
    server.stop()


def _takeover_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "took over" in line or "taken_over" in line]


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_local_submit_says_how_many_pending_requests_it_took_over(
    tmp_path: Path, server: SlowBodyServer, log_format: str
) -> None:
    settings = Settings(broker_url="local", store_dir=tmp_path / "store", fsync=False)
    # Three requests stored by an earlier run that never ran them (their messages were lost with it).
    with BackgroundHttpClient(settings, broker=StubBroker()) as earlier:
        for n in range(3):
            earlier.get(server.url(f"/earlier-{n}"), request_id=f"earlier-{n}")

    result = run_cli(settings, "--local", "get", server.url("/mine"), env={"BGHTTP_LOG_FORMAT": log_format})

    assert result.returncode == 0, result.stderr
    lines = _takeover_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "3" in lines[0] and str(settings.store_dir) in lines[0], lines[0]
    if log_format == "json":
        assert json.loads(lines[0])["count"] == 3


def test_nothing_to_take_over_says_nothing(tmp_path: Path, server: SlowBodyServer) -> None:
    settings = Settings(broker_url="local", store_dir=tmp_path / "store", fsync=False)

    result = run_cli(settings, "--local", "get", server.url("/mine"))

    assert result.returncode == 0, result.stderr
    assert _takeover_lines(result.stderr) == [], result.stderr
