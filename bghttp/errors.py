"""The bghttp exception tree.

Every error bghttp raises on purpose derives from :class:`BghttpError`, so a
caller can catch "anything from bghttp" with one class::

    BghttpError
    ├── InvalidRequest            bad input to a client call; nothing was stored (a ValueError)
    │   ├── InvalidRequestId      a request ID that is not a safe file name
    │   └── InvalidArgument       a bad argument other than the request (on_conflict, list's status)
    ├── ConfigError               a setting (BGHTTP_* variable, Settings field, CLI option) that
    │                             cannot be used; raised before anything starts (a ValueError)
    ├── RequestExists             a request ID is taken by a different request (or by any, with
    │                             on_conflict="reject"), or a replace was refused; nothing was stored
    ├── RequestRunning            remove/replace/retry of a request whose attempt did not stop in time
    ├── RetryRefused              retry() of a request that is not failed or cancelled
    ├── UnknownRequest            no request with that ID in the store
    ├── BrokerUnavailable         the broker did not answer or did not confirm the message;
    │                             nothing was kept in the store
    ├── LocalWorkerDied           local mode: the in-process worker stopped working; requests
    │                             stay in the store for the next local worker
    ├── StoreError                the store could not be read or written
    └── WaitTimeout               wait() gave up before the request was terminal

Errors of an *attempt* (timeouts, network errors, HTTP >= 400) are never raised
to the caller: they are recorded in the request's status record.
"""

from __future__ import annotations


class BghttpError(Exception):
    """Root of every error bghttp raises on purpose."""


class InvalidRequest(BghttpError, ValueError):
    """A client call got input it cannot accept. Nothing was written to the store."""


class InvalidRequestId(InvalidRequest):
    """A request ID is not a safe file name (``[A-Za-z0-9._-]{1,128}``, not ``.``/``..``)."""


class InvalidArgument(InvalidRequest):
    """An argument of a client call that is not part of a request is not one it accepts."""


class ConfigError(BghttpError, ValueError):
    """A setting has a value that cannot be used; the message names the setting and what it accepts."""


class RequestExists(BghttpError):
    """The request ID is taken and this submit was not stored (see ``on_conflict`` in docs/api.md).

    Raised when a *different* request has the ID (``differences`` names what differs:
    ``method``, ``URL``, ``headers``, ``body``, ...), when ``on_conflict="replace"`` may
    not replace the request there (it is running, or has an outcome still to come), and
    with ``on_conflict="reject"`` for any request there. An identical resubmit is not
    an error: it returns the existing request.
    """

    def __init__(self, message: str, differences: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        #: What differs between the submitted request and the stored one; empty if that is not the reason.
        self.differences = differences

    def __reduce__(self) -> tuple[type[RequestExists], tuple[str, tuple[str, ...]]]:
        return type(self), (str(self), self.differences)


class RequestRunning(BghttpError):
    """A worker is running the request's attempt: it cannot be removed or replaced now.

    ``remove`` cancels the request first; this means the attempt did not stop
    within the wait. The request stays (cancelled); removing it again later works.
    """


class RetryRefused(BghttpError):
    """``retry()`` replays failed and cancelled requests only; this one is in progress (queued,
    running or waiting: perhaps just replayed by another caller) or completed. Nothing changed."""


class UnknownRequest(BghttpError, KeyError):
    """No request with this ID exists in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown request"


class BrokerUnavailable(BghttpError):
    """The broker did not confirm the message. The request was not accepted and not stored."""


class LocalWorkerDied(BghttpError):
    """Local mode: a thread of the in-process worker ended unexpectedly; the message names the cause.

    Nothing is lost: every request is in the store and the next local worker
    (a new client, or ``bghttp worker --local``) recovers it.
    """


class StoreError(BghttpError):
    """The store could not be read or written (permissions, full disk, corrupt file)."""


class WaitTimeout(BghttpError, TimeoutError):
    """``wait()`` reached its timeout before the request reached a terminal status."""
