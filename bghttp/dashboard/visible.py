"""Server-controlled text made visible: control characters and bidi overrides as escapes.

HTML escaping (Jinja2's autoescape) stops markup, but not what a string does to
the reader: an ESC byte, a NUL, or a right-to-left override (U+202E) that makes
``exe.txt`` read as ``txt.exe``. Every string a server, a worker or a submitter
chose (headers, reason, URL, metadata, error text, body preview) goes through
:func:`visible` before it is rendered, so such characters show as ``\\x1b`` or
``\\u202e``. The CLI's ``quoting.terminal_safe`` escapes for a terminal and
escapes newlines (a CLI field is one line); a page keeps tabs and newlines as
layout (a body preview has lines) and also shows every other invisible format
character, so the dashboard has this function of its own.
"""

from __future__ import annotations

import re
import unicodedata

# C0 and C1 controls (tab and newline kept: they are layout, not commands), DEL, and the
# Unicode format characters that reorder or hide text: bidi embeddings, overrides and
# isolates, zero-width and invisible separators, the BOM.
_HIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(value: object) -> str:
    """``value`` as text with every control, bidi and invisible format character shown as an escape."""
    text = value if isinstance(value, str) else str(value)
    text = _HIDDEN.sub(_escape, text)
    # Any other format character (category Cf) hides or reorders text as well.
    if any(unicodedata.category(char) == "Cf" for char in text):
        text = "".join(f"\\u{ord(char):04x}" if unicodedata.category(char) == "Cf" else char for char in text)
    return text


def visible_line(value: object) -> str:
    """As :func:`visible`, with tab and newline escaped too: for one-line fields (headers, errors)."""
    return visible(value).replace("\t", "\\t").replace("\n", "\\n")
