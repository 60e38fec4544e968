"""Specs and status records survive their JSON form unchanged (the store's files depend on it)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bghttp.core.outcomes import Outcome
from bghttp.models import AttemptRecord, MultipartFile, Phase, RequestSpec, RequestStatus, StatusRecord
from bghttp.validation import prepare_request


def _round_trip(spec: RequestSpec) -> RequestSpec:
    return RequestSpec.from_json(json.loads(json.dumps(spec.to_json())))


def test_a_spec_with_body_and_headers_round_trips(tmp_path: Path) -> None:
    prepared = prepare_request("POST", "http://x.test/a?b=1", headers=[("A", "1"), ("A", "2")], data={"k": "v"})
    assert _round_trip(prepared.spec) == prepared.spec
    assert prepared.spec.to_json()["headers"][:2] == [["A", "1"], ["A", "2"]]


def test_a_multipart_spec_round_trips(tmp_path: Path) -> None:
    upload = tmp_path / "f.txt"
    upload.write_text("x")
    prepared = prepare_request(
        "POST", "http://x.test/up", multipart=True, fields={"a": "b"},
        files={"f": MultipartFile(upload, content_type="text/plain")},
    )
    assert prepared.spec.file_parts and prepared.spec.form_fields
    assert _round_trip(prepared.spec) == prepared.spec
    assert set(prepared.spec.to_json()) == {field.name for field in dataclasses.fields(RequestSpec)}


def test_a_status_record_with_attempts_round_trips() -> None:
    record = StatusRecord(
        request_id="r1", status=RequestStatus.IN_PROGRESS, phase=Phase.WAITING_RETRY, created_at=1.0,
        updated_at=2.0, max_retries=3, token=4, retries_used=1, next_attempt_at=9.5,
        attempts=(AttemptRecord(number=1, started_at=2.0, finished_at=3.0, outcome="http_error", status_code=500,
                                error="HTTP 500"),),
    )
    assert StatusRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_the_fields_of_traces_retry_after_and_replays_round_trip_and_older_files_stay_readable() -> None:
    spec = dataclasses.replace(
        prepare_request("GET", "http://x.test/").spec,
        trace_context={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "a=1"},
    )
    assert _round_trip(spec) == spec
    older = {key: value for key, value in spec.to_json().items() if key != "trace_context"}
    assert RequestSpec.from_json(older).trace_context is None
    with pytest.raises(ValueError, match="trace_context"):
        RequestSpec.from_json({**spec.to_json(), "trace_context": {"traceparent": 7}})

    record = StatusRecord(
        request_id="r1", status=RequestStatus.FAILED, phase=Phase.DONE, created_at=1.0, updated_at=2.0,
        max_retries=1, replays=2, earlier_attempts=4,
        attempts=(AttemptRecord(number=5, started_at=2.0, finished_at=3.0, status_code=503, retry_after=30.0),),
    )
    assert StatusRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    data = json.loads(json.dumps(record.to_json()))  # a copy: to_json shares the attempts' __dict__
    for key in ("replays", "earlier_attempts"):
        del data[key]
    del data["attempts"][0]["retry_after"]
    old = StatusRecord.from_json(data)
    assert (old.replays, old.earlier_attempts, old.attempts[0].retry_after) == (0, 0, None)


def test_an_attempts_outcome_is_typed_and_written_as_before() -> None:
    # A status line as the worker wrote it before the outcome was typed (a str on disk and in memory).
    line = (
        '{"request_id":"r1","status":"in_progress","phase":"waiting_retry","created_at":1.0,"updated_at":2.0,'
        '"max_retries":3,"token":2,"retries_used":1,"attempts":[{"number":1,"started_at":2.0,"due_at":null,'
        '"finished_at":3.0,"outcome":"interrupted","status_code":null,"error":"the worker stopped",'
        '"counted":true,"sent_at":2.5,"retry_after":null},{"number":2,"started_at":4.0}]}'
    )
    record = StatusRecord.from_json(json.loads(line))
    assert record.attempts[0].outcome is Outcome.INTERRUPTED and record.attempts[1].outcome is None
    written = json.loads(json.dumps(record.to_json(), separators=(",", ":")))
    assert written["attempts"][0] == json.loads(line)["attempts"][0]
    assert json.dumps(record.to_json()["attempts"][0]["outcome"]) == '"interrupted"'
    unknown = {**json.loads(line), "attempts": [{"number": 1, "started_at": 2.0, "outcome": "exploded"}]}
    with pytest.raises(ValueError, match="'exploded'"):
        StatusRecord.from_json(unknown)
