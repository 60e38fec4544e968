"""``python -m bghttp.cli``: the same as the ``bghttp`` console script."""

from __future__ import annotations

from .commands import console_main

console_main()
