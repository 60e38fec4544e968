"""An attempt's network I/O under one absolute deadline and a cancel check.

httpx's timeouts are per operation: every read may wait the full read timeout
again, so a server that sends one byte a second keeps an attempt alive for
ever. Here every socket operation of an attempt is cut into slices of at most
``CHECK_SECONDS``; between slices the attempt's deadline and its cancel flag
are checked. A stalled or trickling server therefore cannot hold an attempt
past its deadline, and a cancel is seen within ``CHECK_SECONDS`` while the
worker waits for the response headers, streams the body or uploads the request.

The mechanism is a ``httpcore.NetworkBackend`` whose streams do the slicing; it
sits under httpx's transport, so it sees every connection, pooled or new, and
every redirect hop. It only acts while ``attempt_limits()`` is active on the
calling thread (a ``ContextVar``): other users of the same client are untouched.
Nothing is done from another thread, so a pooled connection is never touched
by an attempt that does not hold it.

A connection goes back to the pool only if the response ended exactly where
its framing says (``release_connection``): bytes a server sent past it (a body
after a HEAD response, a body longer than its Content-Length) would otherwise
be read as the answer to the next request on that connection.

Not bounded here: the DNS lookup (``getaddrinfo`` cannot be interrupted) and
TCP connect is bounded by the deadline but not sliced for cancel.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import h11
import httpcore
import httpx

from ..core.outcomes import DEADLINE_PASSED, AttemptCancelled

#: Longest a socket operation blocks before the deadline and the cancel flag are checked.
CHECK_SECONDS = 0.2

SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


class AttemptLimits:
    """The deadline (``time.monotonic()``) and cancel check of the running attempt."""

    def __init__(self, deadline: float, timeout: float, is_cancelled: Callable[[], bool]) -> None:
        self.deadline = deadline
        self.timeout = timeout
        self._is_cancelled = is_cancelled
        self._next_cancel_check = time.monotonic() + CHECK_SECONDS

    def check(self, timeout_error: type[Exception] = httpcore.ReadTimeout) -> float:
        """Raise if the attempt is over (deadline passed, cancelled); else the seconds left."""
        now = time.monotonic()
        if now >= self._next_cancel_check:
            self._next_cancel_check = now + CHECK_SECONDS
            if self._is_cancelled():
                raise AttemptCancelled("cancelled while running")
        left = self.deadline - now
        if left <= 0:
            raise timeout_error(DEADLINE_PASSED)
        return left

    def slice(self, op_deadline: float | None, timeout_error: type[Exception]) -> float:
        """How long the next blocking call may wait: never past either deadline, at most CHECK_SECONDS."""
        left = self.check(timeout_error)
        if op_deadline is not None:
            op_left = op_deadline - time.monotonic()
            if op_left <= 0:
                raise timeout_error("timed out")
            left = min(left, op_left)
        return min(left, CHECK_SECONDS)


_current: contextvars.ContextVar[AttemptLimits | None] = contextvars.ContextVar("bghttp_attempt_limits", default=None)


@contextlib.contextmanager
def attempt_limits(limits: AttemptLimits) -> Iterator[AttemptLimits]:
    """Apply ``limits`` to every socket operation this thread makes inside the block."""
    token = _current.set(limits)
    try:
        yield limits
    finally:
        _current.reset(token)


def _op_deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


class LimitedStream(httpcore.NetworkStream):
    """A network stream whose reads and writes obey the current attempt's limits."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner
        self._retired = False

    def retire(self) -> None:
        """Never reuse this connection: the pool closes it instead of handing it out again."""
        self._retired = True

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        limits = _current.get()
        if limits is None:
            return self._inner.read(max_bytes, timeout)
        op_deadline = _op_deadline(timeout)
        while True:
            wait = limits.slice(op_deadline, httpcore.ReadTimeout)
            try:
                return self._inner.read(max_bytes, wait)
            except httpcore.ReadTimeout:
                continue  # nothing was read: check the limits, then wait again

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        limits = _current.get()
        sock = self._inner.get_extra_info("socket")
        if limits is None or not isinstance(sock, socket.socket):
            self._inner.write(buffer, timeout)
            return
        # Our own send loop: httpcore's gives each send() the whole timeout again,
        # so a sink that accepts a few bytes at a time could stretch it for ever.
        op_deadline = _op_deadline(timeout)
        view = memoryview(buffer)
        while view:
            sock.settimeout(limits.slice(op_deadline, httpcore.WriteTimeout))
            try:
                sent = sock.send(view)
            except (TimeoutError, ssl.SSLWantWriteError):
                continue  # nothing was sent: check the limits, then wait again
            except OSError as error:
                raise httpcore.WriteError(error) from error
            view = view[sent:]

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        limits = _current.get()
        if limits is not None:
            left = limits.check(httpcore.ConnectTimeout)
            timeout = left if timeout is None else min(timeout, left)
        return LimitedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        # httpcore asks whether an idle connection is readable before it reuses it;
        # "yes" means the server spoke out of turn, and the connection is closed.
        if info == "is_readable" and self._retired:
            return True
        return self._inner.get_extra_info(info)


