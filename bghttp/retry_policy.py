"""The one place that decides what is retryable and how long to wait.

The schedule is the original plugin's: after error number n the request waits
``min(2**n, 512)`` seconds (2, 4, 8 … 512), times ``BGHTTP_BACKOFF_SCALE``.
There is no jitter: users rely on the exact schedule.
"""

from __future__ import annotations

import enum

MAX_BACKOFF_SECONDS = 512


class Outcome(enum.StrEnum):
    """How one attempt ended."""

    SUCCESS = "success"
    HTTP_ERROR = "http_error"  # the server answered with a status >= 400
    TIMEOUT = "timeout"
    NETWORK_ERROR = "network_error"  # refused, reset, DNS failure, unreachable
    BAD_RESPONSE = "bad_response"  # the answer contradicts its own headers (e.g. a body that is not gzip)
    DISK_FULL = "disk_full"  # the response could not be written
    STORE_ERROR = "store_error"  # the response could not be saved for another reason (EIO, EACCES ...)
    TOO_LARGE = "too_large"  # the response passed BGHTTP_MAX_RESPONSE_BYTES
    BLOCKED = "blocked"  # the egress policy refused the address
    INVALID = "invalid"  # the request cannot be sent at all (a header httpx refuses, too many redirects ...)
    CANCELLED = "cancelled"  # the request was cancelled while it ran


_RETRYABLE = frozenset(
    {
        Outcome.HTTP_ERROR,
        Outcome.TIMEOUT,
        Outcome.NETWORK_ERROR,
        Outcome.BAD_RESPONSE,
        Outcome.DISK_FULL,
        Outcome.STORE_ERROR,
    }
)


def is_retryable(outcome: Outcome) -> bool:
    return outcome in _RETRYABLE


def backoff_seconds(retry_number: int, scale: float = 1.0) -> float:
    """Delay before retry number ``retry_number`` (1 for the first retry)."""
    if retry_number < 1:
        raise ValueError("retry_number starts at 1")
    return float(min(2**retry_number, MAX_BACKOFF_SECONDS) * scale)
