"""Value objects shared by the client, the store and the workers.

Records on disk are plain JSON; ``to_json``/``from_json`` are the only places
that know their field names.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from .core.outcomes import Outcome


class RequestStatus(enum.StrEnum):
    """Where a request stands. The last three are terminal: nothing changes them."""

    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self is not RequestStatus.IN_PROGRESS


class Phase(enum.StrEnum):
    """What an ``in_progress`` request is doing; ``done`` for terminal ones."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING_RETRY = "waiting_retry"
    WAITING_NETWORK = "waiting_network"
    DONE = "done"


@dataclasses.dataclass(frozen=True)
class MultipartFile:
    """A file part of a multipart request, streamed from ``path`` when sent."""

    path: str | Path
    filename: str | None = None
    content_type: str | None = None


@dataclasses.dataclass(frozen=True)
class FilePart:
    """A multipart file part as stored: the copy lives in the store."""

    field: str
    stored_name: str
    filename: str
    content_type: str


@dataclasses.dataclass(frozen=True)
class RequestSpec:
    """Everything a worker needs to send one request; saved as ``requests/<id>.json``."""

    request_id: str
    method: str
    url: str
    headers: list[tuple[str, str]]
    timeout: float
    max_retries: int
    created_at: float
    has_body: bool = False
    form_fields: list[tuple[str, str]] | None = None
    file_parts: list[FilePart] | None = None
    #: Set by the store when it saves the request, the same in its status record:
    #: tells this request apart from an earlier or later one with the same ID.
    generation: str = ""
    #: The submitter's W3C trace context (``traceparent``, ``tracestate``) with ``bghttp[otel]``
    #: installed and a span active at submit; the worker's attempt spans are its children.
    trace_context: dict[str, str] | None = None
    #: The caller's small JSON object (a correlation ID): shown in the status and in events.
    metadata: dict[str, Any] | None = None
    #: ``{"queue": ..., "actor": ...}``: the caller's Dramatiq actor that gets the final event.
    on_complete: dict[str, str] | None = None
    #: The queue its messages go to (the submitter's ``BGHTTP_QUEUE``), set by the submit: a reader
    #: asks whether a worker serves this queue, whatever its own is. "" in a file written before.
    queue: str = ""

    @property
    def is_multipart(self) -> bool:
        return self.form_fields is not None

    def to_json(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies every header pair (~50 µs per submit).
        return {
            "request_id": self.request_id,
            "method": self.method,
            "url": self.url,
            "headers": [list(pair) for pair in self.headers],
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "created_at": self.created_at,
            "has_body": self.has_body,
            "form_fields": None if self.form_fields is None else [list(pair) for pair in self.form_fields],
            "file_parts": None if self.file_parts is None else [dataclasses.asdict(part) for part in self.file_parts],
            "generation": self.generation,
            "trace_context": self.trace_context,
            "metadata": self.metadata,
            "on_complete": self.on_complete,
            "queue": self.queue,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestSpec:
        """The spec saved in ``data``; ValueError naming the field if it is not one.

        Strict: the file may have been edited by hand, and a worker must not
        guess what a wrong type meant.
        """
        fields = data.get("form_fields")
        parts = data.get("file_parts")
        return cls(
            request_id=_field(data, "request_id", str),
            method=_field(data, "method", str),
            url=_field(data, "url", str),
            headers=_pairs(data, "headers"),
            timeout=_timeout(data),
            max_retries=_field(data, "max_retries", int),
            created_at=float(_field(data, "created_at", (int, float))),
            has_body=_field(data, "has_body", bool) if "has_body" in data else False,
            form_fields=None if fields is None else _pairs(data, "form_fields"),
            file_parts=None if parts is None else _file_parts(parts),
            generation=_field(data, "generation", str) if "generation" in data else "",
            trace_context=_trace_context(data.get("trace_context")),
            metadata=_field(data, "metadata", dict) if data.get("metadata") is not None else None,
            on_complete=_field(data, "on_complete", dict) if data.get("on_complete") is not None else None,
            queue=_field(data, "queue", str) if "queue" in data else "",
        )


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise ValueError(f"missing field {key!r}")
    value = data[key]
    # bool is an int in Python; never accept one for a number, nor a number for a bool.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"field {key!r} has the wrong type ({type(value).__name__})")
    return value


def _timeout(data: dict[str, Any]) -> float:
    timeout = float(_field(data, "timeout", (int, float)))
    if not math.isfinite(timeout) or timeout <= 0:  # JSON from Python may hold NaN or Infinity
        raise ValueError(f"field 'timeout' must be a positive number of seconds, not {timeout!r}")
    return timeout


def _pairs(data: dict[str, Any], key: str) -> list[tuple[str, str]]:
    items = _field(data, key, list)
    if not all(isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item) for item in items):
        raise ValueError(f"field {key!r} must be a list of [name, value] string pairs")
    return [(name, value) for name, value in items]


def _trace_context(value: object) -> dict[str, str] | None:
    if value is None:  # also a file written before traces existed
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("field 'trace_context' must be an object of string header values")
    return dict(value)


def _file_parts(parts: object) -> list[FilePart]:
    names = {field.name for field in dataclasses.fields(FilePart)}
    if not isinstance(parts, list) or not all(
        isinstance(part, dict) and set(part) == names and all(isinstance(v, str) for v in part.values())
        for part in parts
    ):
        raise ValueError(f"field 'file_parts' must be a list of objects with string fields {sorted(names)}")
    return [FilePart(**part) for part in parts]


@dataclasses.dataclass(frozen=True)
class AttemptRecord:
    """One HTTP attempt as the worker saw it."""

    number: int
    started_at: float
    due_at: float | None = None  # when the attempt was due (retries: previous end + backoff)
    finished_at: float | None = None
    outcome: Outcome | None = None  # None while the attempt runs; saved as its value ("success" ...)
    status_code: int | None = None
    error: str | None = None
    counted: bool = True  # False when no retry was spent (the network was down; interrupted before sending)
    #: When the request's first byte was about to go out: an attempt interrupted after
    #: this (its worker died) may have reached the server, so it spends a retry.
    sent_at: float | None = None
    #: Seconds the server's ``Retry-After`` asked for (a 429 or 503 answer), parsed; the wait
    #: before the next attempt is at least this, up to ``BGHTTP_MAX_RETRY_AFTER``.
    retry_after: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttemptRecord:
        """The attempt of a status record's (or a message's) JSON; TypeError/ValueError if it is not one."""
        return _attempt_from_json(data)


@dataclasses.dataclass(frozen=True)
class StatusRecord:
    """The status of one request; saved as ``status/<id>.log`` (a record log).

    ``token`` numbers the message that may run the request next: every message
    published for a request carries a token at least as large as the record's,
    and a message with a smaller one is stale (a redelivered or recovered
    duplicate) and is dropped.

    ``generation`` is the request's (see ``RequestSpec.generation``).
    ``published`` is False from the moment a submit stored the request until a
    broker confirmed its first message (or recovery published one): a second
    submitter of the same ID that finds it False publishes the message itself.
    """

    request_id: str
    status: RequestStatus
    phase: Phase
    created_at: float
    updated_at: float
    max_retries: int
    token: int = 1
    retries_used: int = 0
    next_attempt_at: float | None = None
    last_error: str | None = None
    last_status_code: int | None = None
    completed_at: float | None = None
    attempts: tuple[AttemptRecord, ...] = ()
    generation: str = ""
    published: bool = True  # records written before this field existed were published
    #: Times ``retry()`` replayed the request after it had failed or been cancelled.
    replays: int = 0
    #: Attempts of the runs before the latest replay: this run's attempts follow them,
    #: and only this run's attempts count against its retries and interruption limit.
    earlier_attempts: int = 0
    #: The request's ``metadata`` and ``on_complete`` (see RequestSpec), kept here so that
    #: status reads, listings and final events need no request file.
    metadata: dict[str, Any] | None = None
    on_complete: dict[str, str] | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def outcome(self) -> tuple[object, ...]:
        """What tells one final outcome of the request ID from another: what its event ID is made of
        (``events.event_id``), not what an amend changes."""
        return self.request_id, self.generation, self.status, self.attempt_count, self.completed_at

    @property
    def attempt_count(self) -> int:
        """HTTP attempts started (including ones that did not spend a retry)."""
        return len(self.attempts)

    @property
    def run_attempts(self) -> tuple[AttemptRecord, ...]:
        """The attempts of the current run (since the latest replay; all of them if never replayed)."""
        return self.attempts[self.earlier_attempts :]

    def evolve(self, **changes: Any) -> StatusRecord:
        changes.setdefault("updated_at", time.time())
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        # A shallow field copy: dataclasses.asdict deep-copies and cost 10x more
        # on the worker's per-message path.
        data = {field.name: getattr(self, field.name) for field in _STATUS_FIELDS}
        data["status"] = self.status.value
        data["phase"] = self.phase.value
        data["attempts"] = [attempt.__dict__ for attempt in self.attempts]
        data["attempt_count"] = self.attempt_count
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatusRecord:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in fields}
        values["status"] = RequestStatus(data["status"])
        values["phase"] = Phase(data["phase"])
        values["attempts"] = tuple(_attempt_from_json(a) for a in data.get("attempts", ()))
        return cls(**values)


