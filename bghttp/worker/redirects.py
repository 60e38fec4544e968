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
from ..sendable import scrubbed_parse_error, shown_url

__all__ = [
    "MAX_REDIRECTS",
    "REDIRECT_STATUSES",
    "Hop",
    "RedirectRefused",
    "is_redirect",
    "next_hop",
    "origin",
    "refuse_unparsable_location",
]


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
    try:
        target = url.join(location)
    except (httpx.InvalidURL, ValueError, UnicodeError) as error:
        raise _invalid_location(location, error) from None
    if target.scheme not in FOLLOWED_SCHEMES or not target.host:
        # A Location may carry a password like any URL (with an unencoded '/' in it, too).
        raise RedirectRefused(f"redirect to {shown_url(location)}: only http and https URLs are followed")
    if url.fragment and not target.fragment:
        target = target.copy_with(fragment=url.fragment)
    rule = redirect_rule(
        method, response.status_code, headers, cross_origin=origin(target) != origin(url), keeps_body=keeps_body
    )
    return Hop(rule.method, target, rule.headers, rule.keeps_body)


def refuse_unparsable_location(response: httpx.Response) -> None:
    """An httpx response hook: a redirect whose ``Location`` httpx cannot parse, told without its password.

    httpx parses the ``Location`` of every redirect inside ``send``, even with
    ``follow_redirects=False``, right after the response hooks, and quoted its
    parser's message: "Invalid URL in location header: Invalid port: 'pa'" for a
    password with an unencoded '/'. The same protocol error (a malformed answer,
    retried as one) is raised here first, with the Location shown redacted.
    """
    location = response.headers.get("location")
    if location is None or not response.has_redirect_location:
        return
    try:
        httpx.URL(location)
    except (httpx.InvalidURL, ValueError, UnicodeError) as error:
        reason = scrubbed_parse_error(error, location)
        raise httpx.RemoteProtocolError(
            f"Invalid URL in location header {shown_url(location)}: {reason}", request=response.request
        ) from None


def _invalid_location(location: str, error: Exception) -> RedirectRefused:
    return RedirectRefused(f"redirect to an invalid URL {shown_url(location)}: {scrubbed_parse_error(error, location)}")
