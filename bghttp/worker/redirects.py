"""Where a redirect leads, with which method, and which of the caller's headers go along.

bghttp follows redirects itself (httpx's ``follow_redirects`` is off) so that
the header rule is its own:

* same origin (scheme, host and port unchanged): every header the caller gave
  goes along, ``Cookie`` included;
* another origin: every header bghttp treats as secret (``logs.is_secret_header``:
  ``Authorization``, ``Proxy-Authorization``, ``Cookie``, ``X-Api-Key``, any
  ``*token*`` …) and ``Host`` are dropped, for this hop and every later one.

Methods follow httpx (and browsers): 303 turns anything but HEAD into GET, 301
and 302 turn POST into GET; a request turned into GET loses its body and the
headers that described it. 307 and 308 resend the same method and body.
"""

from __future__ import annotations

import dataclasses

import httpx

from ..core.outcomes import RedirectRefused
from ..redaction import is_secret_header

MAX_REDIRECTS = 20
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_BODY_HEADERS = frozenset({"content-length", "transfer-encoding", "content-type"})


@dataclasses.dataclass(frozen=True)
class Hop:
    """The next request of a redirect chain."""

    method: str
    url: httpx.URL
    headers: list[tuple[str, str]]
    keeps_body: bool


def is_redirect(response: httpx.Response) -> bool:
    return response.status_code in REDIRECT_STATUSES and "location" in response.headers


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def next_hop(
    method: str, url: httpx.URL, headers: list[tuple[str, str]], response: httpx.Response, *, keeps_body: bool
) -> Hop:
    """The hop that ``response`` (a redirect answering ``method url``) asks for."""
    location = response.headers["location"]
    try:
        target = url.join(location)
    except (httpx.InvalidURL, ValueError, UnicodeError) as error:
        raise RedirectRefused(f"redirect to an invalid URL {location[:200]!r}: {error}") from None
    if target.scheme not in _DEFAULT_PORTS or not target.host:
        raise RedirectRefused(f"redirect to {location[:200]!r}: only http and https URLs are followed")
    if url.fragment and not target.fragment:
        target = target.copy_with(fragment=url.fragment)

    turns_into_get = (response.status_code == 303 and method != "HEAD") or (
        response.status_code in (301, 302) and method == "POST"
    )
    new_method = "GET" if turns_into_get else method
    body_dropped = new_method != method
    cross_origin = origin(target) != origin(url)

    kept = [
        (name, value)
        for name, value in headers
        if not (cross_origin and (is_secret_header(name) or name.lower() == "host"))
        and not (body_dropped and name.lower() in _BODY_HEADERS)
    ]
    return Hop(new_method, target, kept, keeps_body and not body_dropped)
