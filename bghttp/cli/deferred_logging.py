"""Logging for the reading commands, set up at their first log record, if one ever comes.

``bghttp ls``/``status``/``response``/``wait`` log only warnings, and seldom any.
:func:`bghttp.logs.configure_logging` loads structlog and its renderers (and
with them asyncio), which would cost those commands a good part of their start
(issue 21, item 17). This handler stands in its place with the same levels;
the first record it gets sets up the real logging, which then prints that
record exactly as it would have been printed.
"""

from __future__ import annotations

import logging

#: ``bghttp.logs.LOGGER_NAME``, not imported from there: that module loads structlog.
LOGGER_NAME = "bghttp"


class _ConfigureOnFirstRecord(logging.Handler):
    def __init__(self, log_format: str, level: str) -> None:
        super().__init__()
        self.log_format = log_format
        self.log_level = level

    def emit(self, record: logging.LogRecord) -> None:
        from ..logs import configure_logging

        configure_logging(self.log_format, self.log_level)  # replaces the root's handlers, this one too
        for handler in logging.getLogger().handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def configure_logging_on_first_record(log_format: str, level: str) -> None:
    """What ``configure_logging(log_format, level)`` does, but structlog loads only when something logs."""
    numeric_level = logging.getLevelName(level.upper())
    root = logging.getLogger()
    root.handlers[:] = [_ConfigureOnFirstRecord(log_format, level)]
    root.setLevel(max(numeric_level, logging.INFO))  # as configure_logging sets them
    logging.getLogger(LOGGER_NAME).setLevel(numeric_level)
    logging.getLogger("pika").setLevel(logging.WARNING)
