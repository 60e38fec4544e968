"""What the dashboard's pages show, read from the store and the broker; no web framework here.

Listing is built for stores of 100,000 requests and more: the requests page
takes the IDs newest first from one ``scandir`` of the request files (their
mtime is their creation time: a request file is never rewritten) and reads the
status record and request file of only the rows it shows, plus those a filter
skips on the way. The overview reads the status records changed within its
window (their status logs' mtimes say which), at most ``OVERVIEW_RECORDS``.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import datetime
import os
import re
import stat
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..models import Phase, RequestSpec, RequestStatus, StatusRecord
from ..redaction import redact_headers, redact_url
from ..store import FileStore, is_valid_request_id
from ..store_files import open_nofollow

#: Rows on one requests page.
PAGE_SIZE = 100
#: Bytes of a response body shown on a request's page.
PREVIEW_BYTES = 16 * 1024
#: The fields of a response record the request's page shows.
RESPONSE_FIELDS = ("status_code", "reason", "url", "http_version", "elapsed_ms", "size", "headers")
#: The overview reads at most this many of the most recently changed status records.
OVERVIEW_RECORDS = 5000
#: The overview's window and its number of time buckets.
OVERVIEW_WINDOW_SECONDS = 3600.0
OVERVIEW_BUCKETS = 12

# The unit is required: a bare "2026" could be a year or 2026 seconds, and is refused, not guessed.
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BadFilter(ValueError):
    """A filter value the requests page cannot use; its message is shown on the page."""


@dataclasses.dataclass(frozen=True)
class RequestRow:
    record: StatusRecord
    method: str
    url: str
    host: str


@dataclasses.dataclass(frozen=True)
class RequestFilter:
    status: RequestStatus | None = None
    host: str | None = None
    since: float | None = None  # created at or after (epoch seconds)
    until: float | None = None  # created before
    search: str | None = None  # a part of the request ID

    @classmethod
    def parse(cls, params: dict[str, str], now: float) -> RequestFilter:
        """The filter given by a query string's values; BadFilter naming the value that is not one."""
        status = params.get("status") or None
        if status is not None and status not in {s.value for s in RequestStatus}:
            raise BadFilter(f"status must be one of {', '.join(s.value for s in RequestStatus)}")
        search = (params.get("q") or "").strip() or None
        if search is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", search):
            raise BadFilter("an ID holds 1-128 of A-Z a-z 0-9 . _ -")
        host = (params.get("host") or "").strip().lower().rstrip(".") or None
        return cls(
            status=None if status is None else RequestStatus(status),
            host=host,
            since=parse_time(params.get("since"), now, "since"),
            until=parse_time(params.get("until"), now, "until"),
            search=search,
        )


@dataclasses.dataclass(frozen=True)
class RequestPage:
    rows: list[RequestRow]
    page: int
    has_next: bool
    scanned: int  # requests looked at (status records read)
    candidates: int  # requests in the store within the time filter


@dataclasses.dataclass(frozen=True)
class BodyPreview:
    text: str
    shown: int
    size: int

    @property
    def cut(self) -> bool:
        return self.shown < self.size


@dataclasses.dataclass(frozen=True)
class RequestDetail:
    record: StatusRecord
    spec: RequestSpec | None
    spec_error: str | None
    request_headers: list[tuple[str, str]]
    response: dict[str, Any] | None
    response_headers: list[tuple[str, str]]
    preview: BodyPreview | None
    files: dict[str, Path]


@dataclasses.dataclass(frozen=True)
class Bucket:
    start: float
    completed: int
    failed: int


@dataclasses.dataclass(frozen=True)
class Overview:
    window_seconds: float
    buckets: list[Bucket]
    failures_by_host: list[tuple[str, int]]
    by_status: dict[str, int]
    running: int
    records_read: int
    capped: bool


