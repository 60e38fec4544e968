"""Turn a client call's arguments into a :class:`RequestSpec`, or raise InvalidRequest.

Nothing here touches the store: every check runs before anything is written.
The "did you mean" hints live here too, for the client, bulk items and the CLI
alike: a URL without its scheme, a keyword of another HTTP library (``params=``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import json
import math
import mimetypes
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ParamSpec, Required, TypeAlias, TypedDict, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .errors import InvalidRequest
from .models import FilePart, MultipartFile, RequestSpec
from .quoting import quoted
from .sendable import check_header, check_request, check_url, scrubbed_parse_error, shown_url
from .store import validate_request_id

METHODS = frozenset({"GET", "HEAD", "DELETE", "POST", "PUT", "PATCH", "OPTIONS"})
MAX_RETRIES = 10
#: A day: sockets and waits cannot take much larger timeouts (socket.settimeout(1e10)
#: raises OverflowError), and no attempt should hold a worker thread longer.
MAX_TIMEOUT_SECONDS = 86_400.0
#: ``metadata`` is a correlation ID or two, copied into every status record and event: keep it small.
MAX_METADATA_BYTES = 4096
#: Objects and arrays in ``metadata`` (the object itself is level 1). 4 KiB hold ~2000 levels of
#: ``[``: near the recursion limit, every status record and event carrying it would fail to encode.
MAX_METADATA_DEPTH = 32

HeadersArg: TypeAlias = Mapping[str, str] | Iterable[tuple[str, str]] | None
QueryValue: TypeAlias = str | int | float | bool
QueryArg: TypeAlias = Mapping[str, QueryValue | Iterable[QueryValue]] | None
FileArg: TypeAlias = str | Path | MultipartFile
FilesArg: TypeAlias = Mapping[str, FileArg | Iterable[FileArg]] | None
FieldsArg: TypeAlias = Mapping[str, Any] | Iterable[tuple[str, Any]] | None


class SubmitOptions(TypedDict, total=False):
    """The keywords every verb takes but ``multipart`` (``post_multipart`` sets it)."""

    data: Any
    json: Any
    headers: HeadersArg
    query_parameters: QueryArg
    timeout: float | None
    request_id: str | None
    retries: int
    fields: FieldsArg
    files: FilesArg
    metadata: Mapping[str, Any] | None
    on_complete: Mapping[str, str] | None


class RequestOptions(SubmitOptions, total=False):
    """The keywords of ``client.get``/``post``/… (``**options: Unpack[RequestOptions]``): a typo is a type error."""

    multipart: bool


class RequestDict(RequestOptions, total=False):
    """One request of a bulk submit, as a mapping: ``method`` and ``url`` plus the keywords of ``request``."""

    method: Required[str]
    url: Required[str]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: Dramatiq's rule for queue and actor names.
_DRAMATIQ_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9._-]{0,251}")
_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\x00]")


#: Keywords of other HTTP libraries (requests, httpx, aiohttp), and what they are called here.
KEYWORD_HINTS = {
    "params": "query_parameters=",
    "query": "query_parameters=",
    "query_params": "query_parameters=",
    "body": "data= or json=",
    "content": "data=",
    "retry": "retries=",
    "max_retries": "retries=",
    "id": "request_id=",
    "callback": "on_complete=",
}

P = ParamSpec("P")
R = TypeVar("R")


def unknown_keyword_message(name: str) -> str:
    """The one line for a keyword a submit does not take: a "did you mean", else the keywords it does take."""
    known = sorted(RequestOptions.__annotations__)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    hint = KEYWORD_HINTS.get(name) or (f"{close[0]}=" if close else None)
    shown = quoted(name)[1:-1]
    if hint is not None:
        return f"unknown keyword {shown}=; did you mean {hint}?"
    return f"unknown keyword {shown}=; known: {', '.join(known)}"


def with_keyword_hints(function: Callable[P, R]) -> Callable[P, R]:
    """``function``, raising InvalidRequest with :func:`unknown_keyword_message` for a keyword it does not take.

    Python's own TypeError would say only "unexpected keyword argument 'params'"; and
    every way in (client, async client, bulk items) then says the same.
    """
    parameters = inspect.signature(function).parameters.values()
    accepted = frozenset(p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))

    @functools.wraps(function)
    def checked(*args: P.args, **kwargs: P.kwargs) -> R:
        for name in kwargs:
            if name not in accepted:
                raise InvalidRequest(unknown_keyword_message(name))
        return function(*args, **kwargs)

    return checked


def missing_scheme_message(url: str) -> str | None:
    """The one line for a URL written without its scheme (``example.com/x``); None if that is not its problem."""
    if "://" in url or not url or any(ch.isspace() for ch in url):
        return None  # a URL, or something the other checks describe better
    # "//host/x" and "http:/host/x" or "https:host" have a broken scheme, not none: keep the one written.
    broken = _BROKEN_SCHEME.match(url)
    scheme, rest = ((broken.group(1) or "https").lower(), url[broken.end() :]) if broken else ("https", url)
    meant = shown_url(f"{scheme}://{rest}")[1:-1]  # its password hidden, its length bounded
    given = url[: broken.end()] + meant.removeprefix(f"{scheme}://") if broken else meant.removeprefix("https://")
    return f"URL {given!r} has no scheme (http:// or https://); did you mean {meant} ?"


#: A scheme written wrong: "//", "http:/", "https:" followed by no or one slash, "http//" (no colon).
_BROKEN_SCHEME = re.compile(r"(?i)(?:(https?)(?::/{0,2}|//)|//)(?!/)")


@dataclasses.dataclass(frozen=True)
class PreparedRequest:
    """A validated request: the spec plus what goes into ``bodies/``."""

    spec: RequestSpec
    body: bytes | None
    files: list[tuple[Path, str]]


@with_keyword_hints
def prepare_request(
    method: str,
    url: str,
    *,
    data: Any = None,
    json: Any = None,
    headers: HeadersArg = None,
    query_parameters: QueryArg = None,
    timeout: float | None = None,
    request_id: str | None = None,
    retries: int = 0,
    fields: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
    files: FilesArg = None,
    multipart: bool = False,
    metadata: Mapping[str, Any] | None = None,
    on_complete: Mapping[str, str] | None = None,
    default_timeout: float = 60.0,
) -> PreparedRequest:
    method = _method(method)
    checked_metadata = check_metadata(metadata)
    checked_on_complete = _on_complete(on_complete)
    header_list = _headers(headers)
    full_url = _url(url, query_parameters)
    request_id = uuid.uuid4().hex if request_id is None else validate_request_id(request_id)
    timeout_seconds = _timeout(timeout, default_timeout)
    max_retries = _retries(retries)

    body: bytes | None = None
    form_fields: list[tuple[str, str]] | None = None
    file_parts: list[FilePart] | None = None
    copies: list[tuple[Path, str]] = []
    if data is not None and json is not None:
        raise InvalidRequest("give data= or json=, not both")
    if multipart:
        if data is not None or json is not None:
            given = "data" if json is None else "json"
            raise InvalidRequest(f"a multipart request takes fields= and files=, not {given}=")
        form_fields = _fields(fields)
        file_parts, copies = _files(files)
    elif fields is not None or files is not None:
        raise InvalidRequest("fields= and files= need post_multipart() or multipart=True")
    else:
        body, content_type = encode_body(data) if json is None else encode_json(json)
        if content_type and not _has_header(header_list, "content-type"):
            header_list.append(("Content-Type", content_type))

    # Last, the request as a whole, built by httpx and validated by h11 as the worker will.
    check_request(method, full_url, header_list)

    spec = RequestSpec(
        request_id=request_id,
        method=method,
        url=full_url,
        headers=header_list,
        timeout=timeout_seconds,
        max_retries=max_retries,
        created_at=time.time(),
        has_body=body is not None,
        form_fields=form_fields,
        file_parts=file_parts,
        metadata=checked_metadata,
        on_complete=checked_on_complete,
    )
    return PreparedRequest(spec=spec, body=body, files=copies)


def encode_body(data: Any) -> tuple[bytes | None, str | None]:
    """Encode ``data`` like Dio: dict/list as JSON, str as UTF-8, bytes as they are."""
    if data is None:
        return None, None
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), "application/octet-stream"
    if isinstance(data, str):
        try:
            return data.encode("utf-8"), "text/plain; charset=utf-8"
        except UnicodeEncodeError as error:
            raise InvalidRequest(f"data is not valid text: {error}") from None
    if isinstance(data, (dict, list)):
        try:
            text = json.dumps(data, allow_nan=False, ensure_ascii=False)
            return text.encode("utf-8"), "application/json"
        except (TypeError, ValueError) as error:
            raise InvalidRequest(f"data cannot be encoded as JSON: {error}") from None
        except RecursionError:
            raise InvalidRequest("data cannot be encoded as JSON: it refers to itself") from None
        except UnicodeEncodeError as error:
            raise InvalidRequest(f"data cannot be encoded as JSON: {error}") from None
    raise InvalidRequest(
        f"data must be a dict, list, str or bytes, not {type(data).__name__}"
    )


class _JsonNull:
    """The JSON value ``null`` as a body: ``json=None`` means "no JSON body" (as in httpx)."""

    def __repr__(self) -> str:
        return "JSON_NULL"


#: ``json=JSON_NULL`` sends the body ``null`` (a submit message's ``"json": null``).
JSON_NULL: Any = _JsonNull()


def encode_json(value: Any) -> tuple[bytes, str]:
    """``json=``: any JSON value (object, array, string, number, boolean; ``JSON_NULL``) as UTF-8 JSON."""
    try:
        text = json.dumps(None if value is JSON_NULL else value, allow_nan=False, ensure_ascii=False)
        return text.encode("utf-8"), "application/json"
    except (TypeError, ValueError, UnicodeEncodeError) as error:
        raise InvalidRequest(f"json cannot be encoded as JSON: {error}") from None
    except RecursionError:
        raise InvalidRequest("json cannot be encoded as JSON: it refers to itself") from None


def check_metadata(metadata: object) -> dict[str, Any] | None:
    """``metadata`` as a plain JSON object (a copy), or InvalidRequest: an object of at most 4 KiB as JSON."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidRequest(f"metadata must be a JSON object (a dict), not {type(metadata).__name__}")
    if not all(isinstance(key, str) for key in metadata):
        raise InvalidRequest("metadata keys must be strings")
    if _nesting_exceeds(metadata, MAX_METADATA_DEPTH):
        raise InvalidRequest(f"metadata is nested more than {MAX_METADATA_DEPTH} deep (objects and arrays)")
    try:
        text = json.dumps(dict(metadata), allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, UnicodeEncodeError) as error:
        raise InvalidRequest(f"metadata cannot be encoded as JSON: {error}") from None
    except RecursionError:
        raise InvalidRequest("metadata cannot be encoded as JSON: it refers to itself") from None
    if size > MAX_METADATA_BYTES:
        raise InvalidRequest(f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed")
    copied: dict[str, Any] = json.loads(text)  # a copy the caller cannot change, tuples as lists
    return copied


def _nesting_exceeds(value: object, limit: int) -> bool:
    """True if ``value`` has objects/arrays more than ``limit`` levels deep (iterative: no recursion to overflow).

    A value that refers to itself counts as infinitely deep."""
    pending: list[tuple[object, int]] = [(value, 1)]
    seen = 0
    while pending:
        item, depth = pending.pop()
        children: Iterable[object]
        if isinstance(item, Mapping):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        seen += 1
        if seen > MAX_METADATA_BYTES:  # more containers than 4 KiB of JSON can hold: a cycle
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def _on_complete(on_complete: object) -> dict[str, str] | None:
    if on_complete is None:
        return None
    if not isinstance(on_complete, Mapping) or set(on_complete) != {"queue", "actor"}:
        raise InvalidRequest('on_complete must be {"queue": ..., "actor": ...}')
    for key in ("queue", "actor"):
        value = on_complete[key]
        if not isinstance(value, str) or not _DRAMATIQ_NAME.fullmatch(value):
            raise InvalidRequest(f"on_complete {key} must be a Dramatiq {key} name, not {quoted(value)}")
    return {"queue": on_complete["queue"], "actor": on_complete["actor"]}


def _method(method: object) -> str:
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise InvalidRequest(f"unknown method {quoted(method)}; use one of {', '.join(sorted(METHODS))}")
    return method.upper()


def _url(url: object, query: QueryArg) -> str:
    if not isinstance(url, str):
        raise InvalidRequest(f"url must be a string, not {type(url).__name__}")
    if not url or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise InvalidRequest(f"malformed URL {shown_url(url)}: empty, or contains spaces or control characters")
    no_scheme = missing_scheme_message(url)
    if no_scheme is not None:
        raise InvalidRequest(no_scheme)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port out of range, which httpx lets through
    except ValueError as error:
        raise InvalidRequest(f"malformed URL {shown_url(url)}: {scrubbed_parse_error(error, url)}") from None
    if parts.scheme.lower() not in {"http", "https"}:
        raise InvalidRequest(
            f"URL scheme must be http or https, got {quoted(parts.scheme or 'none')} in {shown_url(url)}"
        )
    if not parts.hostname:
        raise InvalidRequest(f"malformed URL {shown_url(url)}: no host")
    if port == 0:
        raise InvalidRequest(f"malformed URL {shown_url(url)}: port 0")
    if query:
        pairs = parse_qsl(parts.query, keep_blank_values=True) + _query_pairs(query)
        url = urlunsplit(parts._replace(query=urlencode(pairs)))
    check_url(url)  # the URL as the worker's httpx will parse it (IPv4 forms, IDNA, length)
    return url


def _query_pairs(query: QueryArg) -> list[tuple[str, str]]:
    if not isinstance(query, Mapping):
        raise InvalidRequest("query_parameters must be a mapping of names to values")
    pairs: list[tuple[str, str]] = []
    for key, value in query.items():
        if not isinstance(key, str) or not key or not _is_text(key):
            raise InvalidRequest(f"query parameter names must be non-empty text, got {quoted(key)}")
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            pairs.append((key, _scalar(item, f"query parameter {key!r}")))
    return pairs


def _scalar(value: object, what: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value
    elif isinstance(value, int):
        try:
            text = str(value)
        except ValueError:  # more digits than Python will write out
            raise InvalidRequest(f"{what} is a number too large to send") from None
    elif isinstance(value, float) and math.isfinite(value):
        text = repr(value)
    else:
        raise InvalidRequest(f"{what} must be a string or number, not {quoted(value)}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what} is not valid text") from None
    return text


def _headers(headers: HeadersArg) -> list[tuple[str, str]]:
    if headers is None:
        return []
    items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers
    result: list[tuple[str, str]] = []
    try:
        for name, value in items:
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                raise InvalidRequest(f"invalid header name {quoted(name)}")
            if not isinstance(value, str):
                raise InvalidRequest(f"header {name!r} must have a string value, not {type(value).__name__}")
            if _FORBIDDEN_IN_VALUE.search(value):
                raise InvalidRequest(f"header {name!r} has CR, LF or NUL in its value")
            check_header(name, value)
            result.append((name, value))
    except (TypeError, ValueError) as error:
        if isinstance(error, InvalidRequest):
            raise
        raise InvalidRequest("headers must be a mapping or a list of (name, value) pairs") from None
    return result


def _has_header(headers: list[tuple[str, str]], name: str) -> bool:
    return any(key.lower() == name for key, _ in headers)


def _timeout(timeout: object, default: float) -> float:
    if timeout is None:
        return default
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InvalidRequest(f"timeout must be a number of seconds, not {quoted(timeout)}")
    # Compared, not math.isfinite(): that raises OverflowError for an int like 10**400.
    if timeout != timeout or timeout <= 0:  # NaN is not equal to itself
        raise InvalidRequest(f"timeout must be > 0 seconds, got {quoted(timeout)}")
    if timeout > MAX_TIMEOUT_SECONDS:
        raise InvalidRequest(f"timeout must be at most {MAX_TIMEOUT_SECONDS:g} seconds, got {quoted(timeout)}")
    return float(timeout)


def _retries(retries: object) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise InvalidRequest(f"retries must be a whole number from 0 to {MAX_RETRIES}, got {quoted(retries)}")
    return retries


def _fields(fields: Any) -> list[tuple[str, str]]:
    if fields is None:
        return []
    items = fields.items() if isinstance(fields, Mapping) else fields
    try:
        return [(_field_name(name), _scalar(value, f"field {name!r}")) for name, value in items]
    except (TypeError, ValueError) as error:
        if isinstance(error, InvalidRequest):
            raise
        raise InvalidRequest("fields must be a mapping or a list of (name, value) pairs") from None


def _field_name(name: object) -> str:
    if not isinstance(name, str) or not name or _FORBIDDEN_IN_VALUE.search(name) or '"' in name or not _is_text(name):
        raise InvalidRequest(f"invalid multipart field name {name!r}")
    return name


def _is_text(value: str) -> bool:
    """Whether ``value`` can be sent as UTF-8 (a lone surrogate cannot)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _files(files: FilesArg) -> tuple[list[FilePart], list[tuple[Path, str]]]:
    if files is None:
        return [], []
    if not isinstance(files, Mapping):
        raise InvalidRequest("files must be a mapping of field names to paths or MultipartFile")
    parts: list[FilePart] = []
    copies: list[tuple[Path, str]] = []
    for field, value in files.items():
        _field_name(field)
        values: Iterable[Any] = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            upload = item if isinstance(item, MultipartFile) else MultipartFile(path=item)
            if not isinstance(upload.path, (str, Path)):
                raise InvalidRequest(f"file for field {field!r} must be a path, not {upload.path!r}")
            path = Path(upload.path)
            if not path.is_file():
                raise InvalidRequest(f"multipart file {str(path)!r} does not exist or is not a file")
            filename = upload.filename or path.name
            if not isinstance(filename, str) or _FORBIDDEN_IN_VALUE.search(filename) or not _is_text(filename):
                raise InvalidRequest(f"invalid file name {filename!r}")
            content_type = upload.content_type or (
                mimetypes.guess_type(filename)[0] or "application/octet-stream"
            )
            if not isinstance(content_type, str) or _FORBIDDEN_IN_VALUE.search(content_type) or not _is_text(
                content_type
            ):
                raise InvalidRequest(f"invalid content type {content_type!r}")
            stored_name = str(len(copies))
            parts.append(FilePart(field, stored_name, filename, content_type))
            copies.append((path, stored_name))
    return parts, copies
