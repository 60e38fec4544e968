"""A response an attempt saved before its worker died: found, finished or removed by the next run.

``store.commit_response`` saves an answer's metadata, then moves its streamed
``.part`` body into place. A worker that dies between the two leaves the metadata
and the ``.part``: the run that closes the attempt finishes the answer if the body
is whole, and otherwise leaves no response (no metadata over another body).
"""

from __future__ import annotations

from ..core.outcomes import Judgement, judge_status
from ..core.response_meta import ResponseMeta
from ..errors import StoreError
from ..models import AttemptRecord, StatusRecord
from ..store_api import Store


def answer_saved_during(store: Store, request_id: str, attempt: AttemptRecord) -> tuple[int, Judgement] | None:
    """The status code of a response the attempt saved before its worker died, if it did, judged as
    the attempt would have judged it (its Retry-After counted from now: never earlier than asked)."""
    try:
        metadata = store.read_response_metadata(request_id)
        meta = None if not metadata else ResponseMeta.from_json(metadata)
    except (StoreError, ValueError):  # unreadable, or not a response's: no answer is known
        return None
    if meta is None or meta.saved_at < attempt.started_at or not whole_answer(store, request_id, meta):
        return None
    return meta.status_code, judge_status(meta.status_code, meta.reason, meta.headers)


def whole_answer(store: Store, request_id: str, meta: ResponseMeta) -> bool:
    """Whether the answer ``meta`` describes is saved, its body in place. If its worker died between
    saving the metadata and moving the body into place (store.commit_response), the body is moved now
    if it is whole; if it is cut, no response is left (none whose metadata describes another body)."""
    streamed = store.partial_response_size(request_id)
    if streamed is None:
        return True
    if streamed != meta.size:
        store.abandon_response(request_id)
        return False
    store.move_response_body(request_id)
    return True


def end_half_saved_answer(store: Store, record: StatusRecord, claimed: bool = True) -> None:
    """An attempt left unfinished in a record that is final (cancelled meanwhile) or replayed since
    may have saved half an answer: finish or remove it (``whole_answer``). Only under the claim."""
    if not claimed or not (record.is_terminal or record.replays):
        return
    unfinished = [attempt for attempt in record.attempts if attempt.finished_at is None]
    if unfinished:
        answer_saved_during(store, record.request_id, unfinished[-1])


__all__ = ["answer_saved_during", "end_half_saved_answer", "whole_answer"]