def parse_time(raw: str | None, now: float, name: str) -> float | None:
    """An age (``30m``, ``2h``, ``7d``: that long ago) or an ISO 8601 time (UTC unless it says)."""
    raw = (raw or "").strip()
    if not raw:
        return None
    match = _DURATION.fullmatch(raw.lower())
    if match:
        return now - float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    try:
        when = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise BadFilter(f"{name}: give an age (30m, 2h, 7d) or a time (2026-12-04T10:00)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def url_host(url: str) -> str:
    try:
        return (urllib.parse.urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""


class RequestIndex:
    """Every request's creation time, kept sorted between pages: each page lists the request
    files' names (one ``listdir``) and stats only the new ones. (A request replaced under the
    same ID keeps its first time here; its row shows the new record all the same.)"""

    #: More new requests than this are sorted in at once, fewer one by one.
    RESORT_AFTER = 1000

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self._created: dict[str, float] = {}
        self._ascending: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def newest_first(self) -> Iterator[tuple[float, str]]:
        """``(created, ID)`` of every request, newest first (a snapshot: iterate it freely)."""
        with self._lock:
            current = set(self.store.request_file_ids())
            gone = self._created.keys() - current
            new = current.difference(self._created)
            if gone:
                for request_id in gone:
                    del self._created[request_id]
                self._ascending = [pair for pair in self._ascending if pair[1] not in gone]
            if new:
                times = self.store.created_times(new)
                self._created.update(times)
                if len(times) > self.RESORT_AFTER:
                    self._ascending = sorted(self._ascending + [(t, rid) for rid, t in times.items()])
                else:
                    self._ascending = self._ascending.copy()  # a snapshot handed out stays as it was
                    for request_id, created in times.items():
                        bisect.insort(self._ascending, (created, request_id))
            snapshot = self._ascending
        return reversed(snapshot)

    def __len__(self) -> int:
        return len(self._created)


class DashboardQueries:
    """Reads for the dashboard's pages from one store."""

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.index = RequestIndex(store)

    def newest_first(self) -> Iterator[tuple[float, str]]:
        return self.index.newest_first()

    # ------------------------------------------------------------- reading one
    def _status(self, request_id: str) -> StatusRecord | None:
        try:
            return self.store.read_status(request_id)
        except (StoreError, ValueError, TypeError, KeyError):
            return None  # removed while listed, or a record this version cannot read

    def _spec(self, request_id: str) -> tuple[RequestSpec | None, str | None]:
        try:
            return self.store.load_request(request_id), None
        except (StoreError, ValueError) as error:
            return None, str(error)

    def _row(self, record: StatusRecord) -> RequestRow:
        spec, _ = self._spec(record.request_id)
        url = redact_url(spec.url) if spec else ""
        return RequestRow(record, spec.method if spec else "", url, url_host(url))

    # ---------------------------------------------------------------- listing
    def list_requests(self, wanted: RequestFilter, page: int = 1, page_size: int = PAGE_SIZE) -> RequestPage:
        """One page of requests, newest first (by creation), that pass ``wanted``."""
        page = max(1, page)
        listing = self.newest_first()
        if wanted.since is None and wanted.until is None and wanted.search is None:
            candidates, count = listing, len(self.index)
        else:
            chosen = [
                (created, request_id)
                for created, request_id in listing
                if (wanted.since is None or created >= wanted.since)
                and (wanted.until is None or created < wanted.until)
                and (wanted.search is None or wanted.search in request_id)
            ]
            candidates, count = iter(chosen), len(chosen)
        skip, scanned = (page - 1) * page_size, 0
        if skip >= count:  # past the last page (?page=10**9 must not read the whole store)
            return RequestPage([], page, False, 0, count)
        rows: list[RequestRow] = []
        for row in self._matching(candidates, wanted):
            scanned += 1
            if skip:
                skip -= 1
                continue
            if len(rows) == page_size:
                return RequestPage(rows, page, True, scanned, count)
            rows.append(row)
        return RequestPage(rows, page, False, scanned, count)

    def _matching(self, listing: Iterator[tuple[float, str]], wanted: RequestFilter) -> Iterator[RequestRow]:
        for _, request_id in listing:
            record = self._status(request_id)
            if record is None or (wanted.status is not None and record.status is not wanted.status):
                continue
            row = self._row(record)
            if wanted.host is not None and row.host.lower() != wanted.host:
                continue
            yield row

    # ---------------------------------------------------------------- one
    def request_detail(self, request_id: str) -> RequestDetail | None:
        """Everything the request's page shows; None for an unknown (or not an) ID."""
        if not is_valid_request_id(request_id):
            return None
        record = self._status(request_id)
        if record is None:
            return None
        spec, spec_error = self._spec(request_id)
        try:
            response = self.store.read_response_metadata(request_id)
        except StoreError:
            response = None
        response_headers: list[tuple[str, str]] = []
        if response is not None:
            # A record holds what its writer put in it (an older version, another Store): the page
            # reads every field it shows, so each one it lacks is None ("-") rather than an error.
            response = {**dict.fromkeys(RESPONSE_FIELDS), **response}
            with contextlib.suppress(TypeError, ValueError):
                response_headers = redact_headers((str(k), str(v)) for k, v in response.get("headers") or [])
        return RequestDetail(
            record=record,
            spec=spec,
            spec_error=spec_error,
            # A request's secret headers (Authorization, API keys) never reach the page.
            request_headers=redact_headers(spec.headers) if spec else [],
            response=response,
            response_headers=response_headers,
            preview=self._preview(request_id) if response is not None else None,
            files=self.store.files_of(request_id),
        )

    def _preview(self, request_id: str) -> BodyPreview | None:
        """The first ``PREVIEW_BYTES`` of the saved response body, as text (never as markup)."""
        # As the store reads its files: no symlink followed (it could point at any file this process may
        # read), and only a regular file (an open of a FIFO would wait for a writer, holding a thread).
        try:
            fd = open_nofollow(self.store.response_file_path(request_id), os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            with os.fdopen(fd, "rb") as body:
                info = os.fstat(body.fileno())
                if not stat.S_ISREG(info.st_mode):
                    return None
                head = body.read(PREVIEW_BYTES)
        except OSError:
            return None
        return BodyPreview(head.decode("utf-8", errors="replace"), len(head), max(info.st_size, len(head)))

    # ---------------------------------------------------------------- overview
    def overview(self, now: float | None = None) -> Overview:
        """Completions and failures per time bucket, failures by target host, counts by status:
        from the status records changed within the window (the newest ``OVERVIEW_RECORDS``)."""
        now = time.time() if now is None else now
        start = now - OVERVIEW_WINDOW_SECONDS
        step = OVERVIEW_WINDOW_SECONDS / OVERVIEW_BUCKETS
        changed = [rid for mtime, rid in self.store.status_change_times() if mtime >= start]
        capped = len(changed) > OVERVIEW_RECORDS
        completed, failed = [0] * OVERVIEW_BUCKETS, [0] * OVERVIEW_BUCKETS
        by_status: Counter[str] = Counter()
        by_host: Counter[str] = Counter()
        running = 0
        for request_id in changed[:OVERVIEW_RECORDS]:
            record = self._status(request_id)
            if record is None:
                continue
            by_status[record.status.value] += 1
            running += record.phase is Phase.RUNNING
            ended = record.completed_at
            if ended is None or not start <= ended <= now:
                continue
            index = min(int((ended - start) / step), OVERVIEW_BUCKETS - 1)
            if record.status is RequestStatus.COMPLETED:
                completed[index] += 1
            elif record.status is RequestStatus.FAILED:
                failed[index] += 1
                by_host[self._row(record).host or "(unknown)"] += 1
        buckets = [Bucket(start + i * step, completed[i], failed[i]) for i in range(OVERVIEW_BUCKETS)]
        return Overview(
            window_seconds=OVERVIEW_WINDOW_SECONDS,
            buckets=buckets,
            failures_by_host=by_host.most_common(20),
            by_status=dict(by_status),
            running=running,
            records_read=min(len(changed), OVERVIEW_RECORDS),
            capped=capped,
        )

    # ---------------------------------------------------------------- actions
    def failed_since(self, since: float, until: float | None = None) -> list[str]:
        """IDs of the requests that ended failed at or after ``since`` (and at or before ``until``), oldest first."""
        chosen: list[tuple[float, str]] = []
        for mtime, request_id in self.store.status_change_times():
            if mtime < since:
                break  # newest first: every later one changed before ``since``
            record = self._status(request_id)
            if record is None or record.status is not RequestStatus.FAILED:
                continue
            ended = record.completed_at or 0
            if since <= ended and (until is None or ended <= until):
                chosen.append((ended, request_id))
        return [request_id for _, request_id in sorted(chosen)]
