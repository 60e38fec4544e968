"""What the ``bghttp`` CLI prints: text for people, one JSON document for machines,
and the download progress shown on stderr while ``wait`` polls.

Text for people passes through :func:`safe` (``quoting.terminal_safe``), the
one escaping function of the CLI: a server's reason phrase, header values,
URLs and error texts are shown with their control characters and bidi
controls escaped (``\\x1b``, ``\\u202e``). ``--json`` output and ``--body``
bytes stay exact.
"""

from __future__ import annotations

import datetime
import http
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from ..models import RequestSpec, Response, StatusRecord
from ..quoting import terminal_safe
from ..redaction import redact_url

#: Seconds between progress lines when stderr is not a terminal (a log, a CI job).
PROGRESS_LINE_INTERVAL = 1.0

#: Every text the CLI prints for people goes through this (see the module docstring).
safe = terminal_safe


def say(text: str, stream: IO[str] | None = None) -> None:
    """Print one line for people, escaped."""
    print(safe(text), file=stream or sys.stdout)


def timestamp(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.datetime.fromtimestamp(value, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover - the loop always returns


def print_json(data: Any, stream: IO[str] | None = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(data, default=str) + "\n")


def status_json(record: StatusRecord, spec: RequestSpec | None) -> dict[str, Any]:
    data = record.to_json()
    data["method"] = spec.method if spec else None
    data["url"] = redact_url(spec.url) if spec else None
    data["queue"] = spec.queue or None if spec else None
    return data


def print_status(record: StatusRecord, spec: RequestSpec | None) -> None:
    """A status record as aligned ``name  value`` lines. Request headers are never shown."""
    rows = [
        ("request_id", record.request_id),
        ("status", record.status.value),
        ("phase", record.phase.value),
        ("method", spec.method if spec else "-"),
        ("url", redact_url(spec.url) if spec else "-"),
        ("queue", spec.queue or "-" if spec else "-"),
        ("attempts", str(record.attempt_count)),
        ("retries", f"{record.retries_used}/{record.max_retries}"),
        ("last_status_code", str(record.last_status_code) if record.last_status_code is not None else "-"),
        ("last_error", record.last_error or "-"),
        ("created_at", timestamp(record.created_at)),
        ("updated_at", timestamp(record.updated_at)),
        ("next_attempt_at", timestamp(record.next_attempt_at)),
        ("completed_at", timestamp(record.completed_at)),
    ]
    if record.metadata is not None:
        rows.append(("metadata", json.dumps(record.metadata, ensure_ascii=False, sort_keys=True)))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        say(f"{name.ljust(width)}  {value}")


def response_json(response: Response) -> dict[str, Any]:
    return {
        "request_id": response.request_id,
        "status": response.status.value,
        "status_code": response.status_code,
        "headers": [list(pair) for pair in response.headers],
        "response_file_path": str(response.response_file_path),
        "size": response.size,
        "url": response.url,
        "http_version": response.http_version,
        "elapsed_ms": response.elapsed_ms,
        "reason_phrase": response.reason_phrase,
        "error": response.error,
    }


def reason_phrase(response: Response) -> str:
    """The status line's reason phrase: the saved one if the store has it, else the standard one ('' if none)."""
    if response.reason_phrase:
        return response.reason_phrase
    try:
        return http.HTTPStatus(response.status_code).phrase
    except ValueError:
        return ""


def print_response(response: Response) -> None:
    status_line = f"{response.http_version or 'HTTP'} {response.status_code} {reason_phrase(response)}".rstrip()
    say(f"{status_line}  (request {response.status.value})")
    for name, value in response.headers:
        say(f"{name}: {value}")
    print()
    size = "?" if response.size is None else f"{response.size} bytes"
    say(f"body: {response.response_file_path} ({size})")
    if response.error:
        say(f"error: {response.error}")


def write_body(path: Path, out: IO[bytes]) -> None:
    with open(path, "rb") as body:
        while chunk := body.read(1024 * 1024):
            out.write(chunk)
    out.flush()


def print_table(rows: Iterable[tuple[StatusRecord, RequestSpec | None]]) -> None:
    header = ("ID", "STATUS", "PHASE", "ATTEMPTS", "CODE", "CREATED", "METHOD", "URL")
    lines = [header]
    for record, spec in rows:
        lines.append(
            (
                safe(record.request_id),
                record.status.value,
                record.phase.value,
                str(record.attempt_count),
                str(record.last_status_code or "-"),
                timestamp(record.created_at),
                safe(spec.method) if spec else "-",
                _shorten(safe(redact_url(spec.url)) if spec else "-", 60),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Progress:
    """Shows how much of a response a worker has streamed so far, and how fast.

    On a terminal: one line redrawn in place. Otherwise: a line at most every
    PROGRESS_LINE_INTERVAL seconds, only when the size changed.

    The rate counts only bytes this process saw arrive: from the first size it
    observed (a download may be half done when ``wait`` starts, or not started
    for minutes) to the latest. A file that shrinks (a new attempt) starts the
    measurement again.
    """

    def __init__(self, request_id: str, stream: IO[str] | None = None) -> None:
        self.request_id = request_id
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self._last_size = -1
        self._last_line = 0.0
        self._baseline: tuple[float, int] | None = None  # (when, size) of the first size seen
        self._drawn = False

    def update(self, phase: str, size: int | None) -> None:
        now = time.monotonic()
        if size is None or size == self._last_size:
            return
        if self._baseline is None or size < self._baseline[1]:
            self._baseline = (now, size)
        if not self.interactive and now - self._last_line < PROGRESS_LINE_INTERVAL:
            return
        since, first_size = self._baseline
        rate = f"{human_bytes((size - first_size) / (now - since))}/s" if now > since else "rate not known yet"
        text = f"{self.request_id}: {phase}, {human_bytes(size)} received ({rate})"
        if self.interactive:
            self.stream.write("\r\033[K" + text)
            self._drawn = True
        else:
            self.stream.write(f"{text} [{size} bytes]\n")
        self.stream.flush()
        self._last_size = size
        self._last_line = now

    def clear_line(self) -> None:
        """Make room for another line on stderr: the line drawn in place goes, and is drawn again next time."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self._drawn = False
            self._last_size = -1

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
