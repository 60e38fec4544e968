"""Values quoted in error messages: short, one line, whatever a caller or a producer sent.

An error's text goes into exceptions, the worker's log and ``request.rejected``
events, so a 100 KB ID, a structure nested past the recursion limit or an int
too long for ``str()`` must not make it huge or make quoting it raise.
"""

from __future__ import annotations

import reprlib

_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 80
_SHORT_REPR.maxlevel = 3


def quoted(value: object) -> str:
    """``repr(value)``, shortened with ``...`` where it is long or deep."""
    try:
        return _SHORT_REPR.repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits()
        return f"a {type(value).__name__} too large to show"


__all__ = ["quoted"]
