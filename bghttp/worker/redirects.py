"""The driver side of a redirect: the ``Location`` resolved with httpx's URL type.

The rule itself (the method, which headers go along, whether the body is kept)
is the core's: :mod:`bghttp.core.redirects`.
"""

from __future__ import annotations

import dataclasses

import httpx

from ..core.outcomes import RedirectRefused
from ..core.redirects import FOLLOWED_SCHEMES, MAX_REDIRECTS, REDIRECT_STATUSES, redirect_rule
from ..core.redirects import is_redirect as is_redirect_status
from ..core.urls import DEFAULT_PORTS
from ..redaction import redact_url

__all__ = ["MAX_REDIRECTS", "REDIRECT_STATUSES", "Hop", "RedirectRefused", "is_redirect", "next_hop", "origin"]


@dataclasses.dataclass(frozen=True)
class Hop:
    """The next request of a redirect chain."""

    method: str
    url: httpx.URL
    headers: list[tuple[str, str]]
    keeps_body: bool


def is_redirect(response: httpx.Response) -> bool:
    return is_redirect_status(response.status_code, "location" in response.headers)


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or DEFAULT_PORTS.get(url.scheme)


def next_hop(
    method: str, url: httpx.URL, headers: list[tuple[str, str]], response: httpx.Response, *, keeps_body: bool
) -> Hop:
    """The hop that ``response`` (a redirect answering ``method url``) asks for."""
    location = response.headers["location"]
    shown = redact_url(location)[:200]  # a Location may carry a password like any URL
    try:
        target = url.join(location)
    except (httpx.InvalidURL, ValueError, UnicodeError) as error:
        raise RedirectRefused(f"redirect to an invalid URL {shown!r}: {error}") from None
    if target.scheme not in FOLLOWED_SCHEMES or not target.host:
        raise RedirectRefused(f"redirect to {shown!r}: only http and https URLs are followed")
    if url.fragment and not target.fragment:
        target = target.copy_with(fragment=url.fragment)
    rule = redirect_rule(
        method, response.status_code, headers, cross_origin=origin(target) != origin(url), keeps_body=keeps_body
    )
    return Hop(rule.method, target, rule.headers, rule.keeps_body)
