"""Values quoted in error messages and shown on terminals, whatever a caller, producer or server sent.

* :func:`quoted`: an error's text goes into exceptions, the worker's log and
  ``request.rejected`` events, so a 100 KB ID, a structure nested past the
  recursion limit or an int too long for ``str()`` must not make it huge or
  make quoting it raise.
* :func:`terminal_safe`: text for a person's terminal (the CLI's human output,
  console logs). A server chooses its reason phrase, header values and
  redirect URLs; h11 accepts ESC and BEL in them, and a URL may hold bidi
  overrides. Raw, they would clear the screen, write the clipboard (OSC 52),
  set the title, move the cursor or reorder what the operator reads.
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


#: C0 controls (newline and tab included: a value never holds structure), DEL and C1 controls: ``\x1b``.
_CONTROL_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
#: Bidi marks, embeddings, overrides and isolates, and Unicode's line/paragraph separators: ``\u202e``.
_FORMAT_ESCAPES = {
    code: f"\\u{code:04x}"
    for code in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)
}
_TERMINAL_ESCAPES = {**_CONTROL_ESCAPES, **_FORMAT_ESCAPES, 0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def terminal_safe(text: str) -> str:
    """``text`` with every control character and bidi control shown as a visible escape (``\\x1b``, ``\\u202e``).

    Everything else (letters of any script, emoji, backslashes) is left as it
    is. Only for output a person reads: ``--json`` and ``--body`` stay exact.
    """
    return text.translate(_TERMINAL_ESCAPES)


__all__ = ["quoted", "terminal_safe"]
