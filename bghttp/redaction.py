"""Which headers are secret, and how to keep their values out of logs and records.

Two tools:

* :func:`redact_headers` replaces the values of secret headers in a header list
  (the structlog processor in ``logs`` uses it for ``headers=`` fields);
* :func:`scrub` removes a request's secrets from free text (an error message
  written by httpx, h11 or the OS, which may quote a header value or the URL in
  any form: ``b'Bearer sk-…'``, ``'sk-…\\x0c'``, percent-encoded, JSON-escaped).
  The runner scrubs every attempt's error text once, before it is logged or
  stored in the status record.

Broker URLs (``BGHTTP_BROKER_URL``, a ``;`` list, possibly malformed) have their
own pair: :func:`redact_broker_url` to show one in a message and
:func:`broker_url_secrets` to scrub a message that may quote one (pika's and
urllib's parse errors). Every message that names the broker goes through them;
a connectivity probe's URL is shown through :func:`redact_userinfo`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import urllib.parse
from collections.abc import Iterable

SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token"}
)
REDACTED = "[REDACTED]"


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_HEADERS or "api-key" in lowered or "apikey" in lowered or "token" in lowered


def redact_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, REDACTED if is_secret_header(name) else value) for name, value in headers]


def request_secrets(headers: Iterable[tuple[str, str]], url: str) -> list[str]:
    """The secrets of a request: its secret header values and its URL's password.

    A header value like ``Bearer sk-…`` also yields its credentials (``sk-…``),
    since a message may quote them without the scheme; URL userinfo also yields
    the ``user:password`` base64 that httpx sends as Basic authorization.
    """
    secrets: list[str] = []
    for name, value in headers:
        if is_secret_header(name):
            secrets.append(value)
            scheme, _, credentials = value.strip().partition(" ")
            if credentials.strip() and " " not in scheme:
                secrets.append(credentials.strip())
    secrets.extend(_userinfo_secrets(url))
    return [secret for secret in secrets if secret]


def _userinfo_secrets(url: str) -> list[str]:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        parts = None
    if parts is not None and parts.password is None:
        return []
    # urlsplit failed or found a password: take what lies between "//" and the last "@".
    authority = url.partition("//")[2].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    userinfo = authority.rpartition("@")[0]
    user, _, password = userinfo.partition(":")
    if not password:
        return []
    plain = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    return [password, urllib.parse.unquote(password), base64.b64encode(plain.encode("utf-8")).decode("ascii")]


def _forms(secret: str) -> set[str]:
    """``secret`` as the messages of Python, httpx and h11 may spell it."""
    forms = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
        repr(secret.encode("utf-8", "surrogatepass"))[2:-1],
    }
    with contextlib.suppress(UnicodeEncodeError):
        forms.add(repr(secret.encode("latin-1"))[2:-1])
    return {form for form in forms if form}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every form of every secret replaced by ``[REDACTED]``."""
    forms = {form for secret in secrets for form in _forms(secret)}
    for form in sorted(forms, key=len, reverse=True):  # a longer form may contain a shorter one
        text = text.replace(form, REDACTED)
    return text


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo (if any) replaced, for messages."""
    return scrub(url, _userinfo_secrets(url))


def _broker_userinfo(url: str) -> tuple[str, str, str] | None:
    """``(text before the password, password, text after it)`` of one broker URL, or None if it has none.

    Works on URLs urllib cannot parse, and on a password with an unencoded
    ``/``, ``?`` or ``#`` (which urllib would take for the path): the userinfo
    ends at the last ``@`` of the authority, else of the text before the query.
    """
    scheme, slashes, rest = url.partition("//")
    if not slashes:
        return None
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    for candidate in (authority, rest.split("?", 1)[0].split("#", 1)[0], rest):
        if "@" in candidate:
            userinfo = candidate.rpartition("@")[0]
            break
    else:
        return None
    user, colon, password = userinfo.partition(":")
    if not colon or not password:
        return None
    before = f"{scheme}//{user}:"
    return before, password, url[len(before) + len(password) :]


def broker_url_secrets(value: str) -> list[str]:
    """The passwords of every URL of a ``;``-separated broker URL list (as written and decoded)."""
    secrets: list[str] = []
    for url in value.split(";"):
        parts = _broker_userinfo(url.strip())
        if parts is not None:
            password = parts[1]
            secrets.extend({password, urllib.parse.unquote(password)})
            # A parser that ends the authority at an unencoded "/", "?" or "#" quotes pieces of it.
            secrets.extend(re.split(r"[/?#]", password))
        secrets.extend(_userinfo_secrets(url.strip()))
    return list(dict.fromkeys(secret for secret in secrets if secret))


def redact_userinfo(url: str) -> str:
    """One URL of a setting (a broker, a connectivity probe), however malformed, with its password replaced."""
    parts = _broker_userinfo(url)
    return url if parts is None else f"{parts[0]}{REDACTED}{parts[2]}"


def redact_broker_url(value: str) -> str:
    """A broker URL (or a ``;`` list of them), however malformed, with every password replaced."""
    return ";".join(redact_userinfo(url) for url in value.split(";"))
