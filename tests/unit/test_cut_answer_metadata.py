"""A worker killed between an answer's metadata and its body, the body cut: no answer under another's metadata."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bghttp.models import RequestStatus
from bghttp.reading import StoreReader
from bghttp.store import FileStore
from tests.unit.test_interrupted_attempts import _killed_between_metadata_and_body, counting_transport, crash
from tests.unit.test_runner import make_runner, submit


def test_a_cut_body_under_saved_metadata_leaves_no_answer_described_by_the_other_answers_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport, calls = counting_transport()
    runner, _ = make_runner(tmp_path, transport)
    submit(runner, retries=0)
    # An earlier attempt's answer is saved whole: a 500 and its body.
    with runner.store.open_response_part("r1") as part:
        part.write(b"old body")
    runner.store.commit_response("r1", {"status_code": 500, "headers": [], "size": 8, "saved_at": time.time() - 5})
    crash(runner, "r1", sent=True)
    _killed_between_metadata_and_body(runner, monkeypatch, b"the ans", 10)  # a 201, 7 of its 10 bytes

    runner.run("r1", 1)

    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.FAILED and calls == []
    assert isinstance(runner.store, FileStore)
    response = StoreReader(runner.store).get_response("r1")
    if response is not None:  # the previous answer whole, or none: never one answer's head on another's body
        body = response.response_file_path.read_bytes() if response.response_file_path.exists() else None
        assert (response.status_code, response.size, body) == (500, 8, b"old body"), (
            f"status {response.status_code}, size {response.size}, body {body!r}"
        )
    assert runner.store.partial_response_size("r1") is None  # the cut body is not left behind


def test_an_answer_half_saved_when_the_request_was_cancelled_is_made_whole_by_the_next_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled during the attempt, its worker killed between the answer's metadata and its body: the
    redelivered message finds the request final and drops; the answer must not stay half saved."""
    transport, calls = counting_transport()
    runner, _ = make_runner(tmp_path, transport)
    submit(runner, retries=0)
    crash(runner, "r1", sent=True)
    runner.lifecycle.cancel("r1")
    _killed_between_metadata_and_body(runner, monkeypatch, b"the answer", 10)

    runner.run("r1", 1)

    record = runner.store.read_status("r1")
    assert record is not None and record.status is RequestStatus.CANCELLED and calls == []
    assert isinstance(runner.store, FileStore)
    response = StoreReader(runner.store).get_response("r1")
    if response is not None:
        path = response.response_file_path
        body = path.read_bytes() if path.exists() else None
        assert (response.status_code, body) == (201, b"the answer"), f"status {response.status_code}, body {body!r}"
    assert runner.store.partial_response_size("r1") is None
