"""Structured logging through the standard library logger ``bghttp``, secrets redacted.

Events are short snake_case names with fields (``request_completed``,
``attempt_failed`` …). Any field named like a secret header, and any header
list passed under ``headers``, has its secret values replaced by ``[REDACTED]``.

bghttp's loggers (:func:`get_logger`) are structlog loggers with processors of
their own, never structlog's global configuration: in a host application (a
library client, local mode) each event becomes one record of the stdlib logger
``bghttp``, already redacted, with a ``key=value`` message, and the host's
handlers decide where it goes (Python's last-resort handler prints warnings to
stderr when there are none). bghttp never writes to stdout and never touches
the root logger or structlog's configuration unless asked.

:func:`configure_logging` is that asking: the processes bghttp runs itself
(``bghttp`` commands, ``bghttp worker``, ``dramatiq bghttp.actors``) call it to
render every record, Dramatiq's and pika's too, as JSON lines or console text on
stderr.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import logging.handlers
import os
import queue
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from .quoting import terminal_safe
from .redaction import REDACTED, SECRET_HEADERS, redact_headers

_configured = False
_writer: _OneWriter | None = None


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key == "headers" and isinstance(event[key], (list, tuple)):
            event[key] = redact_headers(event[key])
        elif key.replace("_", "-").lower() in SECRET_HEADERS:
            event[key] = REDACTED
    return event


def _terminal_safe(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Console logs: a server's text (an error, a URL) in a field is shown escaped, never raw on the terminal."""
    for key, value in event.items():
        if isinstance(value, str):
            lines = value.split("\n") if key in ("exception", "stack") else [value]  # a traceback keeps its lines
            event[key] = "\n".join(terminal_safe(line) for line in lines)
    return event


#: The stdlib logger every bghttp event goes to.
LOGGER_NAME = "bghttp"
#: The record attribute carrying the event's fields, for configure_logging's renderer.
_EVENT_ATTRIBUTE = "bghttp_event"


def _to_stdlib_record(_: Any, __: str, event: MutableMapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Last processor: a ``key=value`` message for any handler, the fields for ours."""
    fields = [f"{key}={_text(value)}" for key, value in event.items() if key not in ("event", "level", "timestamp")]
    message = " ".join([str(event.get("event", "")), *fields])
    return (message,), {"extra": {_EVENT_ATTRIBUTE: dict(event)}}


def _text(value: Any) -> str:
    """A field's value in a ``key=value`` message: bare when unambiguous, else JSON-quoted."""
    if isinstance(value, str) and value and not any(c.isspace() or c in "\"='" for c in value):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,  # the host's level for "bghttp" decides; disabled events cost little
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _redact,
    structlog.processors.format_exc_info,
    _to_stdlib_record,
]


def get_logger(**context: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger bound to ``context`` that logs through the stdlib logger ``bghttp``."""
    return structlog.stdlib.BoundLogger(logging.getLogger(LOGGER_NAME), _PROCESSORS, context)


def _event_of_record(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """ProcessorFormatter pre-chain: a bghttp record brings its fields; others get level, logger and time."""
    record = event["_record"]
    fields = getattr(record, _EVENT_ATTRIBUTE, None)
    if fields is not None:
        return {**fields, "_record": record, "_from_structlog": False}
    event["level"] = record.levelname.lower()
    event["logger"] = record.name
    return event


class _HandOff(logging.handlers.QueueHandler):
    """Hands a record to the one writer thread without taking a lock.

    The stock ``Handler.handle`` takes the handler's lock around ``emit``; with
    hundreds of in-flight attempts logging at once that lock was a measured
    contention point. ``SimpleQueue.put`` is atomic, so no lock is needed here,
    and rendering (JSON, console colours) happens on the writer thread.
    """

    def handle(self, record: logging.LogRecord) -> bool:
        if self.filter(record):
            self.emit(record)
            return True
        return False

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Merge the arguments now (they may change after the call); keep exc_info for the writer to render.
        record.msg = record.getMessage()
        record.args = None
        return record


class _OneWriter:
    """A queue and the one thread that renders its records to stderr (restarted in a forked child)."""

    def __init__(self, handler: logging.Handler) -> None:
        self.handler = handler
        self.queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self.hand_off = _HandOff(self.queue)
        self.listener = logging.handlers.QueueListener(self.queue, handler)
        self.listener.start()
        _stop_writer_at_exit(self)

    def restart_after_fork(self) -> None:
        # The writer thread does not exist in a forked child (Dramatiq forks its worker processes):
        # records queued before the fork belong to the parent, which writes them.
        self.queue = queue.SimpleQueue()
        self.hand_off.queue = self.queue
        self.listener = logging.handlers.QueueListener(self.queue, self.handler)
        self.listener.start()
        _stop_writer_at_exit(self)

    def stop(self) -> None:
        """Write what is queued and stop the thread (at exit, so no line is lost)."""
        if self.listener._thread is not None:
            self.listener.stop()
        # The stream may be gone already (closed by a test harness or the host); nothing left to write to.
        with contextlib.suppress(ValueError, OSError):
            self.handler.flush()


def _restart_writer_after_fork() -> None:
    if _writer is not None:
        _writer.restart_after_fork()


def _stop_writer() -> None:
    if _writer is not None:
        _writer.stop()


def _stop_writer_at_exit(writer: _OneWriter) -> None:
    """Write the queued records when the process ends.

    At interpreter exit (``atexit``); and at the end of a ``multiprocessing``
    child (Dramatiq's worker processes), which leaves by ``os._exit`` and runs
    only multiprocessing's finalizers. A child forked by multiprocessing clears
    the finalizers it inherits, so the finalizer is registered again there.
    """
    import multiprocessing.util

    atexit.register(_stop_writer)
    _finalize_at_process_end(writer)
    multiprocessing.util.register_after_fork(writer, _finalize_at_process_end)


def _finalize_at_process_end(_: _OneWriter) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(None, _stop_writer, exitpriority=-1000)


os.register_at_fork(after_in_child=_restart_writer_after_fork)


def configure_logging(log_format: str = "auto", level: str = "INFO", *, force: bool = False) -> None:
    """Render every log record of this process on stderr, as JSON lines or console text.

    Only for processes bghttp runs itself (the CLI, workers): it replaces the
    root logger's handlers. A library never calls it. Safe to call more than once.
    Records are rendered and written by one writer thread (off the attempts' hot
    path); it writes what is queued before the process exits.
    """
    global _configured, _writer
    if _configured and not force:
        return
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *([] if use_json else [_terminal_safe]),  # JSON escapes controls itself
                renderer,
            ],
            foreign_pre_chain=[
                _event_of_record,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _redact,  # Dramatiq's and pika's fields too
                structlog.processors.format_exc_info,
            ],
        )
    )
    numeric_level = logging.getLevelName(level.upper())
    if _writer is not None:
        _writer.stop()
    _writer = _OneWriter(handler)
    root = logging.getLogger()
    root.handlers[:] = [_writer.hand_off]
    root.setLevel(max(numeric_level, logging.INFO))
    logging.getLogger(LOGGER_NAME).setLevel(numeric_level)
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    _configured = True
