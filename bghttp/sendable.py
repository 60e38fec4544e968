"""Ask httpx and h11 whether the worker will be able to send a request.

Validation at submit must accept exactly what the worker can send. Rather than a
second set of rules that could drift from the libraries', these checks run the
libraries themselves: httpx parses the URL and encodes the headers (as ASCII)
the way the worker's client will, and h11 writes the request head (and an
in-memory body) the way the worker's connection will. Whatever they refuse is
an :class:`InvalidRequest` with a one-line message that never quotes a header
value (it may be a secret) nor a URL's password.
"""

from __future__ import annotations

import h11
import httpx

from .errors import InvalidRequest
from .redaction import broker_url_secrets, redact_url, redact_userinfo, request_secrets, scrub

#: bghttp frames the body itself (httpx computes the length from what it sends);
#: a caller's own framing header would contradict it, or smuggle a second one.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding"})
#: Longest URL shown in a message; the rest is elided.
_SHOWN_URL_CHARS = 200


def shown_url(url: str) -> str:
    """``url`` as a message may quote it: password hidden, length bounded.

    Also a password with an unencoded '/', '?' or '#' (urllib ends the authority
    there): a URL quoted in an error may be malformed in just that way.
    """
    url = redact_userinfo(redact_url(url))
    return repr(url if len(url) <= _SHOWN_URL_CHARS else url[:_SHOWN_URL_CHARS] + "…")


def scrubbed_parse_error(error: Exception, url: str) -> str:
    """A URL parser's message about ``url`` without the pieces of a password it cut ("… as 's3cr'")."""
    return scrub(str(error), [*broker_url_secrets(url), *request_secrets([], url)])


def check_url(url: str) -> httpx.URL:
    """The URL as httpx will send it; InvalidRequest if httpx cannot parse it."""
    try:
        parsed = httpx.URL(url)
        host = parsed.host  # decodes an "xn--" host, which may fail
    except (httpx.InvalidURL, UnicodeError, ValueError) as error:  # idna raises UnicodeErrors of its own
        reason = _scrubbed(error, [], url)
        raise InvalidRequest(f"malformed URL {shown_url(url)}: {reason}") from None
    if not host:
        raise InvalidRequest(f"malformed URL {shown_url(url)}: no host")
    return parsed


def check_header(name: str, value: str) -> None:
    """One header as httpx encodes it (ASCII); the value is never quoted.

    The cheap test that finds most bad headers; :func:`check_request` asks h11
    about the rest, and names the header that h11 refused.
    """
    if not name.isascii():
        raise InvalidRequest(f"invalid header name {name!r}")
    if not value.isascii():
        raise InvalidRequest(
            f"header {name!r} has characters outside ASCII in its value (httpx sends header values as ASCII)"
        )
    if name.lower() in FRAMING_HEADERS:
        raise InvalidRequest(f"header {name!r} is set by bghttp from the body; leave it out")


def check_request(method: str, url: str, headers: list[tuple[str, str]]) -> None:
    """The request head built by httpx and validated by h11, as the worker's connection will.

    The body needs no check: its framing is httpx's own (a caller cannot set
    Content-Length or Transfer-Encoding), and its bytes are sent as they are.
    """
    try:
        request = httpx.Request(method, url, headers=headers)
        h11.Request(method=request.method, target=request.url.raw_path, headers=request.headers.raw)
    except h11.LocalProtocolError as error:
        for name, value in headers:
            _check_header_with_h11(name, value)
        raise InvalidRequest(f"the request cannot be sent as HTTP/1.1: {_scrubbed(error, headers, url)}") from None
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError, ValueError, TypeError) as error:
        raise InvalidRequest(f"the request cannot be sent as HTTP/1.1: {_scrubbed(error, headers, url)}") from None


def _check_header_with_h11(name: str, value: str) -> None:
    header = (name.encode(), value.encode())
    # h11 needs exactly one Host header: add one unless this is it.
    headers = [header] if name.lower() == "host" else [(b"Host", b"h"), header]
    try:
        h11.Request(method=b"GET", target=b"/", headers=headers)
    except h11.LocalProtocolError as error:
        if "name" in str(error):
            raise InvalidRequest(f"invalid header name {name!r}") from None
        raise InvalidRequest(
            f"header {name!r} has a value HTTP/1.1 cannot carry"
            " (control characters, or whitespace at its start or end)"
        ) from None


def _scrubbed(error: Exception, headers: list[tuple[str, str]], url: str) -> str:
    text = scrub(f"{type(error).__name__}: {error}", request_secrets(headers, url))
    return text.splitlines()[0] if text else type(error).__name__
