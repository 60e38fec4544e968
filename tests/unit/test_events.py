"""Final-status events (``bghttp.events``): their body, and an ``event_id`` that is stable per outcome."""

from __future__ import annotations

from pathlib import Path

from bghttp import lifecycle
from bghttp.events import event_id, final_event, rejected_event
from bghttp.models import AttemptRecord, RequestSpec, RequestStatus, StatusRecord


def finished(status: RequestStatus = RequestStatus.COMPLETED, *, attempts: int = 1, at: float = 2000.0) -> StatusRecord:
    spec = RequestSpec(
        request_id="order-7", method="GET", url="http://service.test/", headers=[], timeout=5.0, max_retries=2,
        created_at=1000.0, generation="g1", metadata={"order_id": "7"},
    )
    tries = tuple(
        AttemptRecord(number=n, started_at=1000.0 + n, finished_at=1001.0 + n, outcome="success", status_code=201)
        for n in range(1, attempts + 1)
    )
    return lifecycle.new_record(spec).evolve(
        status=status, phase=lifecycle.Phase.DONE, attempts=tries, retries_used=attempts - 1,
        last_status_code=201, completed_at=at,
    )


def test_the_event_carries_the_final_record_and_the_metadata(tmp_path: Path) -> None:
    event = final_event(finished(attempts=2), tmp_path / "order-7.body")

    assert event == {
        "event_id": event_id(finished(attempts=2)),
        "event_type": "request.completed",
        "request_id": "order-7",
        "status": "completed",
        "status_code": 201,
        "attempts": 2,
        "retries_used": 1,
        "last_error": None,
        "response_file_path": str(tmp_path / "order-7.body"),
        "metadata": {"order_id": "7"},
        "submitted_at": 1000.0,
        "completed_at": 2000.0,
    }
    assert final_event(finished(RequestStatus.CANCELLED), None)["event_type"] == "request.cancelled"
    assert final_event(finished(RequestStatus.FAILED), None)["response_file_path"] is None


def test_event_id_is_the_same_for_one_outcome_and_differs_for_another() -> None:
    record = finished()
    # Republished (another worker, a redelivered message), or the record amended after a cancel: same ID.
    assert event_id(record) == event_id(record.evolve(updated_at=9999.0, last_error="amended"))
    # A replay ends later, with more attempts; another status, generation or request: another ID.
    others = {
        event_id(finished(attempts=2, at=3000.0)),
        event_id(finished(at=3000.0)),
        event_id(finished(RequestStatus.FAILED)),
        event_id(record.evolve(generation="g2")),
        event_id(record.evolve(request_id="order-8")),
    }
    assert event_id(record) not in others and len(others) == 5


def test_a_rejected_submit_has_an_event_id_of_its_message() -> None:
    first = rejected_event("m-1", "m-1", "the field 'url' is required", {"job": "42"}, 5.0)
    again = rejected_event("m-1", "m-1", "the field 'url' is required", {"job": "42"}, 9.0)  # redelivered

    assert first["event_id"] == again["event_id"] != rejected_event("m-2", "m-2", "x", None, 5.0)["event_id"]
    assert first["status"] == "rejected" and first["event_type"] == "request.rejected"
    assert first["last_error"] == "the field 'url' is required" and first["metadata"] == {"job": "42"}
    assert first["message_id"] == "m-1"
