"""One HTTP attempt: send a stored request with httpx and stream the answer to a file.

``perform_attempt`` never raises for anything the attempt runs into: the
network, the server (lies about lengths or encodings, stalls, redirects), a
request httpx or h11 refuses to send, a body file that vanished, a response
that cannot be saved. Each becomes an :class:`AttemptResult` that the retry
policy judges. An exception that escaped would be re-run by Dramatiq as a
crash, i.e. the request would be sent again although no ``retries`` allowed it.
Only ``BaseException`` s that are not errors (a worker shutting down) pass.

The whole attempt (every redirect hop, connect, upload, headers, body) ends by
``timeout`` seconds after it started, and a cancel is seen within
``attempt_io.CHECK_SECONDS`` while it waits on the network (see ``attempt_io``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.cookiejar
import math
import os
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

import h11
import httpcore
import httpx

from ..core.body import BodySink
from ..core.decoding import content_codings
from ..core.outcomes import (
    AttemptCancelled,
    ClientErrors,
    EgressBlocked,
    Outcome,
    RequestUnsendable,
    ResponseNotSaved,
    SendNotRecorded,
    TooManyRedirects,
    judge_error,
    judge_status,
)
from ..core.response_meta import ResponseMeta
from ..errors import StoreError
from ..models import RequestSpec
from ..redaction import redact_url
from ..store_api import Store
from .attempt_io import AttemptLimits, attempt_limits, limit_client_io, release_connection
from .redirects import MAX_REDIRECTS, Hop, is_redirect, next_hop, refuse_unparsable_location

#: The most of a redirect's own body that is read (so the connection can be reused).
REDIRECT_BODY_LIMIT = 64 * 1024
#: The largest response head httpcore reads (h11's max_incomplete_event_size): over it, ``bad_response``.
RESPONSE_HEAD_LIMIT: int = httpcore.HTTP11Connection.MAX_INCOMPLETE_EVENT_SIZE

__all__ = [
    "AttemptCancelled",
    "AttemptResult",
    "EgressBlocked",
    "build_http_client",
    "perform_attempt",
]


@dataclasses.dataclass(frozen=True)
class AttemptResult:
    outcome: Outcome
    status_code: int | None = None
    error: str | None = None
    response_bytes: int = 0
    duration_ms: float = 0.0
    #: Seconds the server's ``Retry-After`` asked for (429 and 503 answers only; None: none, or unusable).
    retry_after: float | None = None
    #: Another attempt would end the same way (an answer this client refuses to read): not retried.
    final: bool = False


class _NoCookieJar(http.cookiejar.CookieJar):
    """A jar that keeps nothing.

    The worker's one httpx client serves every request, and requests are
    independent: a cookie one response sets must never be sent with another
    request (possibly another caller's) to the same host. Callers who need a
    cookie pass a ``Cookie`` header. Also saves httpx's cookie bookkeeping.
    """

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        pass


def build_http_client(
    *,
    pool_size: int = 16,
    transport: httpx.BaseTransport | None = None,
    trust_env: bool = True,
    verify: ssl.SSLContext | bool = True,
    mounts: Mapping[str, httpx.BaseTransport | None] | None = None,
) -> httpx.Client:
    """The one httpx client a worker process shares between its threads (keeps no cookies).

    Redirects are followed by ``perform_attempt`` (see ``redirects``), not by httpx.
    ``mounts`` routes URL patterns to other transports (a worker's proxies: ``http_env``).
    """
    client = httpx.Client(
        follow_redirects=False,
        limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
        transport=transport,
        trust_env=trust_env,
        verify=verify,
        cookies=_NoCookieJar(),
        mounts=mounts,
        event_hooks={"response": [refuse_unparsable_location]},
    )
    return limit_client_io(client)


@dataclasses.dataclass
class _Progress:
    """How far the attempt got: for the outcome's wording and its status code."""

    phase: str = "connecting"
    status_code: int | None = None
    #: Called once, before the request's first byte goes out (see ``perform_attempt``).
    on_sending: Callable[[], object] | None = None

    def trace(self, event: str, info: dict[str, Any]) -> None:
        # httpcore's trace extension names the steps of an HTTP/1.1 exchange. It traces the
        # CONNECT it sends to an HTTPS proxy too (bghttp never sends one itself): that is
        # still connecting, and no byte of the request has gone out.
        request = info.get("request")
        if getattr(request, "method", None) == b"CONNECT":
            return
        if event.endswith("send_request_headers.started"):
            self.phase = "sending the request"
            on_sending, self.on_sending = self.on_sending, None
            if on_sending is not None:
                try:
                    on_sending()
                except Exception as error:  # not recorded as sent: it must not be sent
                    raise SendNotRecorded(str(error), error) from error
        elif event.endswith("receive_response_headers.started"):
            self.phase = "waiting for the response (the request was sent)"


def perform_attempt(
    http: httpx.Client,
    store: Store,
    spec: RequestSpec,
    *,
    max_response_bytes: int | None = None,
    is_cancelled: Callable[[], bool] = lambda: False,
    on_sending: Callable[[], object] | None = None,
) -> AttemptResult:
    """Send ``spec`` once (following redirects); on an answer save the response (body, then metadata).

    ``on_sending`` is called once, just before the request's first byte goes out
    (after connecting): the runner records there that this attempt may reach the
    server. If it raises, nothing is sent and the outcome is ``store_error``.
    """
    started = time.monotonic()
    if not (isinstance(spec.timeout, float | int) and 0 < spec.timeout < math.inf):
        return AttemptResult(Outcome.INVALID, error=f"the request cannot be sent: timeout {spec.timeout!r}")
    limits = AttemptLimits(started + spec.timeout, spec.timeout, is_cancelled)
    progress = _Progress(on_sending=on_sending)
    size = 0
    try:
        with attempt_limits(limits), contextlib.ExitStack() as open_files:
            response = _send_following_redirects(http, store, spec, open_files, limits, progress)
            try:
                progress.phase, progress.status_code = "reading the response body", response.status_code
                size = _save_body(response, store, spec.request_id, limits, max_response_bytes, started)
            finally:
                release_connection(response)
    except Exception as error:  # every error is an outcome: see the module docstring
        judged = judge_error(
            error, HTTPX_ERRORS, phase=progress.phase, timeout=spec.timeout, status_code=progress.status_code
        )
        duration_ms = (time.monotonic() - started) * 1000
        return AttemptResult(judged.outcome, progress.status_code, judged.error, size, duration_ms, final=judged.final)
    finally:
        with contextlib.suppress(OSError, StoreError):  # a leftover .part is harmless; a resend is not
            store.discard_partial_response(spec.request_id)
    duration_ms = (time.monotonic() - started) * 1000
    judged = judge_status(response.status_code, response.reason_phrase, response.headers.multi_items())
    return AttemptResult(judged.outcome, response.status_code, judged.error, size, duration_ms, judged.retry_after)


def _is_head_too_large(error: BaseException) -> bool:
    """The response's head (status line and headers) passed what the client reads: h11's
    "Receive buffer too long" (10,000 headers, or a few of 100 KB), which httpx raises as a
    RemoteProtocolError like a dropped connection. h11 marks this one error with status 431.
    (httpcore re-raises h11's error as the context of its own, not always as the cause.)"""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, h11.RemoteProtocolError):
            return cause.error_status_hint == 431
        cause = cause.__cause__ or cause.__context__
    return False


#: What httpx's exceptions mean to an attempt (judged by ``core.outcomes.judge_error``).
HTTPX_ERRORS = ClientErrors(
    timeout=(httpx.TimeoutException,),
    too_many_redirects=(httpx.TooManyRedirects,),
    refused_to_send=(httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.InvalidURL),
    decoding=(httpx.DecodingError,),
    transport=(httpx.TransportError, httpx.StreamError),
    head_too_large=_is_head_too_large,
    head_limit=RESPONSE_HEAD_LIMIT,
)


# ---------------------------------------------------------------- sending
def _send_following_redirects(
    http: httpx.Client,
    store: Store,
    spec: RequestSpec,
    open_files: contextlib.ExitStack,
    limits: AttemptLimits,
    progress: _Progress,
) -> httpx.Response:
    hop = Hop(spec.method, _parse_url(spec.url), list(spec.headers), keeps_body=True)
    for redirects in range(MAX_REDIRECTS + 1):
        progress.phase, progress.status_code = "connecting", None
        request = _build_request(http, store, spec, hop, open_files, limits)
        request.extensions["trace"] = progress.trace
        response = http.send(request, stream=True, follow_redirects=False)
        if not is_redirect(response):
            return response
        progress.status_code = response.status_code
        try:
            _drain_redirect_body(response)
        finally:
            release_connection(response)
        if redirects == MAX_REDIRECTS:
            break
        hop = next_hop(hop.method, request.url, hop.headers, response, keeps_body=hop.keeps_body)
    raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")


def _parse_url(url: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as error:
        raise RequestUnsendable(f"invalid URL: {error}") from None


def _drain_redirect_body(response: httpx.Response) -> None:
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read > REDIRECT_BODY_LIMIT:
            return  # not worth reading: the connection is closed instead of reused


def _build_request(
    http: httpx.Client,
    store: Store,
    spec: RequestSpec,
    hop: Hop,
    open_files: contextlib.ExitStack,
    limits: AttemptLimits,
) -> httpx.Request:
    # Per operation httpx waits at most the attempt's timeout; attempt_io ends
    # every operation at the attempt's deadline, and this bounds the wait for a pooled connection.
    timeout = httpx.Timeout(spec.timeout, pool=max(limits.deadline - time.monotonic(), 0.001))
    try:
        return _build(http, store, spec, hop, open_files, timeout)
    except (OSError, StoreError) as error:
        raise RequestUnsendable(f"its stored body cannot be read: {error}") from None
    except (httpx.InvalidURL, UnicodeError, ValueError, TypeError) as error:
        raise RequestUnsendable(f"{type(error).__name__}: {error}") from None


def _build(
    http: httpx.Client,
    store: Store,
    spec: RequestSpec,
    hop: Hop,
    open_files: contextlib.ExitStack,
    timeout: httpx.Timeout,
) -> httpx.Request:
    if not hop.keeps_body:  # a redirect turned the request into a GET
        return http.build_request(hop.method, hop.url, headers=hop.headers, timeout=timeout)
    if spec.is_multipart:
        fields: dict[str, list[str]] = {}
        for name, value in spec.form_fields or []:
            fields.setdefault(name, []).append(value)
        files: list[tuple[str, tuple[str, IO[bytes], str]]] = []
        for part in spec.file_parts or []:
            handle = open_files.enter_context(store.open_request_file(spec.request_id, part.stored_name))
            files.append((part.field, (part.filename, handle, part.content_type)))
        if files:
            return http.build_request(
                hop.method, hop.url, headers=hop.headers, data=fields, files=files, timeout=timeout
            )
        # httpx sends a form without files urlencoded; the caller asked for multipart.
        body, content_type = _fields_only_multipart(fields)
        headers = [(k, v) for k, v in hop.headers if k.lower() != "content-type"]
        headers.append(("Content-Type", content_type))
        return http.build_request(hop.method, hop.url, headers=headers, content=body, timeout=timeout)
    content = store.read_request_body(spec.request_id) if spec.has_body else None
    return http.build_request(hop.method, hop.url, headers=hop.headers, content=content, timeout=timeout)


def _fields_only_multipart(fields: dict[str, list[str]]) -> tuple[bytes, str]:
    boundary = os.urandom(16).hex()
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
        for name, values in fields.items()
        for value in values
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# --------------------------------------------------------------- receiving
def _save_body(
    response: httpx.Response,
    store: Store,
    request_id: str,
    limits: AttemptLimits,
    max_bytes: int | None,
    started: float,
) -> int:
    """Stream the body (decoded, in bounded steps) to the ``.part`` file, then commit it with its metadata."""
    # The names as the server spelled them (multi_items() lower-cases them).
    encoding = response.headers.encoding
    raw_headers = [(name.decode(encoding), value.decode(encoding)) for name, value in response.headers.raw]
    in_memory = response.is_stream_consumed  # built in memory (httpx.MockTransport): httpx has read and decoded it
    sink = BodySink(content_codings(raw_headers), max_bytes, decode=not in_memory)
    raw_chunks: Iterable[bytes] = [response.content] if in_memory else response.iter_raw()
    with _response_sink(store, request_id) as out:
        for raw in raw_chunks:
            for chunk in sink.feed(raw):
                limits.check(httpx.ReadTimeout)  # the deadline and cancel, also while the data is already buffered
                _write(out, chunk)
        for chunk in sink.finish():
            limits.check(httpx.ReadTimeout)
            _write(out, chunk)
    size, raw_size, decoded = sink.size, sink.raw_size, sink.decoded
    try:
        meta = _metadata(response, raw_headers, size, raw_size, decoded, started)
        store.commit_response(request_id, meta.to_json())
    except (OSError, StoreError) as error:
        raise ResponseNotSaved() from error
    return size


@contextlib.contextmanager
def _response_sink(store: Store, request_id: str) -> Iterator[IO[bytes]]:
    """The ``.part`` file the body streams into, closed (flushed) when the block ends.

    Every OSError of the sink's life (open, write, the flush in ``close()``) is
    ``ResponseNotSaved``: a full disk is ``disk_full`` wherever it shows. A small
    body sits in the file's buffer until the flush, and a failed flush fails
    again in ``close()``: that second error must not replace the first. When
    something else ended the body (a cancel, the size limit), that stays the
    outcome; the buffered bytes go with the ``.part`` file.
    """
    try:
        out = store.open_response_part(request_id)
    except (OSError, StoreError) as error:
        raise ResponseNotSaved() from error
    try:
        yield out
    except BaseException:
        with contextlib.suppress(OSError):
            out.close()
        raise
    try:
        out.close()  # flushes; made durable by commit_response
    except OSError as error:
        raise ResponseNotSaved() from error


def _write(out: IO[bytes], chunk: bytes) -> None:
    try:
        out.write(chunk)
    except OSError as error:
        raise ResponseNotSaved() from error


def _metadata(
    response: httpx.Response,
    raw_headers: list[tuple[str, str]],
    size: int,
    raw_size: int,
    decoded: bool,
    started: float,
) -> ResponseMeta:
    """The saved headers describe the saved file; when it was decoded, the server's own stay in ``raw_headers``."""
    headers = raw_headers
    decoded_from = raw = None
    if decoded:
        dropped = {"content-encoding", "content-length"}
        headers = [(k, v) for k, v in raw_headers if k.lower() not in dropped] + [("Content-Length", str(size))]
        decoded_from = ", ".join(v for k, v in raw_headers if k.lower() == "content-encoding")
        raw = tuple(raw_headers)
    return ResponseMeta(
        status_code=response.status_code,
        reason=response.reason_phrase,
        headers=tuple(headers),
        # The URL's password, like a secret header, is kept only where the worker needs it (the request file).
        url=redact_url(str(response.url)),
        http_version=response.http_version,
        elapsed_ms=round((time.monotonic() - started) * 1000, 3),
        size=size,
        raw_size=raw_size,
        decoded_content_encoding=decoded_from,
        raw_headers=raw,
        saved_at=time.time(),
    )
