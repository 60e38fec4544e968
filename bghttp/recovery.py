"""Re-sending requests from the store, the record of truth.

A request whose status is not terminal but whose message is gone (queue purged,
broker rebuilt, a local-mode process killed) is published again with a newer
token. Any older message still around becomes stale and is dropped by the
worker, so recovering twice never sends a request twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from .errors import StoreError
from .lifecycle import RequestLifecycle, next_token
from .logs import get_logger
from .models import StatusRecord
from .store_api import Store


def recover_pending(
    store: Store,
    publish: Callable[[str, int, float | None], None],
    should_recover: Callable[[StatusRecord], bool] | None = None,
    records: Iterable[StatusRecord] | None = None,
) -> int:
    """Publish one new run for every non-terminal request nobody is running; return the count.

    ``should_recover``, when given, narrows the choice; it sees the record as read
    under the request's claim. ``records`` replaces the full listing of the store
    (a caller that already knows which requests are terminal can skip reading them).
    """
    recovered = 0
    lifecycle = RequestLifecycle(store)
    for record in store.statuses() if records is None else records:
        if record.is_terminal or (should_recover is not None and not should_recover(record)):
            continue
        with store.claim(record.request_id) as claimed:
            if not claimed:
                continue  # a worker is running it right now
            current = store.read_status(record.request_id)
            if current is None or current.is_terminal:
                continue
            if should_recover is not None and not should_recover(current):
                continue
            new_token = next_token(current)
            delay = None if current.next_attempt_at is None else max(0.0, current.next_attempt_at - time.time())
            publish(current.request_id, new_token, delay)
            recovered += 1
            try:
                # Now ``published``: a failing first submitter keeps the request.
                lifecycle.republish(current.request_id, new_token)
            except StoreError as error:
                # The run is on its way all the same (a record naming an older token accepts the
                # newer message): not an error of the recovery, which goes on with the next one.
                get_logger(request_id=current.request_id).warning("recovered_token_not_recorded", error=str(error))
            get_logger(request_id=current.request_id).info(
                "request_recovered", phase=current.phase.value, delay_s=delay
            )
    return recovered
