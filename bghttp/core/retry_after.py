"""``Retry-After``, parsed once: what a server's answer asks us to wait before the next attempt."""

from __future__ import annotations

import datetime
import email.utils

#: Answers whose ``Retry-After`` is honoured (RFC 9110 10.2.3 names 503 and 3xx; RFC 6585 adds 429).
RETRY_AFTER_STATUSES = frozenset({429, 503})


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` value asks for: delay-seconds or an HTTP-date; None if it is neither.

    A date in the past asks for 0 s. A negative number, a fraction or any other
    text is ignored (None): a broken header must not stall or break a retry.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(int(text)) if len(text) <= 12 else 1e12  # beyond any cap; int() refuses 4300+ digits
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": HTTP-dates are always UTC (RFC 9110 5.6.7)
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now)


__all__ = ["RETRY_AFTER_STATUSES", "parse_retry_after"]
