"""Structured logging: structlog configured once, JSON lines or console, secrets redacted.

Events are short snake_case names with fields (``request_completed``,
``attempt_failed`` …). Any field named like a secret header, and any header
list passed under ``headers``, has its secret values replaced by ``[REDACTED]``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from .redaction import REDACTED, SECRET_HEADERS, redact_headers

_configured = False


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key == "headers" and isinstance(event[key], (list, tuple)):
            event[key] = redact_headers(event[key])
        elif key.replace("_", "-").lower() in SECRET_HEADERS:
            event[key] = REDACTED
    return event


def configure_logging(log_format: str = "auto", level: str = "INFO", *, force: bool = False) -> None:
    """Set up structlog (and route stdlib logging through it). Safe to call more than once."""
    global _configured
    if _configured and not force:
        return
    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Dramatiq and pika log through the standard library: render them the same way.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(logging.getLevelName(level.upper()), logging.INFO))
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    _configured = True


def get_logger(**context: Any) -> Any:
    return structlog.get_logger("bghttp").bind(**context)
