"""``-m "not rabbitmq"`` deselects every test that needs RabbitMQ, marked by hand or not."""

from __future__ import annotations

import subprocess
import sys

from tests.support import PROJECT_ROOT


def collected(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: nothing collected
    return {line for line in result.stdout.splitlines() if "::" in line}


def test_tests_using_rabbitmq_fixtures_or_mode_are_marked_without_a_marker_of_their_own() -> None:
    # test_manage.py uses the ``cli`` fixture (which asks for rabbitmq_settings) with no marker;
    # test_end_to_end.py runs tests in both modes; test_docs.py needs no broker.
    files = ["tests/cli/test_manage.py", "tests/integration/test_end_to_end.py", "tests/test_docs.py"]
    everything = collected(*files)
    offline = collected("-m", "not rabbitmq", *files)
    uses_cli_fixture = "tests/cli/test_manage.py::test_cancel_queued_request_never_runs"
    assert uses_cli_fixture in everything and uses_cli_fixture not in offline
    assert "tests/cli/test_manage.py::test_gc_removes_only_finished_requests_older_than_the_age" in offline
    assert not any("[rabbitmq]" in test for test in offline)
    assert any("[local]" in test for test in offline)
    assert any(test.startswith("tests/test_docs.py::") for test in offline)
