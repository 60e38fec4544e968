"""The ``bghttp`` command: ``commands`` (the parser and each sub-command), ``input``
(submit options into client arguments) and ``output`` (what is printed).

The console script ``bghttp`` and ``python -m bghttp.cli`` both run :func:`main`.
"""

from __future__ import annotations

from .commands import EXIT_CODES_HELP, build_parser, main, settings_from_args

__all__ = ["EXIT_CODES_HELP", "build_parser", "main", "settings_from_args"]
