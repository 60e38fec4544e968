"""How an attempt ended: the outcome types, and the one place that judges an error or an answer.

:func:`judge_error` turns whatever an attempt raised into a :class:`Judgement`
(outcome, clear error text, whether another attempt would end the same way);
:func:`judge_status` does the same for the server's answer (its status code,
reason and ``Retry-After``). Both the attempt and the runner's closing of an
attempt a dead worker left (its answer read back from the saved metadata) judge
through these, so a status is worded the same wherever it is judged.

No HTTP client is imported here: the driver passes its client's exception
classes as a :class:`ClientErrors`, and raises bghttp's own attempt errors
(defined here, so that every driver raises the same ones).
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import time
from collections.abc import Callable, Iterable

from .retry_after import RETRY_AFTER_STATUSES, parse_retry_after

#: The message of the timeout raised when the attempt's own deadline passes.
DEADLINE_PASSED = "the attempt's deadline passed"
#: A write refused for want of room: the disk, the user's quota, or the file-size limit (RLIMIT_FSIZE).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class Outcome(enum.StrEnum):
    """How one attempt ended."""

    SUCCESS = "success"
    HTTP_ERROR = "http_error"  # the server answered with a status >= 400
    TIMEOUT = "timeout"
    NETWORK_ERROR = "network_error"  # refused, reset, DNS failure, unreachable
    BAD_RESPONSE = "bad_response"  # the answer contradicts its own headers (e.g. a body that is not gzip)
    DISK_FULL = "disk_full"  # no space to save the response, or to mark the attempt sent (then nothing was sent)
    STORE_ERROR = "store_error"  # as disk_full, for another reason (EIO, EACCES ...)
    TOO_LARGE = "too_large"  # the response passed BGHTTP_MAX_RESPONSE_BYTES
    BLOCKED = "blocked"  # the egress policy refused the address
    INVALID = "invalid"  # the request cannot be sent at all (a header httpx refuses, too many redirects ...)
    CANCELLED = "cancelled"  # the request was cancelled while it ran
    INTERRUPTED = "interrupted"  # the worker died during the attempt (killed, out of memory)


# ------------------------------------------------------ bghttp's attempt errors
class AttemptCancelled(Exception):
    """The request was cancelled while its attempt ran."""


class EgressBlocked(Exception):
    """Raised by an egress policy transport when an address is not allowed."""


class ResponseTooLarge(Exception):
    """The response passed ``BGHTTP_MAX_RESPONSE_BYTES``."""


class RedirectRefused(Exception):
    """The redirect cannot be followed (a URL the client cannot send, a scheme that is not HTTP)."""


class TooManyRedirects(Exception):
    """The redirect chain passed ``MAX_REDIRECTS``."""


class RequestUnsendable(Exception):
    """The stored request cannot be turned into an HTTP request (its files, its headers, its URL)."""


class SendNotRecorded(Exception):
    """The attempt could not be marked "sent" before its first byte: it is not sent.

    ``store_error`` is why (the StoreError): raised inside httpcore's trace hook, this
    error leaves its connection pool ``from None``, which drops ``__cause__``.
    """

    def __init__(self, message: str, store_error: BaseException | None = None) -> None:
        super().__init__(message)
        self.store_error = store_error


class ResponseNotSaved(Exception):
    """Writing the response into the store failed (``__cause__`` is the OSError/StoreError)."""


class BadEncoding(Exception):
    """The body does not decode as its ``Content-Encoding`` says."""


def is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error``, or an error it was raised from (a StoreError's OSError), is a disk-full error."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        error = error.__cause__
    return False


# ------------------------------------------------------------------ judging
ErrorClasses = tuple[type[BaseException], ...]


@dataclasses.dataclass(frozen=True)
class ClientErrors:
    """The HTTP client's exception classes, by what they mean to an attempt (its driver supplies them)."""

    timeout: ErrorClasses = ()
    #: Errors after which the client would refuse again (too many redirects of its own).
    too_many_redirects: ErrorClasses = ()
    #: The client refused what it was asked to send (a header value, a URL).
    refused_to_send: ErrorClasses = ()
    #: The client could not decode the body as its ``Content-Encoding`` says.
    decoding: ErrorClasses = ()
    #: The connection failed: refused, reset, closed early, a protocol error of the server.
    transport: ErrorClasses = ()
    #: The response's head passed what the client reads (not a network error: the same next time).
    head_too_large: Callable[[BaseException], bool] = lambda error: False
    #: The largest response head the client reads, in bytes (for the error text).
    head_limit: int = 0


@dataclasses.dataclass(frozen=True)
class Judgement:
    """An attempt's outcome and the error text that goes into its record."""

    outcome: Outcome
    error: str | None = None
    #: Seconds the server's ``Retry-After`` asked for (429 and 503 answers only; None: none, or unusable).
    retry_after: float | None = None
    #: Another attempt would end the same way (an answer this client refuses to read): not retried.
    final: bool = False


