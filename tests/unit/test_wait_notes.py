"""WaitNotes with scripted status records: one line per change, server text escaped, the worker count asked once."""

from __future__ import annotations

import io
from pathlib import Path

from bghttp import Phase, RequestStatus, Settings, StatusRecord
from bghttp.cli.wait_notes import WaitNotes
from bghttp.models import AttemptRecord

NOW = 1_800_000_000.0


def record(phase: Phase, **changes: object) -> StatusRecord:
    return StatusRecord(
        request_id="r1",
        status=RequestStatus.IN_PROGRESS,
        phase=phase,
        created_at=NOW - 100,
        updated_at=NOW - 100,
        max_retries=4,
        **changes,  # type: ignore[arg-type]
    )


def notes(tmp_path: Path, *, narrate: bool) -> tuple[WaitNotes, io.StringIO, list[int]]:
    stream, reads = io.StringIO(), []

    def read_workers() -> list[object]:
        reads.append(1)
        return []

    waiting = WaitNotes(
        Settings(broker_url="local", store_dir=tmp_path, queue_name="orders"),
        stream,
        narrate=narrate,
        read_workers=read_workers,  # type: ignore[arg-type]
        clock=lambda: NOW,
    )
    return waiting, stream, reads


def test_a_failed_attempt_with_hostile_error_text_is_told_once_and_escaped(tmp_path: Path) -> None:
    waiting, stream, _ = notes(tmp_path, narrate=True)
    failed = AttemptRecord(number=1, started_at=NOW - 2, finished_at=NOW - 1, outcome="network_error",
                           error="reset\x1b]0;owned\x07\u202e")
    retrying = record(Phase.WAITING_RETRY, attempts=(failed,), retries_used=1, next_attempt_at=NOW + 4)
    for _ in range(3):
        waiting.update(retrying)
    assert stream.getvalue() == "attempt 1 failed (reset\\x1b]0;owned\\x07\\u202e); retry 1 of 4 in 4 s\n"


def test_quiet_without_narration_except_for_a_request_no_worker_serves(tmp_path: Path) -> None:
    waiting, stream, reads = notes(tmp_path, narrate=False)
    waiting.update(record(Phase.WAITING_NETWORK))
    assert stream.getvalue() == ""
    for _ in range(5):
        waiting.update(record(Phase.QUEUED))
    assert stream.getvalue() == (
        f"queued since 2027-01-15T07:58:20Z, on queue orders, store {tmp_path}: "
        "no live worker serves them (see bghttp workers)\n"
    )
    assert len(reads) == 1  # heartbeats are read at most every 2 s, not at every poll