def release_connection(response: httpx.Response) -> None:
    """Close ``response`` and let its connection be reused only if nothing was sent past it.

    httpcore keeps bytes its HTTP/1.1 parser received after a complete response
    and reads them as the start of the next response on that connection. A
    client never pipelines, so such bytes are a server's lie: the connection is
    retired. httpx has no public view of the parser; where it cannot be found
    (another httpx version, HTTP/2) the connection is retired too: a lost reuse
    costs a handshake, a reused poisoned connection costs a false answer.
    """
    stream = response.extensions.get("network_stream")
    if isinstance(stream, LimitedStream) and _bytes_past_response(response) is not False:
        stream.retire()
    response.close()


def _bytes_past_response(response: httpx.Response) -> bool | None:
    """Whether the parser holds bytes past the response; None if its state cannot be found."""
    # httpx's stream wraps httpcore's pool stream, which wraps the connection's
    # stream, which knows the connection and its h11 state.
    node: Any = response.stream
    for _ in range(8):
        state = getattr(node, "_h11_state", None)
        if isinstance(state, h11.Connection):
            data, _closed = state.trailing_data
            return bool(data)
        node = next((getattr(node, name) for name in _WRAPPED if hasattr(node, name)), None)
        if node is None:
            return None
    return None


#: The attributes under which httpx's and httpcore's streams keep what they wrap.
_WRAPPED = ("_stream", "_httpcore_stream", "_connection")


class LimitedNetworkBackend(httpcore.NetworkBackend):
    """Wraps a backend: connects within the attempt's deadline, hands out ``LimitedStream`` s."""

    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self.backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        return LimitedStream(self.backend.connect_tcp(host, port, _clamped(timeout), local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> httpcore.NetworkStream:
        return LimitedStream(self.backend.connect_unix_socket(path, _clamped(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


def _clamped(timeout: float | None) -> float | None:
    limits = _current.get()
    if limits is None:
        return timeout
    left = limits.check(httpcore.ConnectTimeout)
    return left if timeout is None else min(timeout, left)


def wrap_network_backend(
    transport: httpx.BaseTransport, wrap: Callable[[httpcore.NetworkBackend], httpcore.NetworkBackend]
) -> None:
    """Replace the network backend under an ``httpx.HTTPTransport`` with ``wrap(backend)``.

    httpx has no public hook for httpcore's network backend: fail loudly if a
    new httpx version moves it, rather than silently run without the wrapper.
    """
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(pool, httpcore.ConnectionPool) or not isinstance(backend, httpcore.NetworkBackend):
        raise RuntimeError("this httpx version hides httpcore's network backend: cannot wrap it")
    pool._network_backend = wrap(backend)


def limit_client_io(client: httpx.Client) -> httpx.Client:
    """Put every ``httpx.HTTPTransport`` of ``client`` (its own and env proxies') under attempt limits."""
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        if isinstance(transport, httpx.HTTPTransport):
            wrap_network_backend(transport, LimitedNetworkBackend)
    return client