def judge_status(
    status_code: int, reason: str = "", headers: Iterable[tuple[str, str]] = (), now: float | None = None
) -> Judgement:
    """The server answered ``status_code``: success below 400, else ``http_error`` ("HTTP 503 Service
    Unavailable"), with the wait a 429's or 503's ``Retry-After`` asks for, counted from ``now``."""
    if status_code < 400:
        return Judgement(Outcome.SUCCESS)
    retry_after = None
    if status_code in RETRY_AFTER_STATUSES:
        values = [value for name, value in headers if name.lower() == "retry-after"]
        retry_after = parse_retry_after(values[0] if values else None, time.time() if now is None else now)
    return Judgement(Outcome.HTTP_ERROR, f"HTTP {status_code} {reason}".rstrip(), retry_after)


def judge_error(
    error: BaseException, client: ClientErrors, *, phase: str, timeout: float, status_code: int | None
) -> Judgement:
    """The one place that turns what an attempt raised into an outcome and a clear error.

    ``phase`` says how far the attempt got ("connecting", "reading the response
    body" ...), ``status_code`` the answer's status if one came. Anything not
    known here (a client or bghttp bug) is ``invalid``: it must not become a
    resend that no ``retries`` allowed.
    """
    where = phase
    if isinstance(error, AttemptCancelled):
        return Judgement(Outcome.CANCELLED, f"cancelled while {where}")
    if isinstance(error, client.timeout):
        detail = "" if str(error) == DEADLINE_PASSED else f": {error or type(error).__name__}"
        return Judgement(Outcome.TIMEOUT, f"timeout after {timeout:g}s while {where}{detail}")
    if isinstance(error, EgressBlocked):
        return Judgement(Outcome.BLOCKED, str(error))
    if isinstance(error, ResponseTooLarge):
        return Judgement(Outcome.TOO_LARGE, str(error))
    if isinstance(error, (TooManyRedirects, RedirectRefused, *client.too_many_redirects)):
        return Judgement(Outcome.INVALID, str(error))
    if isinstance(error, RequestUnsendable):
        return Judgement(Outcome.INVALID, f"the request cannot be sent: {error}")
    if isinstance(error, (UnicodeError, *client.refused_to_send)):
        # The client refused what we asked it to send (a header value, a URL).
        return Judgement(Outcome.INVALID, f"the request cannot be sent: {type(error).__name__}: {error}")
    if client.head_too_large(error):
        # The server's answer, not the network: the same wall next time. With the head
        # read (a status code), it was a line of the chunked body: a chunk size or a trailer.
        what = "the response head" if status_code is None else f"HTTP {status_code}, a line of the chunked body"
        text = (
            f"{what} is larger than the {client.head_limit // 1024} KiB this client reads "
            f"({error}); not retried: the server would send it again"
        )
        return Judgement(Outcome.BAD_RESPONSE, text, final=True)
    if isinstance(error, (BadEncoding, *client.decoding)):
        # The server's answer contradicts its own Content-Encoding: like a body cut
        # short, a broken answer (a proxy, a cache, a bad deploy) may be fine next time.
        return Judgement(Outcome.BAD_RESPONSE, f"HTTP {status_code}, {error}")
    if isinstance(error, client.transport):
        return Judgement(Outcome.NETWORK_ERROR, f"{type(error).__name__} while {where}: {error}")
    if isinstance(error, SendNotRecorded | ResponseNotSaved):
        return _judge_store_failure(error)
    return Judgement(Outcome.INVALID, f"unexpected {type(error).__name__} while {where}: {error}")


def _judge_store_failure(error: SendNotRecorded | ResponseNotSaved) -> Judgement:
    """The store failed us: before sending (nothing went out) or while saving the answer."""
    cause = error.__cause__ or error
    if isinstance(error, SendNotRecorded):
        cause = error.store_error or cause
        # Nothing went out; a full disk here is a full disk like any other write of the attempt.
        if is_disk_full(cause):
            return Judgement(Outcome.DISK_FULL, f"not sent: no space left to record the attempt first: {cause}")
        return Judgement(Outcome.STORE_ERROR, f"not sent: the attempt could not be recorded first: {cause}")
    if is_disk_full(cause):
        return Judgement(Outcome.DISK_FULL, f"no space left to save the response: {cause}")
    return Judgement(Outcome.STORE_ERROR, f"cannot save the response: {cause}")


__all__ = [
    "DEADLINE_PASSED",
    "DISK_FULL_ERRNOS",
    "AttemptCancelled",
    "BadEncoding",
    "ClientErrors",
    "EgressBlocked",
    "Judgement",
    "Outcome",
    "RedirectRefused",
    "RequestUnsendable",
    "ResponseNotSaved",
    "ResponseTooLarge",
    "SendNotRecorded",
    "TooManyRedirects",
    "is_disk_full",
    "judge_error",
    "judge_status",
]
