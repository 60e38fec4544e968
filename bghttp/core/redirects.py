"""Where a redirect leads with which method, and which of the caller's headers go along.

bghttp follows redirects itself (the HTTP client's own following is off) so that
the header rule is its own:

* same origin (scheme, host and port unchanged): every header the caller gave
  goes along, ``Cookie`` included;
* another origin: every header bghttp treats as secret (``redaction.is_secret_header``:
  ``Authorization``, ``Proxy-Authorization``, ``Cookie``, ``X-Api-Key``, any
  ``*token*`` …) and ``Host`` are dropped, for this hop and every later one.

Methods follow httpx (and browsers): 303 turns anything but HEAD into GET, 301
and 302 turn POST into GET; a request turned into GET loses its body and the
headers that described it. 307 and 308 resend the same method and body.

The driver resolves the ``Location`` against the hop's URL with its client's URL
type (``worker.redirects.next_hop``) and asks :func:`redirect_rule` the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..redaction import is_secret_header

MAX_REDIRECTS = 20
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: The schemes a redirect may lead to.
FOLLOWED_SCHEMES = frozenset({"http", "https"})
_BODY_HEADERS = frozenset({"content-length", "transfer-encoding", "content-type"})


@dataclasses.dataclass(frozen=True)
class RedirectRule:
    """The next hop's method and headers, and whether it still sends the request's body."""

    method: str
    headers: list[tuple[str, str]]
    keeps_body: bool


def is_redirect(status_code: int, has_location: bool) -> bool:
    return status_code in REDIRECT_STATUSES and has_location


def redirect_rule(
    method: str,
    status_code: int,
    headers: Sequence[tuple[str, str]],
    *,
    cross_origin: bool,
    keeps_body: bool,
) -> RedirectRule:
    """What a ``status_code`` redirect answering ``method`` (sent with ``headers``) asks of the next hop."""
    turns_into_get = (status_code == 303 and method != "HEAD") or (status_code in (301, 302) and method == "POST")
    new_method = "GET" if turns_into_get else method
    body_dropped = new_method != method
    kept = [
        (name, value)
        for name, value in headers
        if not (cross_origin and (is_secret_header(name) or name.lower() == "host"))
        and not (body_dropped and name.lower() in _BODY_HEADERS)
    ]
    return RedirectRule(new_method, kept, keeps_body and not body_dropped)


__all__ = ["FOLLOWED_SCHEMES", "MAX_REDIRECTS", "REDIRECT_STATUSES", "RedirectRule", "is_redirect", "redirect_rule"]
