"""Fault injection, imported by a test's worker processes (``dramatiq bghttp.actors tests.integration.slow_hand_back``).

The thread that hands a message back for a busy host keeps the request's claim
``BGHTTP_TEST_HAND_BACK_HOLD`` seconds (default 4) after it published and
recorded the next token, as a thread of a loaded worker may: the next message
arrives while the claim is still held, and past the duplicate grace period.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bghttp.models import StatusRecord
from bghttp.worker.runner import RequestRunner

HOLD_SECONDS = float(os.environ.get("BGHTTP_TEST_HAND_BACK_HOLD", "4"))

_hand_back = RequestRunner._defer_for_busy_host


def _slow_hand_back(self: RequestRunner, *args: Any, **kwargs: Any) -> StatusRecord:
    record = _hand_back(self, *args, **kwargs)
    time.sleep(HOLD_SECONDS)  # inside the claim: the runner lets it go only when this returns
    return record


RequestRunner._defer_for_busy_host = _slow_hand_back  # type: ignore[method-assign]
