"""One HTTP attempt: send a stored request with httpx and stream the answer to a file.

``perform_attempt`` never raises for what the network or the server did; it
returns an :class:`AttemptResult` that the retry policy can judge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.cookiejar
import os
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

import httpx

from .errors import StoreError
from .models import RequestSpec
from .retry_policy import Outcome
from .store import FileStore, is_disk_full

CHUNK_SIZE = 256 * 1024
CANCEL_CHECK_SECONDS = 0.5


class ResponseTooLarge(Exception):
    pass


class AttemptCancelled(Exception):
    pass


class DeadlineExceeded(Exception):
    pass


class EgressBlocked(Exception):
    """Raised by an egress policy transport when an address is not allowed."""


@dataclasses.dataclass(frozen=True)
class AttemptResult:
    outcome: Outcome
    status_code: int | None = None
    error: str | None = None
    response_bytes: int = 0
    duration_ms: float = 0.0


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
    *, pool_size: int = 16, transport: httpx.BaseTransport | None = None, trust_env: bool = True
) -> httpx.Client:
    """The one httpx client a worker process shares between its threads (keeps no cookies)."""
    return httpx.Client(
        follow_redirects=True,
        limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size),
        transport=transport,
        trust_env=trust_env,
        cookies=_NoCookieJar(),
    )


def perform_attempt(
    http: httpx.Client,
    store: FileStore,
    spec: RequestSpec,
    *,
    max_response_bytes: int | None = None,
    is_cancelled: Callable[[], bool] = lambda: False,
) -> AttemptResult:
    """Send ``spec`` once; on any answer save the response (body, then metadata)."""
    started = time.monotonic()
    deadline = started + spec.timeout

    def result(
        outcome: Outcome, status_code: int | None = None, error: str | None = None, size: int = 0
    ) -> AttemptResult:
        return AttemptResult(outcome, status_code, error, size, (time.monotonic() - started) * 1000)

    try:
        with contextlib.ExitStack() as open_files:
            request = _build_request(http, store, spec, open_files)
            response = http.send(request, stream=True)
            try:
                size = _stream_body(response, store, spec.request_id, deadline, max_response_bytes, is_cancelled)
            finally:
                response.close()
        store.commit_response(spec.request_id, _metadata(response, size, started))
    except (httpx.TimeoutException, DeadlineExceeded) as error:
        return result(Outcome.TIMEOUT, error=f"timeout after {spec.timeout:g}s: {error or type(error).__name__}")
    except httpx.TooManyRedirects as error:
        return result(Outcome.INVALID, error=f"too many redirects: {error}")
    except EgressBlocked as error:
        return result(Outcome.BLOCKED, error=str(error))
    except (httpx.TransportError, httpx.StreamError) as error:
        return result(Outcome.NETWORK_ERROR, error=f"{type(error).__name__}: {error}")
    except ResponseTooLarge as error:
        return result(Outcome.TOO_LARGE, error=str(error))
    except AttemptCancelled:
        return result(Outcome.CANCELLED, error="cancelled while running")
    except (StoreError, OSError) as error:
        if is_disk_full(error):
            return result(Outcome.DISK_FULL, error=f"no space left to save the response: {error}")
        raise
    finally:
        store.discard_partial_response(spec.request_id)
    if response.status_code >= 400:
        return result(
            Outcome.HTTP_ERROR, response.status_code, f"HTTP {response.status_code} {response.reason_phrase}", size
        )
    return result(Outcome.SUCCESS, response.status_code, size=size)


def _build_request(
    http: httpx.Client, store: FileStore, spec: RequestSpec, open_files: contextlib.ExitStack
) -> httpx.Request:
    timeout = httpx.Timeout(spec.timeout)
    if spec.is_multipart:
        fields: dict[str, list[str]] = {}
        for name, value in spec.form_fields or []:
            fields.setdefault(name, []).append(value)
        files: list[tuple[str, tuple[str, IO[bytes], str]]] = []
        for part in spec.file_parts or []:
            handle = open_files.enter_context(open(store.files_dir(spec.request_id) / part.stored_name, "rb"))
            files.append((part.field, (part.filename, handle, part.content_type)))
        if files:
            return http.build_request(
                spec.method, spec.url, headers=spec.headers, data=fields, files=files, timeout=timeout
            )
        # httpx sends a form without files urlencoded; the caller asked for multipart.
        body, content_type = _fields_only_multipart(fields)
        headers = [(k, v) for k, v in spec.headers if k.lower() != "content-type"]
        headers.append(("Content-Type", content_type))
        return http.build_request(spec.method, spec.url, headers=headers, content=body, timeout=timeout)
    content = store.body_path(spec.request_id).read_bytes() if spec.has_body else None
    return http.build_request(spec.method, spec.url, headers=spec.headers, content=content, timeout=timeout)


def _fields_only_multipart(fields: dict[str, list[str]]) -> tuple[bytes, str]:
    boundary = os.urandom(16).hex()
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n"
        for name, values in fields.items()
        for value in values
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _stream_body(
    response: httpx.Response,
    store: FileStore,
    request_id: str,
    deadline: float,
    max_bytes: int | None,
    is_cancelled: Callable[[], bool],
) -> int:
    size = 0
    next_cancel_check = time.monotonic() + CANCEL_CHECK_SECONDS
    with store.open_private(store.response_part_path(request_id)) as out:
        for chunk in _chunks(response):
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise ResponseTooLarge(f"response body passed BGHTTP_MAX_RESPONSE_BYTES={max_bytes}")
            out.write(chunk)
            now = time.monotonic()
            if now > deadline:
                raise DeadlineExceeded("the attempt ran past its timeout while reading the body")
            if now >= next_cancel_check:
                next_cancel_check = now + CANCEL_CHECK_SECONDS
                if is_cancelled():
                    raise AttemptCancelled()
        out.flush()
        store.sync_file(out.fileno())
    return size


def _chunks(response: httpx.Response) -> Iterator[bytes]:
    yield from response.iter_bytes(CHUNK_SIZE)


def _metadata(response: httpx.Response, size: int, started: float) -> dict[str, Any]:
    return {
        "status_code": response.status_code,
        "reason": response.reason_phrase,
        "headers": [list(pair) for pair in response.headers.multi_items()],
        "url": str(response.url),
        "http_version": response.http_version,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 3),
        "size": size,
        "saved_at": time.time(),
    }
