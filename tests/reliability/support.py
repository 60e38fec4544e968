"""Helpers shared by the fault tests."""

from __future__ import annotations

import collections

from bghttp import BackgroundHttpClient
from tests.support import wait_until


def wait_all_terminal(client: BackgroundHttpClient, ids: list[str], timeout: float) -> None:
    pending = set(ids)

    def done() -> bool:
        for request_id in list(pending):
            record = client.get_request_status(request_id)
            if record is not None and record.is_terminal:
                pending.discard(request_id)
        return not pending

    try:
        wait_until(done, timeout=timeout, interval=0.5)
    except AssertionError:
        phases = collections.Counter(
            getattr(client.get_request_status(request_id), "phase", None) for request_id in pending
        )
        raise AssertionError(f"{len(pending)} requests not terminal; phases: {dict(phases)}") from None