_STATUS_FIELDS = dataclasses.fields(StatusRecord)


def _attempt_from_json(data: dict[str, Any]) -> AttemptRecord:
    outcome = data.get("outcome")
    if outcome is None:
        return AttemptRecord(**data)
    return AttemptRecord(**{**data, "outcome": Outcome(outcome)})


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    """What a submit returns: the ID, where the request file is, and its status."""

    request_id: str
    request_file_path: Path
    status: RequestStatus


class Headers(Sequence[tuple[str, str]]):
    """Response headers: the ``(name, value)`` pairs as the server sent them, in order, and a
    case-insensitive mapping view: ``headers["content-type"]``, ``headers.get(...)``,
    ``headers.get_list("set-cookie")`` (every value of a repeated header). ``headers[name]``
    joins repeated values with ", " (as httpx does); iterating gives the pairs.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self._pairs = [(str(name), str(value)) for name, value in pairs]

    @overload
    def __getitem__(self, key: int) -> tuple[str, str]: ...
    @overload
    def __getitem__(self, key: slice) -> Sequence[tuple[str, str]]: ...
    @overload
    def __getitem__(self, key: str) -> str: ...
    def __getitem__(self, key: int | slice | str) -> tuple[str, str] | Sequence[tuple[str, str]] | str:
        if isinstance(key, str):
            values = self.get_list(key)
            if not values:
                raise KeyError(key)
            return ", ".join(values)
        return self._pairs[key]

    def __len__(self) -> int:
        return len(self._pairs)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return bool(self.get_list(item))
        return item in self._pairs

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._pairs == other._pairs
        if isinstance(other, list | tuple):
            return self._pairs == [tuple(pair) for pair in other]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, compared by value like a list

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of header ``name`` (repeated values joined with ", "), or ``default``."""
        values = self.get_list(name)
        return ", ".join(values) if values else default

    def get_list(self, name: str) -> list[str]:
        """Every value of header ``name``, in order."""
        lowered = name.lower()
        return [value for key, value in self._pairs if key.lower() == lowered]

    def keys(self) -> list[str]:
        """The header names, lower-cased, each once, in order."""
        return list(dict.fromkeys(key.lower() for key, _ in self._pairs))

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self._pairs)


@dataclasses.dataclass(frozen=True)
class Response:
    """A saved response. The body lives in ``response_file_path``; read it with the helpers."""

    request_id: str
    status_code: int
    headers: Headers
    response_file_path: Path
    status: RequestStatus
    error: str | None = None
    url: str | None = None
    http_version: str | None = None
    elapsed_ms: float | None = None
    size: int | None = None
    #: The status line's reason phrase as the server sent it (any text: escape it for a terminal).
    reason_phrase: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.headers, Headers):  # a list of pairs, as before Headers existed
            object.__setattr__(self, "headers", Headers(self.headers))

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        values = self.headers.get_list(name)
        return values[0] if values else None

    def read_bytes(self) -> bytes:
        return self.response_file_path.read_bytes()

    def read_text(self, encoding: str | None = None) -> str:
        return self.read_bytes().decode(encoding or self._charset() or "utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.read_bytes())

    def _charset(self) -> str | None:
        content_type = self.header("content-type") or ""
        for part in content_type.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"')
        return None
